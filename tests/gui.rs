//! The desktop app driven like a person would, on software Vulkan (lavapipe): open the
//! sample, paint a stroke by dragging, undo it, change slices, check autosave, snapshot.

use std::path::{Path, PathBuf};

use eframe::egui::{self, Key, Modifiers};
use egui_kittest::Harness;
use unet_studio::app::{Document, OpenRequest, StudioApp};
use unet_studio::data::{LabelEncoding, load_label_stack};

mod common;
use common::{copy_sample, harness, harness_for};

#[test]
fn paint_a_stroke_undo_it_and_autosave() {
    let dir = copy_sample("paint");
    let mut h = harness(&dir);
    let app = h.state();
    assert!(app.renderer_ready, "the wgpu viewer pipeline is installed");
    let doc = app.doc.as_ref().expect("the sample opened");
    assert_eq!(doc.slices(), 3);
    let before = doc.labels[0].clone();
    // The sample's scribbles were imported.
    assert!(before.data.contains(&1) && before.data.contains(&2));
    let rect = app.canvas_rect;
    assert!(rect.width() > 100.0, "{rect:?}");
    // Paint class 1 with the default 3 px brush from (100, 60) to (160, 60) in image pixels.
    let a = app.image_to_screen(rect, 100.5, 60.5);
    let b = app.image_to_screen(rect, 160.5, 60.5);
    h.drag_at(a);
    h.step();
    for i in 1..=10 {
        let t = i as f32 / 10.0;
        h.hover_at(a + (b - a) * t);
        h.step();
    }
    h.drop_at(b);
    h.run_steps(3);
    let doc = h.state().doc.as_ref().unwrap();
    let after = &doc.labels[0];
    for x in [102usize, 130, 158] {
        assert_eq!(after.at(x, 60), 1, "painted at x={x}");
    }
    assert_eq!(
        after.at(130, 70),
        before.at(130, 70),
        "10 px below the 3 px brush is untouched"
    );
    let changed = after
        .data
        .iter()
        .zip(&before.data)
        .filter(|(a, b)| a != b)
        .count();
    assert!((200..=600).contains(&changed), "{changed} pixels changed");
    assert!(doc.can_undo());

    // Autosave: opening wrote nothing; the first change after importing the scribbles writes
    // the whole label file beside the images (imported labels plus the stroke).
    h.state_mut().finish_jobs();
    let label_file = dir.join("images/labels.unet.tif");
    let journal = unet_studio::data::journal::journal_path(&label_file);
    assert!(!journal.exists());
    let saved = load_label_stack(&label_file).unwrap();
    assert_eq!(saved.len(), 3);
    let current = h.state().doc.as_ref().unwrap().labels.clone();
    assert!(
        saved[0].map(|v| v as u8) == current[0],
        "the stroke is in the file"
    );

    // Undo with Ctrl+Z on another slice restores every pixel of the stroke and brings its
    // slice into view.
    h.key_press(Key::ArrowRight);
    h.run_steps(2);
    assert_eq!(h.state().view.slice, 1);
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run_steps(2);
    assert_eq!(h.state().doc.as_ref().unwrap().labels[0], before);
    assert_eq!(h.state().view.slice, 0, "undo shows the slice it changed");
    // Later changes only append their changed 64 x 64 blocks to the journal: the undone
    // 7 px wide line from x 97 to 163 at y 57..63 touches 2 blocks. Reopening replays it.
    h.state_mut().finish_jobs();
    let journal_bytes = std::fs::metadata(&journal).unwrap().len();
    assert_eq!(journal_bytes, 20 + 16 + 4 + 2 * (20 + 64 * 64));
    let reopened = Document::open(&dir.join("images"), None).unwrap();
    assert_eq!(reopened.recovered.records, 1);
    assert!(reopened.labels[0] == before);
    // Redo brings the stroke back.
    h.key_press_modifiers(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z);
    h.run_steps(2);
    assert_eq!(h.state().doc.as_ref().unwrap().labels[0].at(130, 60), 1);
    // Undo and redo were autosaved; on exit the whole label file is written and the journal
    // removed.
    h.state_mut().finish_jobs();
    assert_eq!(
        Document::open(&dir.join("images"), None)
            .unwrap()
            .recovered
            .records,
        2
    );
    h.state_mut().flush_labels().unwrap();
    assert!(!journal.exists());
    let saved = load_label_stack(&label_file).unwrap();
    assert_eq!(saved[0].at(130, 60), 1);
    assert_eq!(
        Document::open(&dir.join("images"), None).unwrap().labels,
        h.state().doc.as_ref().unwrap().labels
    );
}

#[test]
fn eraser_and_brush_size_shortcuts() {
    let dir = copy_sample("erase");
    let mut h = harness(&dir);
    h.key_press(Key::CloseBracket);
    h.key_press(Key::CloseBracket);
    h.run_steps(1);
    assert_eq!(h.state().brush_radius, 5.0);
    h.key_press(Key::E);
    h.run_steps(1);
    assert_eq!(h.state().tool, unet_studio::app::Tool::Eraser);
    // Erase around a scribble pixel of slice 0.
    let (x, y) = {
        let d = h.state().doc.as_ref().unwrap();
        let i = d.labels[0].data.iter().position(|&v| v > 0).unwrap();
        (i % d.labels[0].width, i / d.labels[0].width)
    };
    let rect = h.state().canvas_rect;
    let p = h
        .state()
        .image_to_screen(rect, x as f32 + 0.5, y as f32 + 0.5);
    h.drag_at(p);
    h.step();
    h.hover_at(p + egui::vec2(3.0, 0.0));
    h.step();
    h.drop_at(p + egui::vec2(3.0, 0.0));
    h.run_steps(2);
    assert_eq!(h.state().doc.as_ref().unwrap().labels[0].at(x, y), 0);
}

#[test]
fn main_view_snapshot() {
    let dir = copy_sample("snapshot");
    let mut h = harness(&dir);
    h.remove_cursor();
    h.run_steps(2);
    h.snapshot("main_view");
}

