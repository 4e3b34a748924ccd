//! A stack read slice by slice, as one larger than memory is (here asked for with
//! `--slice-by-slice`; the choice by size is tested in `data::io::slices`): browsed, painted on
//! one slice, quit and reopened with the labels, trained on the painted slice, one slice
//! predicted, and masks exported slice by slice (the export's slice is the mask of the app's
//! own prediction of that slice).

use std::path::{Path, PathBuf};

use eframe::egui;
use egui_kittest::kittest::Queryable as _;
use unet_studio::app::{ExportKind, OpenRequest};
use unet_studio::data::{MaskStyle, Plane, Planes, load_label_stack, load_stack, write_mask};

mod common;
use common::{harness_for, paint_at};

/// 8 slices of 512 x 512, 16-bit: the EM sample's slices, each slice with its own offset (so
/// slices differ).
fn stack(dir: &Path) -> PathBuf {
    let sample = common::engine::sample_dir();
    let planes: Vec<Plane<u16>> = (0..8)
        .map(|s| {
            let img =
                load_stack(&sample.join("images").join(format!("slice{:02}.png", s % 3))).unwrap();
            img.all_planes().unwrap()[0].map(|v| v as u16 * 100 + s as u16)
        })
        .collect();
    let path = dir.join("big.tif");
    write_mask(&path, &planes, MaskStyle::Classes).unwrap();
    path
}

