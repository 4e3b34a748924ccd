//! The segmentation recipe from the app's model panel: test-time augmentation, the time
//! limit, and fine-tuning that keeps the best validated network.

use std::path::{Path, PathBuf};

use egui_kittest::kittest::Queryable as _;
use unet_studio::app::OpenRequest;
use unet_studio::data::LabelEncoding;
use unet_studio::ml::infer::predict_probabilities_tta;
use unet_studio::ml::{CancelToken, load_checkpoint};
use unet_studio::preprocess::{D4, normalize_percentile};

mod common;
use common::{copy_sample, harness_for};

fn sample_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/model")
}

fn open_with_model(tag: &str) -> egui_kittest::Harness<'static, unet_studio::app::StudioApp> {
    let dir = copy_sample(tag);
    harness_for(
        OpenRequest {
            images: dir.join("images"),
            labels: Some((dir.join("scribbles"), LabelEncoding::Classes)),
            model: Some(sample_model()),
            ..Default::default()
        },
        dir.join("config"),
    )
}

/// Presses Train and waits for the run, its saving and the prediction after it.
fn train_from_the_button(h: &mut egui_kittest::Harness<'static, unet_studio::app::StudioApp>) {
    h.get_by_label("Train").click();
    h.run_steps(2);
    h.state_mut().finish_jobs();
    h.run_steps(3);
    h.state_mut().finish_jobs();
    h.run_steps(2);
}

#[test]
fn the_tta_box_makes_predictions_average_the_eight_views() {
    let mut h = open_with_model("tta");
    assert_eq!(h.state().models.tta_views, 1);
    h.get_by_label("Predict with 8 flips and rotations").click();
    h.run_steps(2);
    assert_eq!(h.state().models.tta_views, 8);
    h.get_by_label("Predict slice").click();
    h.run_steps(2);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    let app = h.state();
    assert!(app.error.is_none(), "{:?}", app.error);
    let got = app.models.probabilities[0]
        .as_ref()
        .expect("slice 0 predicted");
    // The engine's 8-view mean of the same slice with the same tile.
    let ckpt = load_checkpoint(&sample_model()).unwrap();
    let cpu = unet_studio::ml::device::cpu_device();
    let model = ckpt.model(&cpu.device).unwrap();
    let doc = app.doc.as_ref().unwrap();
    let want = predict_probabilities_tta(
        &model,
        &ckpt.meta.unet,
        &[normalize_percentile(&doc.stack.all_planes().unwrap()[0])],
        app.models.tile_predict.expect("a prediction tile"),
        &cpu.device,
        &CancelToken::new(),
        &mut |_, _| {},
        &D4::all(),
    )
    .unwrap();
    let diff = got[1]
        .data
        .iter()
        .zip(&want[1].data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-5, "{diff}");
}

#[test]
fn a_short_fine_tune_on_scribbles_never_makes_the_model_worse() {
    // The sample's strokes mostly agree with the shipped model: the run validates the model
    // first (iteration 0 of the run, against its own segmentation with the strokes over it)
    // and keeps it unless a fine-tuned network segments the labelled slices better.
    let mut h = open_with_model("finetune");
    let base = h.state().models.model.as_ref().unwrap().iteration;
    h.state_mut().models.iterations = 10;
    train_from_the_button(&mut h);
    let app = h.state();
    assert!(app.error.is_none(), "{:?}", app.error);
    let val = &app.models.val_rand;
    assert_eq!(val.first().map(|v| v[0]), Some(0.0), "{val:?}");
    assert!(
        val[0][1] < 0.05,
        "the model nearly agrees with itself: {val:?}"
    );
    let model = app.models.model.as_ref().unwrap();
    let kept = model.iteration - base;
    let kept_rand = val
        .iter()
        .find(|v| v[0] as u64 == kept)
        .map(|v| v[1])
        .expect("the kept network was validated");
    let min = val.iter().map(|v| v[1]).fold(f64::INFINITY, f64::min);
    assert_eq!(kept_rand, min, "{val:?}");
    if kept == 0 {
        assert!(
            app.status.contains("the model is unchanged"),
            "{}",
            app.status
        );
    }
}

#[test]
fn the_time_limit_ends_a_training_run() {
    let mut h = open_with_model("minutes");
    h.state_mut().models.iterations = 100_000;
    h.state_mut().models.minutes = 0.002;
    train_from_the_button(&mut h);
    let app = h.state();
    assert!(app.error.is_none(), "{:?}", app.error);
    assert!(!app.training());
    let n = app.models.losses.len();
    assert!(n > 0 && n < 100_000, "{n} iterations");
}

/// The model panel keeps its layout while a run starts, runs and ends: the overlay buttons
/// stay under the cursor (a click on "mask" once hit nothing because a progress bar and the
/// loss plot appeared above it and the panel widened).
#[test]
fn the_model_panel_does_not_move_when_a_run_starts_or_ends() {
    let mut h = open_with_model("layout");
    let at = |h: &egui_kittest::Harness<'static, unet_studio::app::StudioApp>| {
        (
            h.get_by_label("mask").rect(),
            h.get_by_label("Train").rect(),
        )
    };
    let before = at(&h);
    h.state_mut().models.iterations = 100_000;
    h.get_by_label("Train").click();
    h.run_steps(3);
    assert!(h.state().training());
    for _ in 0..20 {
        if !h.state().models.losses.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        h.run_steps(1);
    }
    assert_eq!(at(&h), before, "while training");
    h.get_by_label("Stop").click();
    h.run_steps(2);
    h.state_mut().finish_jobs();
    h.run_steps(3);
    assert!(!h.state().training());
    assert_eq!(at(&h), before, "after the run");
}