#[test]
fn train_from_the_button_then_predict_and_overlay() {
    use egui_kittest::kittest::Queryable as _;
    let dir = copy_sample("train");
    let mut h = harness(&dir);
    h.state_mut().models.iterations = 12;
    h.get_by_label("Train").click();
    h.run_steps(2);
    assert!(
        h.state().training(),
        "the Train button started a background job"
    );
    h.state_mut().finish_jobs();
    h.run_steps(3);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    let app = h.state();
    assert!(app.error.is_none(), "{:?}", app.error);
    assert_eq!(
        app.models.losses.len(),
        12,
        "one loss per iteration reached the UI"
    );
    let model = app.models.model.as_ref().expect("training left a model");
    // The run keeps the network of its best validation (lowest loss on the held-out strokes),
    // not the last one.
    let best = app
        .models
        .val_losses
        .iter()
        .min_by(|a, b| a[1].total_cmp(&b[1]))
        .map(|v| v[0] as u64)
        .expect("the run validated");
    assert_eq!(model.iteration, best, "{:?}", app.models.val_losses);
    // The model was saved beside the labels, atomically, and loads back.
    let saved = unet_studio::ml::load_checkpoint(&dir.join("images/labels.unet.model")).unwrap();
    assert_eq!(saved.meta.iteration, best);
    // Training ended with a prediction of the shown slice: probabilities sum to one.
    let probs = app.models.probabilities[0]
        .as_ref()
        .expect("slice 0 predicted");
    assert_eq!(probs.len(), 2);
    let s = probs[0].at(100, 100) + probs[1].at(100, 100);
    assert!((s - 1.0).abs() < 1e-4);
    // The overlays the shader computes from the probabilities: the probability of class 2
    // and the uncertainty in heat colours, the mask in the class colours by the model's
    // decision rule (as stored on disk: threshold and gap closing), each against the CPU's
    // own computation of the same pixels.
    let probs = probs.clone();
    let path = app
        .models
        .model
        .as_ref()
        .and_then(|m| m.path.clone())
        .unwrap();
    let decision = unet_studio::ml::load_checkpoint(&path)
        .unwrap()
        .meta
        .decision();
    let classes = decision.classes(&probs);
    let colours = class_colours(app);
    let entropy = unet_studio::ml::entropy(&probs);
    h.state_mut().models.overlay = unet_studio::app::Overlay::Probability;
    let drawn = overlay_pixels(&mut h);
    assert_heat(&drawn, |x, y| probs[1].at(x, y), "probability of class 2");
    h.state_mut().models.overlay = unet_studio::app::Overlay::Uncertainty;
    let drawn = overlay_pixels(&mut h);
    assert_heat(&drawn, |x, y| entropy.at(x, y) / 2f32.ln(), "uncertainty");
    h.state_mut().models.overlay = unet_studio::app::Overlay::Mask;
    let drawn = overlay_pixels(&mut h);
    let (drawn_classes, want) = (mask_of(&drawn, &colours), classes_at(&drawn, &classes));
    let wrong = drawn_classes
        .iter()
        .zip(&want)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(wrong, 0, "of {} pixels", want.len());
    assert!(classes.data.contains(&1) && classes.data.contains(&2));
    h.state_mut().models.overlay = unet_studio::app::Overlay::Probability;
    // Stop is offered only while training; Predict slice runs again on demand.
    h.get_by_label("Predict slice").click();
    h.run_steps(1);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    // No snapshot here: concurrent tests share the CPU device's generator, so the trained
    // weights (and the overlay) differ from run to run; the weight-map view is snapshotted.
    assert!(h.state().models.generation >= 2);
}