#[test]
fn a_stack_read_slice_by_slice_is_browsed_painted_trained_predicted_and_exported() {
    let dir = common::engine::tempdir("on-demand");
    let path = stack(&dir);
    let whole = load_stack(&path).unwrap();
    let open = || OpenRequest {
        images: path.clone(),
        slice_by_slice: true,
        ..Default::default()
    };
    let mut h = harness_for(open(), dir.join("config"));
    h.state_mut().finish_jobs();
    h.run_steps(3);
    {
        let app = h.state();
        assert!(app.error.is_none(), "{:?}", app.error);
        let doc = app.doc.as_ref().expect("the stack opened");
        assert!(doc.stack.on_demand(), "read slice by slice");
        assert_eq!((doc.slices(), doc.stack.width), (8, 512));
        assert!(app.status.contains("read slice by slice"), "{}", app.status);
        // Nothing painted: no label plane is kept.
        assert_eq!(doc.labels.painted().count(), 0);
    }
    // Step through every slice: each is read by a job and then shown; the cache stays
    // within its budget.
    let budget = unet_studio::data::io::slices::cache_budget();
    for s in 1..8 {
        h.key_press(egui::Key::ArrowRight);
        h.run_steps(2);
        h.state_mut().finish_jobs();
        h.run_steps(2);
        assert_eq!(h.state().view.slice, s);
        assert_eq!(h.state().shown_slice(), Some(s), "slice {s} shown");
        let doc = h.state().doc.as_ref().unwrap();
        let Planes::OnDemand(cache) = &doc.stack.planes else {
            unreachable!()
        };
        assert!(cache.kept_bytes() <= budget, "{}", cache.kept_bytes());
        // What is shown is the file's slice.
        assert_eq!(
            &*doc.stack.image_now(s).unwrap(),
            &*whole.image(s).unwrap(),
            "slice {s}"
        );
    }
    // Back to slice 5 and paint both classes there.
    for _ in 5..7 {
        h.key_press(egui::Key::ArrowLeft);
    }
    h.run_steps(2);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    assert_eq!(h.state().view.slice, 5);
    h.state_mut().active_class = 1;
    paint_at(&mut h, 100.5, 100.5);
    h.state_mut().active_class = 2;
    paint_at(&mut h, 300.5, 300.5);
    let painted = h.state().doc.as_ref().unwrap().labels.clone();
    assert_eq!(
        painted.painted().map(|(s, _)| s).collect::<Vec<_>>(),
        [5],
        "only the painted slice is kept"
    );
    assert!(painted[5].data.contains(&2));
    // Train a few iterations: the painted slice is read from the file by the job.
    h.state_mut().models.iterations = 3;
    h.get_by_label("Train").click();
    h.run_steps(2);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    h.state_mut().finish_jobs();
    assert!(h.state().error.is_none(), "{:?}", h.state().error);
    assert!(h.state().models.model.is_some(), "a trained model");
    // The shown slice is predicted; the whole stack is not held at once.
    h.state_mut().predict_slice();
    h.state_mut().finish_jobs();
    assert!(h.state().models.probabilities[5].is_some());
    h.state_mut().predict_stack();
    let err = h.state_mut().error.take().unwrap_or_default();
    assert!(err.contains("larger than memory"), "{err}");
    // Export the masks: every slice read, predicted and written one at a time.
    let out = dir.join("masks.tif");
    h.state_mut().export(ExportKind::MaskClasses, out.clone());
    h.state_mut().finish_jobs();
    assert!(h.state().error.is_none(), "{:?}", h.state().error);
    assert!(
        h.state().status.starts_with("exported"),
        "{}",
        h.state().status
    );
    let masks = load_label_stack(&out).unwrap();
    assert_eq!(masks.len(), 8);
    // The export's slice 5 is the mask of the app's own prediction of slice 5.
    let app = h.state();
    let probs = app.models.probabilities[5].as_ref().unwrap();
    let decision = app.models.model.as_ref().unwrap().decision;
    assert_eq!(
        masks[5].map(|v| v as u16),
        decision.classes(probs),
        "export = prediction of the shown slice"
    );
    // The painted labels exported page by page: slice 5 painted, the others empty.
    let exported = dir.join("labels-export.tif");
    h.state_mut().export(ExportKind::Labels, exported.clone());
    h.state_mut().finish_jobs();
    let back = load_label_stack(&exported).unwrap();
    assert_eq!(back.len(), 8);
    assert_eq!(back[5].map(|v| v as u8), painted[5]);
    assert!(back[4].data.iter().all(|&v| v == 0));
    // Predicting slice 6 keeps the predictions of slice 6 only (slice after slice must not
    // fill the memory).
    h.key_press(egui::Key::ArrowRight);
    h.run_steps(2);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    h.state_mut().predict_slice();
    h.state_mut().finish_jobs();
    let p = &h.state().models.probabilities;
    let kept: Vec<usize> = (0..p.len()).filter(|&s| p[s].is_some()).collect();
    assert_eq!(kept, [6]);
    h.state_mut().flush_labels().unwrap();
    let label_path = h.state().doc.as_ref().unwrap().label_path.clone();
    drop(h);
    // The label file as Python's tifffile reads it: a stack of 8 class-id pages.
    let script = "import sys, tifffile; a = tifffile.imread(sys.argv[1]); \
                  print(a.shape, a.dtype, int(a[5].max()), int(a[4].max()))";
    if let Some(out) = common::run_tifffile(script, label_path.to_str().unwrap()) {
        assert_eq!(out.trim(), "(8, 512, 512) uint8 2 0");
    }

    // Reopen: the labels of slice 5 come back (read page by page), nothing else is painted.
    let mut h = harness_for(open(), dir.join("config"));
    h.state_mut().finish_jobs();
    let doc = h.state().doc.as_ref().unwrap();
    assert!(doc.stack.on_demand());
    assert_eq!(doc.labels, painted);
    assert_eq!(
        doc.labels.painted().map(|(s, _)| s).collect::<Vec<_>>(),
        [5]
    );
    // The file cut short under the open app: the slices past the cut cannot be read; the
    // error names the slice, once (the slice is not read again every frame).
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    for _ in 0..7 {
        h.key_press(egui::Key::ArrowRight);
    }
    h.run_steps(2);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    assert_eq!(h.state().view.slice, 7);
    let err = h.state_mut().error.take().unwrap_or_default();
    assert!(err.contains("slice 7") && err.contains("big.tif"), "{err}");
    h.run_steps(3);
    h.state_mut().finish_jobs();
    h.run_steps(3);
    assert!(h.state().error.is_none(), "{:?}", h.state().error);
    let _ = std::fs::remove_dir_all(&dir);
}
