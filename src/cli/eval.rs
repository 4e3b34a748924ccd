//! `unet-studio eval`: a mask, probability map or model scored against ground truth with the
//! ISBI 2012 challenge's definitions.

use super::common::{bytes_per_pixel, check_task_memory, default_views};
use crate::data::{LabelEncoding, Plane, Stack, load_label_stack, load_stack};
use crate::ml::{
    CancelToken, Checkpoint, DeviceChoice, effective_tile, load_checkpoint, select_device,
};
use crate::postprocess::{Decision, GapClosing, close_gaps};
use crate::preprocess::D4;
use crate::project::sets::{
    check_fit, images_and_labels, input_channels, load_labels, picked, sizes,
};
use crate::project::tasks::{SliceProgress, predict_slices};
use anyhow::{Result, bail};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Predicted mask(s) in the classes convention (0/255 masks are read as binary), or a
    /// float TIFF of cell probabilities (one page per slice, or `predict --probabilities`
    /// output with one page per class and slice).
    #[arg(long, required_unless_present = "model", conflicts_with = "model")]
    prediction: Option<PathBuf>,
    /// Predict with this model instead (needs --images) and score its probabilities and the
    /// mask `predict --binary` would write.
    #[arg(long, requires = "images")]
    model: Option<PathBuf>,
    /// Images to predict with --model.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Test-time augmentation views with --model (1 = off, up to 8; default as `predict`).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=8))]
    tta: Option<u8>,
    /// auto | gpu | cpu (with --model).
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Ground-truth label image(s).
    #[arg(long)]
    truth: PathBuf,
    /// classes | binary | instances (of the truth).
    #[arg(long, default_value = "classes")]
    label_encoding: LabelEncoding,
    /// With --model: also score the gap closing over a grid of seed thresholds (0.5 to 0.95)
    /// and mask thresholds (0.01 to 0.5), to choose its settings.
    #[arg(long, requires = "model")]
    sweep_gap_closing: bool,
}