/// Steps the app until `done` holds (background events arrive between frames).
fn step_until(h: &mut Harness<'static, StudioApp>, what: &str, done: impl Fn(&StudioApp) -> bool) {
    for _ in 0..6000 {
        if done(h.state()) {
            return;
        }
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn pause_resume_and_stop_a_training_from_the_buttons() {
    use egui_kittest::kittest::Queryable as _;
    let dir = copy_sample("pause");
    let mut h = harness(&dir);
    h.state_mut().models.iterations = 100_000;
    h.get_by_label("Train").click();
    step_until(&mut h, "two iterations", |a| a.models.losses.len() >= 2);
    h.get_by_label("Pause").click();
    h.run_steps(1);
    assert!(h.state().training_paused());
    // The iteration under way when Pause was pressed may still finish; then nothing moves.
    step_until(&mut h, "the pause point", StudioApp::training_held);
    h.run_steps(2);
    let held = h.state().models.losses.len();
    std::thread::sleep(std::time::Duration::from_millis(400));
    h.run_steps(2);
    assert_eq!(
        h.state().models.losses.len(),
        held,
        "no iteration while paused"
    );
    assert!(h.state().training());
    // The progress bar says paused instead of a time left that does not pass.
    assert!(h.query_by_label_contains(", paused").is_some());
    assert!(h.query_by_label_contains(" s left").is_none());
    h.get_by_label("Resume").click();
    step_until(&mut h, "iterations after resuming", |a| {
        a.models.losses.len() > held + 1
    });
    // Stop keeps the network trained so far as a new version.
    h.get_by_label("Stop").click();
    h.run_steps(1);
    h.state_mut().finish_jobs();
    h.run_steps(1);
    let app = h.state();
    assert!(!app.training());
    assert!(app.status.starts_with("training stopped"), "{}", app.status);
    let model = app
        .models
        .model
        .as_ref()
        .expect("the stopped run's network is kept");
    assert!(model.iteration as usize >= held + 2 && model.iteration < 100_000);
    assert_eq!(app.models.history.len(), 1);
    assert_eq!(app.models.history[0].meta.iteration, model.iteration);
}

#[test]
fn weight_map_view_matches_the_engine_and_follows_w0() {
    use egui_kittest::kittest::Queryable as _;
    use unet_studio::data::encode_labels;
    use unet_studio::preprocess::{WeightMapConfig, class_weights, weight_map};
    let dir = copy_sample("weights");
    let mut h = harness(&dir);
    // Two cells (class 2) 8 px apart with background (class 1) painted between them: the
    // border term must light up the gap.
    {
        let doc = h.state_mut().doc.as_mut().unwrap();
        doc.begin_stroke();
        doc.paint_line(0, (300.0, 300.0), (300.0, 340.0), 3.0, 2, false);
        doc.paint_line(0, (310.0, 300.0), (310.0, 340.0), 3.0, 2, false);
        doc.paint_line(0, (305.0, 300.0), (305.0, 340.0), 1.5, 1, true);
        doc.end_stroke();
    }
    h.get_by_label("weight map").click();
    h.run_steps(2);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    let app = h.state();
    let (key, map) = app.models.weight_map.clone().expect("weight map computed");
    assert_eq!(key.0, 0);
    // Independent computation with the engine, from the labels the app holds.
    let doc = app.doc.as_ref().unwrap();
    let slices: Vec<_> = doc
        .labels
        .iter()
        .map(|p| encode_labels(&p.map(u32::from), LabelEncoding::Classes).unwrap())
        .collect();
    let cw = class_weights(&slices, 2);
    let expect = weight_map(&slices[0], &cw, &WeightMapConfig::default());
    assert!(map == expect, "the app's weight map equals the engine's");
    assert!(
        map.data
            .iter()
            .zip(&doc.labels[0].data)
            .all(|(w, &l)| (l == 0) == (*w == 0.0))
    );
    assert_eq!(app.models.overlay_map(0).unwrap(), map.data);
    // Changing w0 recomputes the map in the background.
    h.state_mut().models.weights.w0 = 0.0;
    h.run_steps(2);
    h.state_mut().finish_jobs();
    h.run_steps(1);
    let (_, flat) = h.state().models.weight_map.clone().unwrap();
    let no_border = weight_map(
        &slices[0],
        &cw,
        &WeightMapConfig {
            w0: 0.0,
            ..WeightMapConfig::default()
        },
    );
    assert!(flat == no_border, "w0 = 0 leaves the class weights only");
    let gap = 320 * 512 + 305;
    assert!(
        map.data[gap] > flat.data[gap] + 5.0,
        "border term between the two cells: {} vs {}",
        map.data[gap],
        flat.data[gap]
    );
    // Back to w0 = 10 for the picture of the view.
    h.state_mut().models.weights.w0 = 10.0;
    h.run_steps(1);
    h.state_mut().finish_jobs();
    h.remove_cursor();
    h.run_steps(2);
    h.snapshot("weight_map_view");
}

#[test]
fn predict_stack_then_export_every_kind_and_read_back() {
    use egui_kittest::kittest::Queryable as _;
    use unet_studio::app::ExportKind;
    use unet_studio::data::load_stack;
    let dir = copy_sample("export");
    let out = dir.join("export");
    let mut h = harness(&dir);
    // Without a prediction, mask export refuses with a clear message.
    h.state_mut()
        .export(ExportKind::MaskClasses, out.join("early.tif"));
    assert!(
        h.state()
            .error
            .as_deref()
            .unwrap_or("")
            .contains("Predict stack")
    );
    h.state_mut().error = None;
    h.state_mut().models.iterations = 6;
    h.get_by_label("Train").click();
    h.run_steps(1);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    h.get_by_label("Predict stack").click();
    h.run_steps(1);
    h.state_mut().finish_jobs();
    h.run_steps(1);
    let probs: Vec<_> = h
        .state()
        .models
        .probabilities
        .iter()
        .map(|p| p.clone().expect("every slice predicted"))
        .collect();
    assert_eq!(probs.len(), 3);
    for kind in ExportKind::ALL {
        h.state_mut().export(kind, out.join(kind.default_name()));
        h.state_mut().finish_jobs();
        assert!(h.state().error.is_none(), "{kind:?}: {:?}", h.state().error);
        assert!(
            h.state().status.starts_with("exported"),
            "{}",
            h.state().status
        );
    }
    let masks = load_label_stack(&out.join("masks.tif")).unwrap();
    let binary = load_label_stack(&out.join("masks_0-255.tif")).unwrap();
    let instances = load_label_stack(&out.join("instances.tif")).unwrap();
    // "Instance labels (16-bit)" are 16-bit even when the ids would fit in 8 bits.
    assert_eq!(
        unet_studio::data::load_stack(&out.join("instances.tif"))
            .unwrap()
            .kind,
        unet_studio::data::PixelKind::U16
    );
    // Masks by the model's decision rule (a new two-class network's: threshold and gap
    // closing, `Decision::UNTUNED`).
    let decision = h.state().models.model.as_ref().unwrap().decision;
    assert_eq!(decision, unet_studio::postprocess::Decision::UNTUNED);
    for s in 0..3 {
        let expect = decision.classes(&probs[s]);
        assert!(
            masks[s]
                .data
                .iter()
                .zip(&expect.data)
                .all(|(a, b)| *a == u32::from(*b)),
            "slice {s}"
        );
        assert!(
            binary[s]
                .data
                .iter()
                .zip(&expect.data)
                .all(|(a, b)| *a == if *b >= 2 { 255 } else { 0 })
        );
        // Instances: zero exactly where the mask is background.
        assert!(
            instances[s]
                .data
                .iter()
                .zip(&expect.data)
                .all(|(i, c)| (*i == 0) == (*c < 2))
        );
    }
    let p = load_stack(&out.join("probabilities.tif")).unwrap();
    assert_eq!((p.channels, p.slices()), (2, 3), "3 slices x 2 classes");
    assert_eq!(p.all_planes().unwrap()[3].data, probs[1][1].data);
    let labels = load_label_stack(&out.join("labels.tif")).unwrap();
    let doc = h.state().doc.as_ref().unwrap();
    assert!(
        labels[2]
            .data
            .iter()
            .zip(&doc.labels[2].data)
            .all(|(a, b)| *a == u32::from(*b))
    );
    // Python's tifffile (what Fiji users script with) reads the same files as ImageJ stacks
    // with the same values.
    let sums = |planes: &[unet_studio::data::Plane<u32>]| -> u64 {
        planes
            .iter()
            .flat_map(|p| &p.data)
            .map(|&v| u64::from(v))
            .sum()
    };
    let prob_sum: f64 = p
        .all_planes()
        .unwrap()
        .iter()
        .flat_map(|s| &s.data)
        .map(|&v| f64::from(v))
        .sum();
    // Class masks and labels carry the class colours as an ImageJ colour table.
    let red = h.state().doc.as_ref().unwrap().classes[0].color;
    check_with_tifffile(&[
        (out.join("masks.tif"), 3, sums(&masks) as f64, Some(red)),
        (out.join("masks_0-255.tif"), 3, sums(&binary) as f64, None),
        (out.join("instances.tif"), 3, sums(&instances) as f64, None),
        (out.join("labels.tif"), 3, sums(&labels) as f64, Some(red)),
        (out.join("probabilities.tif"), 6, prob_sum, None),
    ]);
    // PNG export writes one file per slice.
    h.state_mut()
        .export(ExportKind::MaskBinary, out.join("mask.png"));
    h.state_mut().finish_jobs();
    let files = h.state().last_export.clone().unwrap();
    assert_eq!(files.len(), 3);
    assert!(files.iter().all(|f| f.exists()));
}

/// Reads each `(file, images, sum of values, colour of class 1)` with Python's tifffile and
/// checks that it is an ImageJ stack of that many 512 x 512 images whose values sum to the
/// same total, with a colour table (black for 0) when a colour is given. Runs with the first
/// interpreter that can `import tifffile`: `$UNET_STUDIO_PYTHON`, `python3` on the PATH, or
/// Debian's `/usr/bin/python3` (where the `python3-tifffile` package installs it; a `python3`
/// of pyenv or a virtualenv earlier on the PATH does not see it). CI installs that package and
/// sets `UNET_STUDIO_REQUIRE_TIFFFILE=1`, which turns a missing tifffile into a failure.
fn check_with_tifffile(files: &[(PathBuf, usize, f64, Option<[u8; 3]>)]) {
    const SCRIPT: &str = r#"
import sys, json, tifffile, numpy
for path, images, total, colour in json.loads(sys.argv[1]):
    with tifffile.TiffFile(path) as t:
        assert t.is_imagej, f"{path}: no ImageJ metadata"
        meta = t.imagej_metadata
        assert meta["images"] == images, (path, meta)
        if colour is not None:
            lut = numpy.asarray(meta["LUTs"])
            lut = lut[0] if lut.ndim == 3 else lut
            assert lut.shape == (3, 256), (path, lut.shape)
            assert list(lut[:, 0]) == [0, 0, 0] and list(lut[:, 1]) == colour, (path, lut[:, :3])
            assert meta["max"] == 255, (path, meta)
        else:
            assert "LUTs" not in meta, path
        a = t.asarray()
    assert a.size == images * 512 * 512, (path, a.shape)
    got = float(a.astype(numpy.float64).sum())
    assert abs(got - total) <= 1e-4 * max(1.0, abs(total)), (path, got, total)
    print(path, a.dtype, a.shape, "ok")
"#;
    let arg: Vec<(String, usize, f64, Option<[u8; 3]>)> = files
        .iter()
        .map(|(p, n, s, c)| (p.display().to_string(), *n, *s, *c))
        .collect();
    common::run_tifffile(SCRIPT, &serde_json::to_string(&arg).unwrap());
}

/// A file dropped on the window, as the windowing integration would hand it to egui.
#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

#[test]
fn drop_a_file_to_open_it_and_help_lists_the_shortcuts() {
    use egui_kittest::kittest::Queryable as _;
    let dir = copy_sample("drop");
    let mut h = harness(&dir);
    h.key_press(Key::F1);
    h.run_steps(2);
    assert!(h.state().show_help);
    // Every shortcut of the table is in the window.
    for (keys, _) in unet_studio::app::SHORTCUTS {
        h.get_by_label(keys);
    }
    h.key_press(Key::F1);
    h.run_steps(1);
    assert!(!h.state().show_help);
    // Drop one slice: it replaces the three-slice stack.
    let one = dir.join("images/slice01.png");
    h.input_mut()
        .dropped_files
        .push(std::sync::Arc::new(Dropped(one.clone())));
    h.run_steps(2);
    h.state_mut().finish_jobs();
    h.run_steps(1);
    let doc = h.state().doc.as_ref().unwrap();
    assert_eq!(doc.slices(), 1);
    assert_eq!(doc.source, one);
}

#[test]
fn augmentation_view_shows_seeded_deformations() {
    use egui_kittest::kittest::Queryable as _;
    let dir = copy_sample("augment");
    let mut h = harness(&dir);
    h.get_by_label("Augmentation view…").click();
    h.run_steps(2);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    let app = h.state();
    let s = app
        .augment
        .sample
        .as_ref()
        .expect("a deformation was drawn");
    assert_eq!(s.field.seed, Some(1));
    assert_eq!(s.field.grid, 3);
    assert_eq!((s.image.width, s.image.height), (512, 512));
    // Labels are only moved, never mixed: the deformed label set is within the original.
    let doc = app.doc.as_ref().unwrap();
    assert!(s.labels.data.iter().all(|v| doc.labels[0].data.contains(v)));
    assert!(
        s.image.data != doc.stack.all_planes().unwrap()[0].data,
        "the image was deformed"
    );
    h.remove_cursor();
    h.run_steps(2);
    h.snapshot("augmentation_view");
    // The warped grid drawn by shaders/deform.wgsl: a pixel p is on a line exactly when its
    // source position p + d(p) is within 0.75 screen px of a multiple of the spacing. Pixels
    // clearly on a line are yellow, pixels clearly off are not.
    let full = h.render().unwrap();
    let ppp = full.width() as f32 / 1100.0;
    let app = h.state();
    let (s, r) = (app.augment.sample.as_ref().unwrap(), app.augment.image_rect);
    let (g, scale) = (app.augment.grid_spacing, r.width() / 512.0);
    let to_line = |v: f32| (v - (v / g).round() * g).abs();
    let (mut on, mut off, mut wrong) = (0, 0, 0);
    for sy in (r.min.y * ppp) as u32 + 2..(r.max.y * ppp) as u32 - 2 {
        for sx in ((r.min.x * ppp) as u32 + 2..(r.max.x * ppp) as u32 - 2).step_by(3) {
            let px = full.get_pixel(sx, sy).0;
            let yellow = px[0] > 150 && px[2] < 100 && px[0] as i32 - px[2] as i32 > 100;
            // The displacement arrows (blue, egui) lie on top: not judged.
            if px[2] as i32 > px[0] as i32 + 30 {
                continue;
            }
            let p = (
                ((sx as f32 + 0.5) / ppp - r.min.x) / scale,
                ((sy as f32 + 0.5) / ppp - r.min.y) / scale,
            );
            let (tx, ty) = (p.0 as usize, p.1 as usize);
            let q = (p.0 + s.dx.at(tx, ty), p.1 + s.dy.at(tx, ty));
            let dist = to_line(q.0).min(to_line(q.1)) * scale * ppp;
            if dist < 0.4 * ppp {
                on += 1;
                wrong += usize::from(!yellow);
            } else if dist > 1.5 * ppp {
                off += 1;
                wrong += usize::from(yellow);
            }
        }
    }
    assert!(on > 300 && off > 10_000, "{on} on, {off} off");
    assert!(
        wrong * 100 < on,
        "{wrong} of {on} on-line / {off} off-line pixels disagree"
    );
    // "New sample" draws the next seed.
    h.get_by_label("New sample").click();
    h.run_steps(2);
    h.state_mut().finish_jobs();
    h.run_steps(1);
    assert_eq!(
        h.state().augment.sample.as_ref().unwrap().field.seed,
        Some(2)
    );
    // Sigma 0 is the identity.
    h.state_mut().augment.config.sigma_px = 0.0;
    h.run_steps(2);
    h.state_mut().finish_jobs();
    h.run_steps(1);
    let app = h.state();
    let s = app.augment.sample.as_ref().unwrap();
    assert!(s.image.data == app.doc.as_ref().unwrap().stack.all_planes().unwrap()[0].data);
}

#[test]
fn lasso_and_fill_tools_from_the_keyboard() {
    let dir = copy_sample("lasso");
    let mut h = harness(&dir);
    // Lasso (L): drag a square outline in image coordinates (200, 200)-(240, 240).
    h.key_press(Key::L);
    h.run_steps(1);
    assert_eq!(h.state().tool, unet_studio::app::Tool::Lasso);
    let rect = h.state().canvas_rect;
    let corners = [
        (200.0, 200.0),
        (240.0, 200.0),
        (240.0, 240.0),
        (200.0, 240.0),
        (200.0, 200.0),
    ];
    let at =
        |h: &Harness<'static, StudioApp>, (x, y): (f32, f32)| h.state().image_to_screen(rect, x, y);
    let start = at(&h, corners[0]);
    h.drag_at(start);
    h.step();
    for w in corners.windows(2) {
        for i in 1..=8 {
            let t = i as f32 / 8.0;
            let p = (
                w[0].0 + t * (w[1].0 - w[0].0),
                w[0].1 + t * (w[1].1 - w[0].1),
            );
            h.hover_at(at(&h, p));
            h.step();
        }
    }
    h.drop_at(start);
    h.run_steps(2);
    let before_fill = {
        let l = &h.state().doc.as_ref().unwrap().labels[0];
        assert_eq!(l.at(220, 220), 1, "inside the lasso");
        assert_eq!(l.at(205, 235), 1);
        assert_eq!(l.at(250, 220), 0, "outside");
        l.clone()
    };
    let inside = before_fill.data.iter().filter(|&&v| v == 1).count();
    assert!(inside >= 38 * 38, "{inside}");
    // Fill (F) with class 2 on the lassoed square turns exactly that region to class 2.
    h.key_press(Key::F);
    h.state_mut().active_class = 2;
    h.run_steps(1);
    let p = at(&h, (220.5, 220.5));
    h.drag_at(p);
    h.step();
    h.drop_at(p);
    h.run_steps(2);
    let l = &h.state().doc.as_ref().unwrap().labels[0];
    assert_eq!(l.at(220, 220), 2);
    assert_eq!(l.at(201, 201), 2);
    assert_eq!(l.at(250, 220), 0);
    // One undo reverts the fill only.
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run_steps(2);
    assert!(h.state().doc.as_ref().unwrap().labels[0] == before_fill);
}

/// On the display's own GPU (lavapipe here, allowed for the test), a prediction leaves the
/// shown slice's probabilities in burn's buffer and the viewer copies them into its textures
/// on the GPU: nothing of them is uploaded from the CPU, and the overlays drawn from them
/// are the probabilities read back (the mask by the model's rule, gaps closed).
#[test]
fn overlays_on_the_display_gpu_are_copied_from_burns_buffer() {
    use egui_kittest::kittest::Queryable as _;
    let config = std::env::temp_dir().join(format!("unet-gui-gpu-overlay-{}", std::process::id()));
    let setup = eframe::egui_wgpu::WgpuSetup::CreateNew(eframe::egui_wgpu::WgpuSetupCreateNew {
        device_descriptor: std::sync::Arc::new(unet_studio::app::device_descriptor),
        ..eframe::egui_wgpu::WgpuSetupCreateNew::without_display_handle()
    });
    let dir = config.clone();
    let mut h = Harness::builder()
        .with_size(egui::vec2(1100.0, 760.0))
        .wgpu_setup(setup)
        .build_eframe(move |cc| {
            let rs = cc.wgpu_render_state.as_ref().expect("wgpu render state");
            let compute = unet_studio::app::shared_compute_device(rs, true);
            StudioApp::with_options(cc, Some(OpenRequest::sample()), compute, Some(dir))
        });
    h.state_mut().finish_jobs();
    h.run_steps(4);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    assert!(
        h.state().models.compute.is_gpu,
        "{}",
        h.state().models.compute.description
    );
    assert!(h.state().error.is_none(), "{:?}", h.state().error);
    assert_eq!(h.state().models.slice_on_gpu(), Some(0));
    // Predict again: the new probabilities reach the textures by a copy on the GPU only.
    h.state_mut().models.overlay = unet_studio::app::Overlay::Probability;
    h.run_steps(2);
    // A rendered frame performs what is queued (the first prediction's copy).
    h.render().unwrap();
    assert_eq!(
        h.state().gpu_copied_bytes(),
        2 * 512 * 512 * 4,
        "one copy of two planes"
    );
    // Textures of at most 200 px: each tile copies its own window of the buffer (its core and
    // a one-pixel halo), so a wrong offset would show in the pictures below.
    h.state_mut().set_texture_tile_edge(200);
    h.run_steps(2);
    h.render().unwrap();
    let tiles: u64 = unet_studio::render::tile_layout(512, 512, 200)
        .iter()
        .map(|t| u64::from((t.tex[2] - t.tex[0]) * (t.tex[3] - t.tex[1])))
        .sum();
    let (up0, copied0) = (h.state().gpu_upload_stats().1, h.state().gpu_copied_bytes());
    assert_eq!(h.state().gpu_upload_stats().0, 9);
    h.get_by_label("Predict slice").click();
    h.run_steps(1);
    h.state_mut().finish_jobs();
    let drawn = overlay_pixels(&mut h);
    let (up1, copied1) = (h.state().gpu_upload_stats().1, h.state().gpu_copied_bytes());
    let probs = h.state().models.probabilities[0].clone().unwrap();
    // What the GPU computed is the network's prediction: the CPU's, to float rounding, over
    // every tile of the slice.
    let sample_model = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/model");
    let ckpt = unet_studio::ml::load_checkpoint(&sample_model).unwrap();
    let cpu = unet_studio::ml::device::cpu_device();
    let network = ckpt.model(&cpu.device).unwrap();
    let image = unet_studio::preprocess::normalize_percentile(
        &h.state().doc.as_ref().unwrap().stack.all_planes().unwrap()[0],
    );
    let reference = unet_studio::ml::predict_probabilities(
        &network,
        &ckpt.meta.unet,
        &[image],
        h.state().models.tile_predict.unwrap(),
        &cpu.device,
        &unet_studio::ml::CancelToken::new(),
        &mut |_, _| {},
    )
    .unwrap();
    let worst = reference[1]
        .data
        .iter()
        .zip(&probs[1].data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-3, "GPU and CPU probabilities differ by {worst}");
    assert_eq!(
        copied1 - copied0,
        2 * tiles * 4,
        "two class planes copied, tile by tile"
    );
    assert_eq!(up1, up0, "nothing uploaded from the CPU");
    assert_heat(&drawn, |x, y| probs[1].at(x, y), "probability of class 2");
    // The mask by the model's rule, its gap-closing lines computed from the read-back.
    let decision = h.state().models.model.as_ref().unwrap().decision;
    assert!(decision.gap_closing.is_some());
    let classes = decision.classes(&probs);
    let colours = class_colours(h.state());
    h.state_mut().models.overlay = unet_studio::app::Overlay::Mask;
    let drawn = overlay_pixels(&mut h);
    let (got, want) = (mask_of(&drawn, &colours), classes_at(&drawn, &classes));
    let wrong = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert_eq!(wrong, 0, "of {} pixels", want.len());
    let _ = std::fs::remove_dir_all(&config);
}

#[test]
fn burn_computes_on_the_display_device() {
    use unet_studio::ml::{
        CancelToken, Preset, StartFrom, TrainConfig, TrainSet, UNetConfig, train,
    };
    let setup = eframe::egui_wgpu::WgpuSetup::CreateNew(eframe::egui_wgpu::WgpuSetupCreateNew {
        device_descriptor: std::sync::Arc::new(unet_studio::app::device_descriptor),
        ..eframe::egui_wgpu::WgpuSetupCreateNew::without_display_handle()
    });
    let shared = std::sync::Arc::new(std::sync::Mutex::new(None));
    let s2 = shared.clone();
    let dir = copy_sample("shared");
    let req = OpenRequest {
        images: dir.join("images"),
        labels: Some((dir.join("scribbles"), LabelEncoding::Classes)),
        model: None,
        ..Default::default()
    };
    let _h = Harness::builder()
        .with_size(egui::vec2(800.0, 600.0))
        .wgpu_setup(setup)
        .build_eframe(move |cc| {
            let rs = cc.wgpu_render_state.as_ref().expect("wgpu render state");
            // The app itself declines a software adapter; force it to test the sharing path.
            *s2.lock().unwrap() = Some(unet_studio::app::shared_compute_device(rs, true));
            StudioApp::new(cc, Some(req))
        });
    let compute = shared.lock().unwrap().take().unwrap();
    assert!(
        compute.is_gpu,
        "burn accepted the display's device: {:?}",
        compute.fallback_reason
    );
    assert!(compute.description.contains("shared with the display"));
    // Two training steps of the lite net on the display's device.
    let img = unet_studio::preprocess::normalize_percentile(
        &unet_studio::data::load_stack(&dir.join("images/slice00.png"))
            .unwrap()
            .all_planes()
            .unwrap()[0],
    )
    .crop_mirrored(0, 0, 96, 96);
    let raw = load_label_stack(&dir.join("scribbles/slice00.png")).unwrap()[0]
        .crop_mirrored(0, 0, 96, 96);
    let mut lab = unet_studio::data::encode_labels(&raw, LabelEncoding::Classes).unwrap();
    if lab.labelled_count() == 0 {
        lab.classes.data[48 * 96 + 48] = 1;
    }
    let set = TrainSet {
        images: vec![vec![img]],
        labels: vec![lab],
        held_out: Vec::new(),
    };
    let cfg = TrainConfig {
        iterations: 2,
        tile_out: 20,
        val_fraction: 0.0,
        val_every: 0,
        checkpoint_every: 0,
        ..TrainConfig::default()
    };
    let out = train(
        &set,
        &cfg,
        StartFrom::Scratch(UNetConfig::preset(Preset::Lite, 2)),
        &compute,
        None,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(out.losses.len(), 2);
    assert!(out.losses.iter().all(|l| l.is_finite()));
    // Training on the display's GPU follows the CPU step for step: a fine-tune of the sample
    // model (no dropout, so no device random numbers; tiles and deformations come from the
    // seed) gives the same losses, so every update reached the next step's weights.
    let mut ckpt = unet_studio::ml::load_checkpoint(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/model"),
    )
    .unwrap();
    ckpt.meta.unet.dropout = 0.0;
    let cfg = TrainConfig {
        iterations: 4,
        ..cfg
    };
    let losses = |on: &unet_studio::ml::ComputeDevice| {
        train(
            &set,
            &cfg,
            StartFrom::FineTune(Box::new(ckpt.clone())),
            on,
            None,
            &CancelToken::new(),
            &mut |_| {},
        )
        .unwrap()
        .losses
    };
    let (gpu, cpu) = (
        losses(&compute),
        losses(&unet_studio::ml::device::cpu_device()),
    );
    assert_eq!(gpu.len(), 4);
    for (g, c) in gpu.iter().zip(&cpu) {
        assert!(
            (g - c).abs() <= 1e-3 * c.abs().max(1e-3),
            "GPU {gpu:?} CPU {cpu:?}"
        );
    }
}

#[test]
fn class_names_and_contrast_persist_across_sessions() {
    let dir = copy_sample("persist");
    {
        let mut h = harness(&dir);
        let doc = h.state_mut().doc.as_mut().unwrap();
        doc.classes[0].name = "membrane".into();
        doc.classes[1].name = "cell".into();
        doc.display.min = 50.0;
        doc.display.gamma = 0.7;
        h.run_steps(2);
        h.state_mut().finish_jobs();
    }
    // A new session on the same stack.
    let h = harness(&dir);
    let doc = h.state().doc.as_ref().unwrap();
    assert_eq!(doc.classes[0].name, "membrane");
    assert_eq!(doc.classes[1].name, "cell");
    assert_eq!(doc.display.min, 50.0);
    assert_eq!(doc.display.gamma, 0.7);
}

#[test]
fn every_training_run_is_a_version_that_can_be_restored() {
    use egui_kittest::kittest::Queryable as _;
    let dir = copy_sample("history");
    let mut h = harness(&dir);
    // Two runs from scratch (a fine-tune that validates worse than its start adds no
    // version).
    for iterations in [3u64, 5] {
        h.state_mut().reset_model();
        h.state_mut().models.iterations = iterations;
        // A frame first: the panel loses the model's rows, and the button moves.
        h.run_steps(1);
        h.get_by_label("Train").click();
        h.run_steps(1);
        h.state_mut().finish_jobs();
        h.run_steps(2);
    }
    let app = h.state();
    assert_eq!(app.models.history.len(), 2);
    assert_eq!(app.models.history[0].meta.iteration, 3);
    assert_eq!(app.models.history[1].meta.iteration, 5);
    assert_eq!(app.models.model.as_ref().unwrap().iteration, 5);
    // Compare the two versions side by side on the shown slice.
    h.get_by_label("v0001").click();
    h.get_by_label("v0002").click();
    h.run_steps(1);
    h.get_by_label("Compare ticked versions").click();
    h.run_steps(1);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    let c = h.state().compare.result.clone().expect("a comparison");
    assert_eq!(c.slice, 0);
    assert_eq!(
        [
            c.sides[0].version.meta.iteration,
            c.sides[1].version.meta.iteration
        ],
        [3, 5]
    );
    // Each side is what the saved version predicts (checked through the library), its error
    // on the painted labels and the agreement are counted independently here.
    let doc = h.state().doc.as_ref().unwrap();
    let image = unet_studio::preprocess::normalize_percentile(&doc.stack.all_planes().unwrap()[0]);
    let cpu = unet_studio::ml::device::cpu_device();
    let masks: Vec<_> = c
        .sides
        .iter()
        .map(|side| {
            let ck = unet_studio::ml::load_checkpoint(&side.version.dir).unwrap();
            let model = ck.model(&cpu.device).unwrap();
            let probs = unet_studio::ml::predict_probabilities(
                &model,
                &ck.meta.unet,
                std::slice::from_ref(&image),
                100,
                &cpu.device,
                &Default::default(),
                &mut |_, _| {},
            )
            .unwrap();
            let max = probs[1]
                .data
                .iter()
                .zip(&side.probs[1].data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(max < 1e-4, "{max}");
            // Counted from the side's own probabilities: another tiling's may round
            // differently (other kernels per tile size) and flip a near tie.
            unet_studio::postprocess::argmax_classes(&side.probs)
        })
        .collect();
    for (side, mask) in c.sides.iter().zip(&masks) {
        let labelled: Vec<_> = doc.labels[0]
            .data
            .iter()
            .zip(&mask.data)
            .filter(|(l, _)| **l > 0)
            .collect();
        let wrong = labelled
            .iter()
            .filter(|(l, m)| u16::from(**l) != **m)
            .count();
        let expect = wrong as f64 / labelled.len() as f64;
        assert!((side.label_error.unwrap() - expect).abs() < 1e-12);
    }
    let same = masks[0]
        .data
        .iter()
        .zip(&masks[1].data)
        .filter(|(a, b)| a == b)
        .count();
    assert!((c.agreement - same as f64 / masks[0].data.len() as f64).abs() < 1e-12);
    assert!(h.state().compare.open);
    let _ = h.get_by_label("wrong on this slice's labels");
    // Roll back to v0001.
    h.get_by_label("Use v0001").click();
    h.run_steps(1);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    assert_eq!(h.state().models.model.as_ref().unwrap().iteration, 3);
    // The restored version is what reopens with the stack.
    let reopened = harness(&dir);
    assert_eq!(reopened.state().models.model.as_ref().unwrap().iteration, 3);
    assert_eq!(reopened.state().models.history.len(), 2);
    // Reset: no model, the versions stay.
    h.get_by_label("Reset model").click();
    h.run_steps(1);
    assert!(h.state().models.model.is_none());
    assert_eq!(h.state().models.history.len(), 2);
    // Save model as / Load model (the folder dialogs give these paths).
    h.state_mut()
        .use_version(dir.join("images/labels.unet.model/versions/v0002"));
    h.state_mut().finish_jobs();
    let shared = dir.join("shared-model");
    h.state_mut().save_model_to(shared.clone());
    h.state_mut().finish_jobs();
    assert!(
        h.state().status.starts_with("model saved to"),
        "{}",
        h.state().status
    );
    let saved = unet_studio::ml::load_checkpoint(&shared).unwrap().meta;
    assert_eq!(saved.iteration, 5);
    // What the model was trained with (its class weights, which a fine-tune keeps) and its
    // threshold travel with it.
    let version =
        unet_studio::ml::load_checkpoint(&dir.join("images/labels.unet.model/versions/v0002"))
            .unwrap()
            .meta;
    assert!(version.train.is_some());
    assert_eq!(saved.train, version.train);
    assert_eq!(saved.decision(), version.decision());
    h.get_by_label("Reset model").click();
    h.run_steps(1);
    h.state_mut().use_version(shared);
    h.state_mut().finish_jobs();
    assert_eq!(h.state().models.model.as_ref().unwrap().iteration, 5);
    let _ = h.get_by_label("Load model…");
}

#[test]
fn recent_files_are_remembered_and_reopen() {
    use egui_kittest::kittest::Queryable as _;
    let dir = copy_sample("recent");
    {
        let _first = harness(&dir);
    }
    let list = unet_studio::project::recent::load(&dir.join("config")).unwrap();
    let images = std::fs::canonicalize(dir.join("images")).unwrap();
    assert_eq!(list.first(), Some(&images));
    // A new session lists it in File > Recent, and choosing it opens it.
    let mut h = harness(&dir);
    assert_eq!(h.state().recent.first(), Some(&images));
    h.get_by_label("File").click();
    h.run_steps(2);
    h.get_by_label_contains("Recent").click();
    h.run_steps(2);
    h.get_by_label(&images.display().to_string()).click();
    h.run_steps(1);
    h.state_mut().finish_jobs();
    assert_eq!(h.state().doc.as_ref().unwrap().source, images);
}

#[test]
fn the_sample_opens_with_its_pretrained_model_which_segments_membranes() {
    use egui_kittest::kittest::Queryable as _;
    let req = OpenRequest::sample();
    assert!(req.initial_model.is_some(), "samples/model is shipped");
    let config =
        std::env::temp_dir().join(format!("unet-gui-sample-config-{}", std::process::id()));
    // A fresh data folder: the sample starts from its bundled model.
    let _ = std::fs::remove_dir_all(&config);
    let mut h = harness_for(req, config.clone());
    assert!(h.state().models.model.is_some(), "{:?}", h.state().error);
    // Opening predicted the shown slice with it, without a click.
    h.state_mut().finish_jobs();
    // Against the full ground truth of slice 0: most pixels right at p = 0.5.
    let truth = load_label_stack(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/isbi2012/labels/slice00.png"),
    )
    .unwrap();
    let probs = h.state().models.probabilities[0].clone().unwrap();
    let wrong = probs[1]
        .data
        .iter()
        .zip(&truth[0].data)
        .filter(|(p, t)| (**p > 0.5) != (**t > 0))
        .count();
    let error = wrong as f64 / truth[0].data.len() as f64;
    assert!(
        error < 0.2,
        "pixel error of the shipped model on slice 0: {error}"
    );
    // The mask overlay follows the model's rule, gap closing included; the checkbox turns
    // it off (the plain threshold) and on again, and the overlay follows each time.
    let decision = h.state().models.model.as_ref().unwrap().decision;
    let (t, seeds) = (decision.threshold.unwrap(), decision.gap_closing.unwrap());
    let closed = unet_studio::postprocess::close_gaps(&probs[1], t, &seeds);
    let plain = probs[1].map(|p| p > t);
    assert!(closed != plain);
    let colours = class_colours(h.state());
    let overlay_cells = |h: &mut Harness<'static, StudioApp>| -> Vec<bool> {
        let drawn = overlay_pixels(h);
        mask_of(&drawn, &colours).iter().map(|&c| c == 2).collect()
    };
    let at = |mask: &unet_studio::data::Plane<bool>, h: &mut Harness<'static, StudioApp>| {
        overlay_pixels(h)
            .iter()
            .map(|&((x, y), _)| mask.at(x, y))
            .collect::<Vec<bool>>()
    };
    let differ = |a: &[bool], b: &[bool]| a.iter().zip(b).filter(|(x, y)| x != y).count();
    h.state_mut().models.overlay = unet_studio::app::Overlay::Mask;
    let want = at(&closed, &mut h);
    assert_eq!(differ(&overlay_cells(&mut h), &want), 0);
    assert!(
        differ(&want, &at(&plain, &mut h)) > 0,
        "the lines are on the canvas"
    );
    // A weight map arriving leaves the probabilities and their lines as they are (the lines
    // are not computed again).
    let lines_before = h.state().models.gap_lines.as_ref().map(|(k, _)| *k);
    assert!(lines_before.is_some());
    h.state_mut().models.overlay = unet_studio::app::Overlay::WeightMap;
    h.run_steps(2);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    assert!(h.state().models.weight_map.is_some());
    h.state_mut().models.overlay = unet_studio::app::Overlay::Mask;
    h.run_steps(2);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    assert_eq!(
        h.state().models.gap_lines.as_ref().map(|(k, _)| *k),
        lines_before
    );
    assert_eq!(differ(&overlay_cells(&mut h), &want), 0);
    let gaps = |h: &Harness<'static, StudioApp>| {
        h.state()
            .models
            .model
            .as_ref()
            .unwrap()
            .decision
            .gap_closing
    };
    h.get_by_label("Close gaps (watershed lines)").click();
    h.run_steps(2);
    assert_eq!(gaps(&h), None);
    let want = at(&plain, &mut h);
    assert_eq!(differ(&overlay_cells(&mut h), &want), 0);
    h.get_by_label("Close gaps (watershed lines)").click();
    h.run_steps(2);
    assert_eq!(h.state().models.model.as_ref().unwrap().decision, decision);
    let want = at(&closed, &mut h);
    assert_eq!(differ(&overlay_cells(&mut h), &want), 0);
    // On the truth of slice 0, the lines keep cells apart: a lower Rand error (the
    // challenge's definition) than the plain threshold.
    let truth_cell = truth[0].map(|c| c >= 2);
    let score = |m: &unet_studio::data::Plane<bool>| {
        unet_studio::metrics::mask_errors(
            std::slice::from_ref(m),
            std::slice::from_ref(&truth_cell),
        )
        .rand_error
    };
    assert!(
        score(&closed) < score(&plain),
        "{} {}",
        score(&closed),
        score(&plain)
    );
    // The switch is kept with the stack's own model (in the data folder, never in the
    // bundled one): off, then a restart, then on again gives back the model's own settings.
    h.get_by_label("Close gaps (watershed lines)").click();
    h.run_steps(2);
    h.state_mut().finish_jobs();
    let own = h.state().doc.as_ref().unwrap().model_dir();
    assert!(own.starts_with(&config), "{}", own.display());
    let saved = unet_studio::ml::load_checkpoint(&own).unwrap().meta;
    assert_eq!(
        (saved.gap_closing, saved.gap_closing_off),
        (None, Some(seeds))
    );
    drop(h);
    let mut h = harness_for(OpenRequest::sample(), config.clone());
    h.state_mut().finish_jobs();
    h.run_steps(2);
    assert_eq!(gaps(&h), None);
    h.get_by_label("Close gaps (watershed lines)").click();
    h.run_steps(2);
    h.state_mut().finish_jobs();
    assert_eq!(h.state().models.model.as_ref().unwrap().decision, decision);
    let saved = unet_studio::ml::load_checkpoint(&own).unwrap().meta;
    assert_eq!(saved.decision(), decision);
    let _ = std::fs::remove_dir_all(&config);
}

/// The colours the viewer draws for image pixels with the overlay opaque and the labels
/// hidden, at one framebuffer pixel per image pixel from the image's corner: each image pixel
/// on the canvas with its colour.
fn overlay_pixels(h: &mut Harness<'static, StudioApp>) -> Vec<((usize, usize), [u8; 3])> {
    let ppp = h.ctx.pixels_per_point();
    {
        let s = h.state_mut();
        s.view.fit = false;
        s.view.fitted = None;
        s.view.zoom = 1.0 / ppp;
        s.view.origin = egui::vec2(0.0, 0.0);
        s.show_labels = false;
        s.models.overlay_opacity = 1.0;
    }
    h.remove_cursor();
    // Jobs the overlay starts (the mask's gap-closing lines) end before the picture.
    h.run_steps(2);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    let full = h.render().unwrap();
    let (r, doc) = (h.state().canvas_rect, h.state().doc.as_ref().unwrap());
    let (w, ht) = (doc.stack.width, doc.stack.height);
    let mut out = Vec::new();
    // Inside the canvas by a pixel, so egui's frame around it is not read.
    for fy in (r.min.y * ppp).ceil() as u32 + 1..(r.max.y * ppp).floor() as u32 - 1 {
        for fx in (r.min.x * ppp).ceil() as u32 + 1..(r.max.x * ppp).floor() as u32 - 1 {
            // The shader's mapping: image position = (fragment centre - rect min) / zoom.
            let x = (fx as f32 + 0.5 - r.min.x * ppp).floor();
            let y = (fy as f32 + 0.5 - r.min.y * ppp).floor();
            if x >= 0.0 && y >= 0.0 && (x as usize) < w && (y as usize) < ht {
                let p = full.get_pixel(fx, fy).0;
                out.push(((x as usize, y as usize), [p[0], p[1], p[2]]));
            }
        }
    }
    assert!(
        out.len() > 10_000,
        "{} image pixels on the canvas",
        out.len()
    );
    out
}

/// The colours of the open document's classes (class k at index k - 1).
fn class_colours(app: &StudioApp) -> Vec<[u8; 3]> {
    let doc = app.doc.as_ref().expect("a document is open");
    doc.classes.iter().map(|c| c.color).collect()
}

/// The WGSL `heat` colour map (black, red, yellow, white) of `t`, in 8 bits.
fn heat(t: f32) -> [f32; 3] {
    let x = t.clamp(0.0, 1.0);
    [3.0 * x, 3.0 * x - 1.0, 3.0 * x - 2.0].map(|v| v.clamp(0.0, 1.0) * 255.0)
}

/// Every drawn pixel is the heat colour of `value` at its image pixel (within rounding).
fn assert_heat(
    drawn: &[((usize, usize), [u8; 3])],
    value: impl Fn(usize, usize) -> f32,
    what: &str,
) {
    let mut worst = 0.0f32;
    for &((x, y), c) in drawn {
        let want = heat(value(x, y));
        for (a, b) in c.iter().zip(want) {
            worst = worst.max((f32::from(*a) - b).abs());
        }
    }
    assert!(worst <= 1.5, "{what}: a drawn pixel is {worst} levels off");
}

/// The class each drawn pixel's colour is (0: none of the classes' colours).
fn mask_of(drawn: &[((usize, usize), [u8; 3])], colours: &[[u8; 3]]) -> Vec<u16> {
    drawn
        .iter()
        .map(|(_, c)| {
            colours
                .iter()
                .position(|k| k == c)
                .map_or(0, |k| k as u16 + 1)
        })
        .collect()
}

/// `classes` at the drawn pixels.
fn classes_at(
    drawn: &[((usize, usize), [u8; 3])],
    classes: &unet_studio::data::Plane<u16>,
) -> Vec<u16> {
    drawn.iter().map(|&((x, y), _)| classes.at(x, y)).collect()
}

/// The pixels of the image canvas only (the status bar changes with every autosave).
fn render_canvas(h: &mut Harness<'static, StudioApp>) -> image::RgbaImage {
    let full = h.render().unwrap();
    let r = h.state().canvas_rect;
    let ppp = full.width() as f32 / 1100.0;
    image::imageops::crop_imm(
        &full,
        (r.min.x * ppp) as u32,
        (r.min.y * ppp) as u32,
        (r.width() * ppp) as u32,
        (r.height() * ppp) as u32,
    )
    .to_image()
}

#[test]
fn texture_tiles_draw_exactly_what_one_texture_draws() {
    let dir = copy_sample("tiles");
    let mut h = harness(&dir);
    h.remove_cursor();
    // Minified (bilinear taps across tile borders) and magnified around the borders at 198
    // and 396 of 200-px tiles, with the label overlay.
    let views = [(0.7, egui::vec2(0.0, 0.0)), (2.5, egui::vec2(150.0, 330.0))];
    let render_views = |h: &mut Harness<'static, StudioApp>| -> Vec<image::RgbaImage> {
        views
            .iter()
            .map(|&(zoom, origin)| {
                let s = h.state_mut();
                s.view.fit = false;
                s.view.fitted = None;
                s.view.zoom = zoom;
                s.view.origin = origin;
                h.run_steps(2);
                render_canvas(h)
            })
            .collect()
    };
    let one = render_views(&mut h);
    assert_eq!(
        h.state().gpu_upload_stats().0,
        1,
        "512 x 512 fits one texture"
    );
    h.state_mut().set_texture_tile_edge(200);
    h.run_steps(1);
    let before = h.state().gpu_upload_stats().1;
    let tiled = render_views(&mut h);
    let (tiles, after) = h.state().gpu_upload_stats();
    assert_eq!(tiles, 9, "3 x 3 tiles of at most 200 px");
    // Image (4 bytes) and labels (1 byte) of 512 x 512, the halos ~2 % more, the palette.
    let uploaded = after - before;
    assert!(
        (5 * 512 * 512..5 * 512 * 512 * 21 / 20).contains(&uploaded),
        "{uploaded} bytes"
    );
    for (i, (a, b)) in one.iter().zip(&tiled).enumerate() {
        assert_eq!(a.dimensions(), b.dimensions());
        let differing = a.pixels().zip(b.pixels()).filter(|(p, q)| p != q).count();
        assert_eq!(differing, 0, "view {i}: {differing} pixels differ");
    }
    // A stroke across a tile border lands in both tiles: same picture as one texture.
    let stroke = |h: &mut Harness<'static, StudioApp>| {
        let doc = h.state_mut().doc.as_mut().unwrap();
        doc.begin_stroke();
        doc.paint_line(0, (180.0, 390.0), (220.0, 400.0), 6.0, 2, false);
        doc.end_stroke();
        h.state_mut().finish_jobs();
        h.run_steps(2);
        render_canvas(h)
    };
    let tiled_stroke = stroke(&mut h);
    h.state_mut().doc.as_mut().unwrap().undo();
    h.state_mut().set_texture_tile_edge(0);
    h.run_steps(2);
    let one_stroke = stroke(&mut h);
    assert_ne!(tiled_stroke, tiled[1], "the stroke is visible");
    assert!(
        tiled_stroke == one_stroke,
        "tiled and whole label uploads agree"
    );
}

