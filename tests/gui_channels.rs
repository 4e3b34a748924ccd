//! A 2-channel ZCYX stack in the app: both channels shown as a composite, a channel hidden,
//! Z stepped, labels painted, a 2-channel network trained and its prediction exported with
//! the stack's pixel size.

use std::path::{Path, PathBuf};

use eframe::egui;
use egui_kittest::kittest::Queryable as _;
use unet_studio::app::OpenRequest;
use unet_studio::data::{PixelSize, TiffAxes, load_stack, write_f32_tiff};

mod common;
use common::{harness_for, paint_at};

/// Three slices of EM data and their inverted copy as a second channel (ImageJ ZCYX), with a
/// pixel size of 0.2 µm and a Z step of 0.5 µm.
fn two_channel_stack(dir: &Path) -> PathBuf {
    let sample = common::engine::sample_dir();
    let mut planes = Vec::new();
    for s in 0..3 {
        let img = load_stack(&sample.join("images").join(format!("slice{s:02}.png"))).unwrap();
        let crop = img.all_planes().unwrap()[0].crop_mirrored(100, 100, 160, 128);
        let inverted = crop.map(|v| 255.0 - v);
        planes.push(crop);
        planes.push(inverted);
    }
    let path = dir.join("two.tif");
    let axes = TiffAxes {
        frames: 1,
        pixel_size: Some(PixelSize {
            x: 0.2,
            y: 0.2,
            z: Some(0.5),
            unit: "µm".into(),
        }),
    };
    write_f32_tiff(&path, &planes, 2, &axes).unwrap();
    path
}

#[test]
fn a_two_channel_stack_is_shown_painted_trained_and_exported_with_its_scale() {
    let dir = common::engine::tempdir("gui-channels");
    let stack = two_channel_stack(&dir);
    let mut h = harness_for(
        OpenRequest {
            images: stack.clone(),
            ..Default::default()
        },
        dir.join("config"),
    );
    h.state_mut().finish_jobs();
    h.run_steps(2);
    {
        let app = h.state();
        let doc = app.doc.as_ref().expect("the stack opened");
        assert_eq!((doc.stack.channels, doc.slices()), (2, 3));
        assert!(
            app.status.contains("2 channels x 3 slices"),
            "{}",
            app.status
        );
        assert!(app.status.contains("0.2 x 0.2 µm"), "{}", app.status);
        // Fiji's composite: red and green, both shown.
        let shown: Vec<([u8; 3], bool)> = doc
            .display
            .channels
            .iter()
            .map(|c| (c.color, c.visible))
            .collect();
        assert_eq!(shown, [([255, 0, 0], true), ([0, 255, 0], true)]);
    }
    // Hide channel 2; step to Z slice 1.
    h.get_by_label("channel 2").click();
    h.run_steps(2);
    assert!(!h.state().doc.as_ref().unwrap().display.channels[1].visible);
    h.key_press(egui::Key::ArrowRight);
    h.run_steps(2);
    assert_eq!(h.state().view.slice, 1);
    // Paint both classes on slice 1; a new network reads both channels.
    h.state_mut().active_class = 1;
    paint_at(&mut h, 40.5, 30.5);
    h.state_mut().active_class = 2;
    paint_at(&mut h, 90.5, 80.5);
    let painted: usize = h.state().doc.as_ref().unwrap().labels[1]
        .data
        .iter()
        .filter(|&&v| v > 0)
        .count();
    assert!(painted > 0, "the strokes landed on slice 1");
    let _ = h.get_by_label("a new network reads channel(s)");
    h.state_mut().models.iterations = 3;
    h.get_by_label("Train").click();
    h.run_steps(2);
    h.state_mut().finish_jobs();
    h.run_steps(3);
    h.state_mut().finish_jobs();
    let app = h.state();
    assert!(app.error.is_none(), "{:?}", app.error);
    let unet = &app.models.model.as_ref().expect("a trained model").unet;
    assert_eq!(
        (unet.in_channels, unet.input_channel_list()),
        (2, vec![0, 1])
    );
    // Predict the stack and export the mask: the export keeps the pixel size.
    h.state_mut().predict_stack();
    h.state_mut().finish_jobs();
    let out = dir.join("mask.tif");
    h.state_mut()
        .export(unet_studio::app::ExportKind::MaskClasses, out.clone());
    h.state_mut().finish_jobs();
    assert!(
        h.state().status.starts_with("exported"),
        "{}",
        h.state().status
    );
    let mask = load_stack(&out).unwrap();
    assert_eq!((mask.channels, mask.slices()), (1, 3));
    let scale = mask.pixel_size.expect("the export keeps the pixel size");
    assert_eq!(
        (scale.x, scale.z, scale.unit.as_str()),
        (0.2, Some(0.5), "µm")
    );
}

/// A folder of a grey image and a colour one of other sizes (crops of the EM sample, the
/// colour one an RGB PNG): a collection.
fn collection_folder(dir: &Path) -> PathBuf {
    let sample = common::engine::sample_dir();
    let folder = dir.join("fields");
    std::fs::create_dir_all(&folder).unwrap();
    let img = load_stack(&sample.join("images/slice00.png")).unwrap();
    let grey = img.all_planes().unwrap()[0].crop_mirrored(0, 0, 120, 96);
    image::GrayImage::from_fn(120, 96, |x, y| {
        image::Luma([grey.at(x as usize, y as usize) as u8])
    })
    .save(folder.join("a.png"))
    .unwrap();
    let colour = img.all_planes().unwrap()[0].crop_mirrored(200, 150, 100, 140);
    image::RgbImage::from_fn(100, 140, |x, y| {
        let v = colour.at(x as usize, y as usize) as u8;
        image::Rgb([v, v / 2, 255 - v])
    })
    .save(folder.join("b.png"))
    .unwrap();
    folder
}

