//! Collections: a folder of images of different sizes, grey and colour (the usual training
//! set: fields of view of several acquisitions), trained on at once and predicted image by
//! image from the command line.

use std::path::Path;

use unet_studio::data::{load_label_stack, load_stack};

mod common;
use common::engine::{sample_dir, tempdir};
use common::run_cli;

/// Three crops of the bundled EM slices, each its own size, the second tinted into colour,
/// with their binary labels, as `images/` and `labels/` folders (PNG, as DSB2018 ships).
fn collection(dir: &Path) {
    let (images, labels) = (dir.join("images"), dir.join("labels"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&labels).unwrap();
    for (s, (w, h)) in [(96u32, 80u32), (128, 64), (72, 100)]
        .into_iter()
        .enumerate()
    {
        let name = format!("slice{s:02}.png");
        let img = load_stack(&sample_dir().join("images").join(&name)).unwrap();
        let lab = load_label_stack(&sample_dir().join("labels").join(&name)).unwrap();
        let at = |x: u32, y: u32| {
            img.all_planes().unwrap()[0].at(x as usize + 50, y as usize + 60) as u8
        };
        let out = images.join(format!("field{s}.png"));
        if s == 1 {
            image::RgbImage::from_fn(w, h, |x, y| {
                let v = at(x, y);
                image::Rgb([v, v / 2 + 40, 255 - v])
            })
            .save(&out)
            .unwrap();
        } else {
            image::GrayImage::from_fn(w, h, |x, y| image::Luma([at(x, y)]))
                .save(&out)
                .unwrap();
        }
        image::GrayImage::from_fn(w, h, |x, y| {
            image::Luma([lab[0].at(x as usize + 50, y as usize + 60) as u8])
        })
        .save(labels.join(format!("field{s}.png")))
        .unwrap();
    }
}

#[test]
fn a_collection_of_sizes_and_colours_trains_and_predicts_image_by_image() {
    let dir = tempdir("collection");
    collection(&dir);
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let (images, labels, model) = (dir.join("images"), dir.join("labels"), dir.join("model"));
    let binary = ["--label-encoding", "binary"];
    let (ok, err) = common::quick_train(&images, &labels, &model, &binary);
    assert!(ok, "{err}");
    assert!(err.contains("a collection of 3 images"), "{err}");
    // The grey fields join the colour one as three equal channels.
    let unet = unet_studio::ml::load_checkpoint(&model).unwrap().meta.unet;
    assert_eq!(unet.in_channels, 3);
    let (out, probs) = (dir.join("masks"), dir.join("probs"));
    let probs_s = s(&probs);
    let extra = ["--probabilities", &probs_s, "--tta", "1"];
    let (ok, err) = common::quick_predict(&model, &images, &out, &extra);
    assert!(ok, "{err}");
    for (f, (w, h)) in [(0, (96, 80)), (1, (128, 64)), (2, (72, 100))] {
        let m = load_label_stack(&out.join(format!("field{f}.tif"))).unwrap();
        assert_eq!((m.len(), m[0].width, m[0].height), (1, w, h), "field{f}");
        assert!(m[0].data.iter().all(|&c| c == 1 || c == 2));
        // Each image's probabilities: one channel per class, its size, summing to one.
        let p = unet_studio::data::load_stack(&probs.join(format!("field{f}.probabilities.tif")))
            .unwrap();
        assert_eq!(
            (p.channels, p.slices(), p.width, p.height),
            (2, 1, w, h),
            "field{f}"
        );
        let sum = p.image(0).unwrap()[0].at(5, 5) + p.image(0).unwrap()[1].at(5, 5);
        assert!((sum - 1.0).abs() < 1e-4, "{sum}");
    }
    // One mask file, probabilities or the input folder itself: refused before any work.
    let (model_s, images_s, out_s) = (s(&model), s(&images), s(&out));
    for (extra, want) in [
        (vec!["--output", "m.tif"], "must be a folder"),
        (
            vec!["--output", &out_s, "--probabilities", "p.tif"],
            "--probabilities must be a folder for their probabilities",
        ),
        (
            vec!["--output", &out_s, "--probabilities", &images_s],
            "the probabilities would be read as images",
        ),
        (vec!["--output", &images_s], "is the input folder"),
    ] {
        let mut args = vec!["predict", "--model", &model_s, "--input", &images_s];
        args.extend(extra.iter().copied());
        let (ok, err) = run_cli(&args);
        assert!(!ok && err.contains(want), "{args:?}: {err}");
    }
    // Scored image by image against their truth, pooled (the challenge's measures).
    let (ok, err) = run_cli(&[
        "eval",
        "--model",
        &model_s,
        "--images",
        &images_s,
        "--truth",
        &s(&labels),
        "--label-encoding",
        "binary",
        "--tta",
        "1",
        "--device",
        "cpu",
    ]);
    assert!(ok, "{err}");
    // Labels that do not match the images file by file are named.
    std::fs::remove_file(labels.join("field2.png")).unwrap();
    let (ok, err) = common::quick_train(&images, &labels, &dir.join("m2"), &binary);
    assert!(
        !ok && err.contains("2 label files for a collection of 3 images"),
        "{err}"
    );
}