#[test]
fn import_labels_in_an_encoding_then_undo_and_merge() {
    use egui_kittest::kittest::Queryable as _;
    use unet_studio::data::{LabelEncoding, MaskStyle, Plane, encode_labels, write_mask};
    let dir = copy_sample("import");
    let mut h = harness(&dir);
    let before = h.state().doc.as_ref().unwrap().labels.clone();
    // Two touching objects (ids 5 and 9) on every slice, as an instance mask.
    let mut mask = Plane::filled(512, 512, 0u16);
    for y in 100..150 {
        for x in 100..200 {
            mask.set(x, y, if x < 150 { 5 } else { 9 });
        }
    }
    let file = dir.join("instances.tif");
    write_mask(
        &file,
        &[mask.clone(), mask.clone(), mask.clone()],
        MaskStyle::Classes,
    )
    .unwrap();
    h.get_by_label("File").click();
    h.run_steps(2);
    h.get_by_label_contains("Import labels").click();
    h.run_steps(1);
    assert!(h.state().import.open);
    h.state_mut().import.path = file.display().to_string();
    h.run_steps(2);
    h.get_by_label_contains("instances: 0 background").click();
    h.run_steps(1);
    h.get_by_label("Import").click();
    h.run_steps(1);
    h.state_mut().finish_jobs();
    h.run_steps(1);
    let expected = encode_labels(&mask.map(u32::from), LabelEncoding::Instances)
        .unwrap()
        .classes;
    // The separating line between the touching objects is background (paper, Fig. 3c).
    assert_eq!(expected.at(149, 120), 1);
    let app = h.state();
    assert!(app.error.is_none(), "{:?}", app.error);
    assert!(!app.import.open);
    for s in 0..3 {
        assert!(app.doc.as_ref().unwrap().labels[s] == expected, "slice {s}");
    }
    // One Ctrl+Z undoes the whole import.
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run_steps(1);
    assert!(h.state().doc.as_ref().unwrap().labels == before);
    // Merge: a classes file that labels only the square keeps the painted scribbles.
    let mut square = Plane::filled(512, 512, 0u16);
    for y in 300..340 {
        for x in 300..340 {
            square.set(x, y, 2);
        }
    }
    let file = dir.join("square.tif");
    write_mask(
        &file,
        &[square.clone(), square.clone(), square],
        MaskStyle::Classes,
    )
    .unwrap();
    h.state_mut().import.open = true;
    h.state_mut().import.path = file.display().to_string();
    h.state_mut().import.merge = true;
    h.run_steps(1);
    h.run_steps(1);
    h.get_by_label_contains("classes: 0 unlabelled").click();
    h.run_steps(1);
    h.get_by_label("Import").click();
    h.run_steps(1);
    h.state_mut().finish_jobs();
    let doc = h.state().doc.as_ref().unwrap();
    for (i, (&now, &was)) in doc.labels[0].data.iter().zip(&before[0].data).enumerate() {
        let (x, y) = (i % 512, i / 512);
        let inside = (300..340).contains(&x) && (300..340).contains(&y);
        assert_eq!(now, if inside { 2 } else { was }, "({x}, {y})");
    }
    // A file of another size is refused with its name.
    let small = dir.join("small.tif");
    write_mask(
        &small,
        &vec![Plane::filled(10, 10, 1u16); 3],
        MaskStyle::Classes,
    )
    .unwrap();
    h.state_mut().import.path = small.display().to_string();
    h.state_mut().start_import();
    h.state_mut().finish_jobs();
    let e = h.state().error.clone().unwrap_or_default();
    assert!(e.contains("small.tif") && e.contains("10x10"), "{e}");
}