/// What `eval` prints: every measure with the definition it uses and its threshold.
#[derive(serde::Serialize)]
struct EvalReport {
    /// The definitions of the measures below.
    definitions: [&'static str; 4],
    /// Scores of a class mask (`--prediction` holding a mask).
    #[serde(skip_serializing_if = "Option::is_none")]
    mask: Option<crate::metrics::Evaluation>,
    /// Scores of cell probabilities over the challenge's thresholds.
    #[serde(skip_serializing_if = "Option::is_none")]
    probabilities: Option<crate::metrics::ThresholdScores>,
    /// The mask `predict --binary` writes with this model: its decision rule (threshold,
    /// `null`: argmax; gap closing, if the model chose it) and its scores.
    #[serde(skip_serializing_if = "Option::is_none")]
    model_mask: Option<(Decision, crate::metrics::MaskScores)>,
    /// The mask of the model's threshold alone (`predict --no-close-gaps`).
    #[serde(skip_serializing_if = "Option::is_none")]
    model_mask_without_gap_closing: Option<crate::metrics::MaskScores>,
    /// The mask of the model's threshold with gap closing (`predict --close-gaps`: the
    /// model's seed threshold, else 0.9), a post-processing step.
    #[serde(skip_serializing_if = "Option::is_none")]
    model_mask_with_gap_closing: Option<crate::metrics::MaskScores>,
    /// `--sweep-gap-closing`: the gap closing's scores for each seed and mask threshold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    gap_closing_sweep: Vec<GapClosingScore>,
}

/// The scores of the gap closing at one pair of thresholds.
#[derive(serde::Serialize)]
struct GapClosingScore {
    seeds: GapClosing,
    threshold: f32,
    scores: crate::metrics::MaskScores,
}

const EVAL_DEFINITIONS: [&str; 4] = [
    "pixel_error: 1 - F-score of cell pixels, counts pooled over slices (ISBI 2012 challenge, Fiji PixelError)",
    "rand_error: 1 - foreground-restricted Rand F-score of 4-connected cell segments, proposal membrane pixels as singletons, counts pooled over slices (ISBI 2012 challenge, Fiji RandError)",
    "vrand_thinned_error: 1 - the same Rand F-score after a seeded watershed thins the proposal's membranes to lines",
    "wrong_px: fraction of pixels whose class differs; thresholds: a pixel is cell when p > t",
];

pub(crate) fn cmd_eval(a: EvalArgs) -> Result<()> {
    check_task_memory(&a.truth, bytes_per_pixel::EVAL, "eval")?;
    // With --model: the images (a stack, or a collection of images that differ, their truth
    // file by file), checked against the truth before predicting.
    let (truth, stacks) = match (&a.model, &a.images) {
        (Some(_), Some(images)) => {
            let (stacks, truth) = images_and_labels(images, &a.truth, a.label_encoding)?;
            (truth, stacks)
        }
        _ => (load_labels(&a.truth, a.label_encoding)?, Vec::new()),
    };
    let classes = crate::data::labels::class_count(&truth);
    let truth_classes: Vec<Plane<u8>> = truth.iter().map(|l| l.classes.clone()).collect();
    let truth_cell: Vec<Plane<bool>> = truth.iter().map(|l| l.classes.map(|c| c >= 2)).collect();
    let mut report = EvalReport {
        definitions: EVAL_DEFINITIONS,
        mask: None,
        probabilities: None,
        model_mask: None,
        model_mask_without_gap_closing: None,
        model_mask_with_gap_closing: None,
        gap_closing_sweep: Vec::new(),
    };
    if let Some(model_dir) = a.model.as_ref().filter(|_| !stacks.is_empty()) {
        let ckpt = load_checkpoint(model_dir)?;
        let Collect { masks, p_cell, .. } = predict_for_eval(&a, &ckpt, &stacks)?;
        let decision = ckpt.meta.decision();
        report.model_mask = Some((
            decision,
            crate::metrics::mask_scores(&masks, &truth_cell, None),
        ));
        if p_cell.len() == masks.len() {
            let t = decision.threshold.unwrap_or(0.5);
            let seeds = decision.gap_closing.unwrap_or_default();
            let (plain, closed): (Vec<Plane<bool>>, Vec<Plane<bool>>) = p_cell
                .iter()
                .map(|p| (p.map(|v| v > t), close_gaps(p, t, &seeds)))
                .unzip();
            report.model_mask_without_gap_closing =
                Some(crate::metrics::mask_scores(&plain, &truth_cell, None));
            report.model_mask_with_gap_closing =
                Some(crate::metrics::mask_scores(&closed, &truth_cell, None));
            report.probabilities = Some(crate::metrics::threshold_scores(
                &p_cell,
                &truth_cell,
                &crate::metrics::challenge_thresholds(),
                true,
            ));
            if a.sweep_gap_closing {
                report.gap_closing_sweep = sweep_gap_closing(&p_cell, &truth_cell);
            }
        }
    } else if let Some(prediction) = &a.prediction {
        let stack = load_stack(prediction)?;
        if stack.kind == crate::data::PixelKind::F32 {
            // One cell-probability page per slice, or `predict --probabilities` (a hyperstack
            // with one channel per class: class 2 is the cell).
            let cell = match stack.channels {
                1 => 0,
                2 => 1,
                c => bail!(
                    "{}: {c} channels of floats; expected cell probabilities (one channel) or a two-class probability file (two)",
                    prediction.display()
                ),
            };
            let p_cell: Vec<Plane<f32>> = stack
                .all_planes()?
                .iter()
                .skip(cell)
                .step_by(stack.channels)
                .cloned()
                .collect();
            check_fit(
                (prediction, &sizes(&p_cell)),
                (&a.truth, &sizes(&truth_classes)),
            )?;
            report.probabilities = Some(crate::metrics::threshold_scores(
                &p_cell,
                &truth_cell,
                &crate::metrics::challenge_thresholds(),
                true,
            ));
        } else {
            let pred_raw = load_label_stack(prediction)?;
            check_fit(
                (prediction, &sizes(&pred_raw)),
                (&a.truth, &sizes(&truth_classes)),
            )?;
            // A 0/255 mask is read as binary (0 -> class 1, 255 -> class 2).
            let is_binary = pred_raw
                .iter()
                .all(|p| p.data.iter().all(|&v| v == 0 || v == 255));
            let mut preds = Vec::new();
            for p in &pred_raw {
                preds.push(p.map(|v| {
                    if is_binary {
                        if v == 0 { 1 } else { 2 }
                    } else {
                        v.min(u32::from(u16::MAX)) as u16
                    }
                }));
            }
            report.mask = Some(crate::metrics::evaluate(&preds, &truth_classes, classes));
        }
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The gap closing's scores over seed thresholds 0.5..0.95 and the challenge's thresholds
/// 0.01 to 0.5.
fn sweep_gap_closing(p_cell: &[Plane<f32>], truth_cell: &[Plane<bool>]) -> Vec<GapClosingScore> {
    let mut out = Vec::new();
    let seeds = [0.5f32, 0.6, 0.7, 0.8, 0.9, 0.95];
    let areas = [0u32, 10, 30, 100];
    let grid = seeds
        .iter()
        .flat_map(|&s| areas.iter().map(move |&a| (s, a)));
    for (seed_threshold, min_seed_area) in grid {
        let cfg = GapClosing {
            seed_threshold,
            min_seed_area,
        };
        for threshold in [0.01f32, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3] {
            if threshold > seed_threshold {
                continue;
            }
            let closed: Vec<Plane<bool>> = p_cell
                .iter()
                .map(|p| close_gaps(p, threshold, &cfg))
                .collect();
            out.push(GapClosingScore {
                seeds: cfg,
                threshold,
                scores: crate::metrics::mask_errors(&closed, truth_cell),
            });
        }
    }
    out
}

/// The mask `predict --binary` writes and the cell probabilities of each slice.
struct Collect {
    decision: Decision,
    masks: Vec<Plane<bool>>,
    p_cell: Vec<Plane<f32>>,
}

impl SliceProgress for Collect {
    fn slice(&mut self, _: usize, probs: Vec<Plane<f32>>) {
        self.masks
            .push(self.decision.classes(&probs).map(|c| c >= 2));
        if let Some(p) = probs.into_iter().nth(1) {
            self.p_cell.push(p);
        }
    }
}

/// The mask `predict --binary` would write and the cell probabilities of every slice of
/// `stacks`, predicted with the model of `ckpt` and its stored views.
fn predict_for_eval(a: &EvalArgs, ckpt: &Checkpoint, stacks: &[Stack]) -> Result<Collect> {
    let device = select_device(a.device)?;
    let model = ckpt.model(&device.device)?;
    let geom = ckpt.meta.unet.geometry();
    let views = &D4::all()[..default_views(a.tta, &ckpt.meta)];
    let mut collect = Collect {
        decision: ckpt.meta.decision(),
        masks: Vec::new(),
        p_cell: Vec::new(),
    };
    let source = a.images.clone().unwrap_or_default();
    for stack in stacks {
        let pick = input_channels(&ckpt.meta.unet, stack.channels, &source)?;
        predict_slices(
            (&model, &ckpt.meta.unet),
            &picked(stack, &pick)?,
            effective_tile(&geom, 388, stack.width, stack.height),
            views,
            (&device.device, &CancelToken::new()),
            &mut collect,
        )?;
    }
    Ok(collect)
}