#[test]
fn a_collection_is_browsed_labelled_image_by_image_trained_on_all_and_reopened() {
    let dir = common::engine::tempdir("gui-collection");
    let folder = collection_folder(&dir);
    let open = || OpenRequest {
        images: folder.clone(),
        ..Default::default()
    };
    let mut h = harness_for(open(), dir.join("config"));
    h.state_mut().finish_jobs();
    h.run_steps(2);
    {
        let app = h.state();
        let (c, index) = app
            .collection
            .as_ref()
            .expect("a folder of sizes is a collection");
        assert_eq!((c.files.len(), *index, c.channels), (2, 0, 3));
        let doc = app.doc.as_ref().unwrap();
        // The grey image joins the colour one as three equal channels.
        assert_eq!(
            (doc.stack.width, doc.stack.height, doc.stack.channels),
            (120, 96, 3)
        );
        // Its labels are kept in the collection's folder, not beside the images.
        assert!(
            doc.label_path
                .starts_with(folder.join("labels.unet.images"))
        );
        assert_eq!(doc.model_dir(), folder.join("labels.unet.model"));
        assert!(app.status.contains("image 1 of 2"), "{}", app.status);
    }
    // Paint both classes on image 1, then open image 2 from the list.
    paint_at(&mut h, 20.0, 20.0);
    h.state_mut().active_class = 2;
    paint_at(&mut h, 60.0, 60.0);
    let counts_a = h.state().doc.as_ref().unwrap().class_counts();
    assert!(counts_a[1] > 0 && counts_a[2] > 0, "{counts_a:?}");
    h.get_by_label("b.png").click();
    h.run_steps(2);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    {
        let app = h.state();
        assert_eq!(app.collection.as_ref().unwrap().1, 1);
        let doc = app.doc.as_ref().unwrap();
        assert_eq!((doc.stack.width, doc.stack.height), (100, 140));
        assert_eq!(doc.class_counts()[1..].iter().sum::<usize>(), 0);
    }
    // The folder still lists only its two images (nothing written beside them).
    let listed = unet_studio::data::io::load_collection(&folder).unwrap();
    assert_eq!(listed.len(), 2);
    h.state_mut().active_class = 1;
    paint_at(&mut h, 30.0, 100.0);
    h.state_mut().active_class = 2;
    paint_at(&mut h, 70.0, 40.0);
    let counts_b = h.state().doc.as_ref().unwrap().class_counts();
    // Train learns from both images: a new 3-channel network, saved as the collection's.
    h.state_mut().models.iterations = 3;
    h.get_by_label("Train").click();
    h.run_steps(1);
    assert!(
        h.state().status.contains("labels of 2 image(s)"),
        "{}",
        h.state().status
    );
    h.state_mut().finish_jobs();
    h.run_steps(2);
    let model = h
        .state()
        .models
        .model
        .as_ref()
        .expect("trained")
        .unet
        .clone();
    assert_eq!(model.in_channels, 3);
    let saved = unet_studio::ml::load_checkpoint(&folder.join("labels.unet.model")).unwrap();
    // The run trained on the labelled pixels of both images: its labels hash is that of the
    // two images' labels together, not of the shown one alone.
    let hash = saved.meta.labels_hash.clone().unwrap();
    assert_eq!(saved.meta.unet.in_channels, 3);
    let shown_only = unet_studio::ml::train::TrainSet {
        images: Vec::new(),
        labels: unet_studio::project::document::train_labels(
            &h.state().doc.as_ref().unwrap().labels,
        )
        .1,
        held_out: Vec::new(),
    }
    .labels_hash();
    assert_ne!(hash, shown_only);
    // Export > Masks of every image: each image predicted and its mask written, named after
    // it, at its own size; never into the collection's folder.
    let masks = dir.join("masks");
    h.state_mut().export_collection(folder.clone());
    assert!(
        h.state()
            .error
            .as_deref()
            .is_some_and(|e| e.contains("own folder")),
        "{:?}",
        h.state().error
    );
    h.state_mut().error = None;
    h.state_mut().export_collection(masks.clone());
    h.state_mut().finish_jobs();
    h.run_steps(1);
    assert!(h.state().error.is_none(), "{:?}", h.state().error);
    assert!(
        h.state().status.contains("the masks of 2 images"),
        "{}",
        h.state().status
    );
    for (name, size) in [("a.tif", (120, 96)), ("b.tif", (100, 140))] {
        let m = unet_studio::data::load_label_stack(&masks.join(name)).unwrap();
        assert_eq!(
            (m.len(), m[0].width, m[0].height),
            (1, size.0, size.1),
            "{name}"
        );
        assert!(m[0].data.iter().all(|&c| c == 1 || c == 2), "{name}");
    }
    // Back to image 1: its labels are there; quit and reopen the folder: the image list,
    // the labels of both images and the shared model come back.
    h.get_by_label("a.png").click();
    h.run_steps(2);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    assert_eq!(h.state().doc.as_ref().unwrap().class_counts(), counts_a);
    h.state_mut().flush_labels().unwrap();
    drop(h);
    let mut h = harness_for(open(), dir.join("config"));
    h.state_mut().finish_jobs();
    h.run_steps(2);
    let app = h.state();
    assert_eq!(app.collection.as_ref().unwrap().1, 0);
    assert_eq!(app.doc.as_ref().unwrap().class_counts(), counts_a);
    assert_eq!(
        app.models.model.as_ref().unwrap().iteration,
        saved.meta.iteration
    );
    let c = app.collection.as_ref().unwrap().0.clone();
    let b = c.open(1).unwrap();
    assert_eq!(b.class_counts(), counts_b);
}
