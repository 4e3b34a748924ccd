//! `unet-studio eval`: a mask, probability map or model scored against ground truth with the
//! ISBI 2012 challenge's definitions.

use super::common::{bytes_per_pixel, check_task_memory, default_views, load_labels};
use crate::data::{LabelEncoding, Plane, load_label_stack, load_stack};
use crate::ml::infer::decide_classes;
use crate::ml::{
    CancelToken, DeviceChoice, effective_tile, load_checkpoint, predict_fitting, select_device,
};
use crate::postprocess::{GapClosing, close_gaps};
use crate::preprocess::{D4, normalize_percentile};
use anyhow::{Result, bail};
use clap::Args;
use std::path::{Path, PathBuf};

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
    /// The mask `predict --binary` writes with this model: its threshold (`None`: argmax)
    /// and its scores.
    #[serde(skip_serializing_if = "Option::is_none")]
    model_mask: Option<(Option<f32>, crate::metrics::MaskScores)>,
    /// The same mask after gap closing (`predict --close-gaps`), a post-processing step.
    #[serde(skip_serializing_if = "Option::is_none")]
    model_mask_closed_gaps: Option<crate::metrics::MaskScores>,
}

const EVAL_DEFINITIONS: [&str; 4] = [
    "pixel_error: 1 - F-score of cell pixels, counts pooled over slices (ISBI 2012 challenge, Fiji PixelError)",
    "rand_error: 1 - foreground-restricted Rand F-score of 4-connected cell segments, proposal membrane pixels as singletons, counts pooled over slices (ISBI 2012 challenge, Fiji RandError)",
    "vrand_thinned_error: 1 - the same Rand F-score after a seeded watershed thins the proposal's membranes to lines",
    "wrong_px: fraction of pixels whose class differs; thresholds: a pixel is cell when p > t",
];

pub(crate) fn cmd_eval(a: EvalArgs) -> Result<()> {
    check_task_memory(&a.truth, bytes_per_pixel::EVAL, "eval")?;
    let truth = load_labels(&a.truth, a.label_encoding)?;
    let classes = truth
        .iter()
        .map(|l| l.max_class() as usize)
        .max()
        .unwrap_or(0)
        .max(2);
    let truth_classes: Vec<Plane<u8>> = truth.iter().map(|l| l.classes.clone()).collect();
    let truth_cell: Vec<Plane<bool>> = truth.iter().map(|l| l.classes.map(|c| c >= 2)).collect();
    let mut report = EvalReport {
        definitions: EVAL_DEFINITIONS,
        mask: None,
        probabilities: None,
        model_mask: None,
        model_mask_closed_gaps: None,
    };
    if let (Some(model_dir), Some(images)) = (&a.model, &a.images) {
        let ckpt = load_checkpoint(model_dir)?;
        let stack = load_stack(images)?;
        check_same_slices(images, stack.slices.len(), &a.truth, truth.len())?;
        let device = select_device(a.device)?;
        let model = ckpt.model(&device.device)?;
        let geom = ckpt.meta.unet.geometry();
        let views = &D4::all()[..default_views(a.tta, &ckpt.meta)];
        let mut p_cell = Vec::new();
        let mut masks = Vec::new();
        for (i, slice) in stack.slices.iter().enumerate() {
            let tile = effective_tile(&geom, 388, slice.width, slice.height);
            let (_, probs) = predict_fitting(
                &model,
                &ckpt.meta.unet,
                &normalize_percentile(slice),
                tile,
                &device.device,
                &CancelToken::new(),
                &mut |_, _| {},
                &mut |_, _| {},
                views,
            )?;
            check_size(images, i, (slice.width, slice.height), &truth_classes[i])?;
            masks.push(decide_classes(&probs, ckpt.meta.threshold).map(|c| c >= 2));
            if let Some(p) = probs.get(1) {
                p_cell.push(p.clone());
            }
        }
        report.model_mask = Some((
            ckpt.meta.threshold,
            crate::metrics::mask_scores(&masks, &truth_cell, None),
        ));
        if p_cell.len() == masks.len() {
            let t = ckpt.meta.threshold.unwrap_or(0.5);
            let closed: Vec<Plane<bool>> = p_cell
                .iter()
                .map(|p| close_gaps(p, t, &GapClosing::default()))
                .collect();
            report.model_mask_closed_gaps =
                Some(crate::metrics::mask_scores(&closed, &truth_cell, None));
            report.probabilities = Some(crate::metrics::threshold_scores(
                &p_cell,
                &truth_cell,
                &crate::metrics::challenge_thresholds(),
                true,
            ));
        }
    } else if let Some(prediction) = &a.prediction {
        let stack = load_stack(prediction)?;
        if stack.kind == crate::data::PixelKind::F32 {
            let n = truth.len();
            let p_cell: Vec<Plane<f32>> = if stack.slices.len() == n {
                stack.slices
            } else if stack.slices.len() == 2 * n {
                // predict --probabilities: class 1 and class 2 of each slice in turn.
                stack.slices.into_iter().skip(1).step_by(2).collect()
            } else {
                bail!(
                    "{}: {} float pages, but {} has {n} slices (expected {n} cell probability pages, or {} of a two-class probability file)",
                    prediction.display(),
                    stack.slices.len(),
                    a.truth.display(),
                    2 * n
                );
            };
            for (i, p) in p_cell.iter().enumerate() {
                check_size(prediction, i, (p.width, p.height), &truth_classes[i])?;
            }
            report.probabilities = Some(crate::metrics::threshold_scores(
                &p_cell,
                &truth_cell,
                &crate::metrics::challenge_thresholds(),
                true,
            ));
        } else {
            let pred_raw = load_label_stack(prediction)?;
            check_same_slices(prediction, pred_raw.len(), &a.truth, truth.len())?;
            // A 0/255 mask is read as binary (0 -> class 1, 255 -> class 2).
            let is_binary = pred_raw
                .iter()
                .all(|p| p.data.iter().all(|&v| v == 0 || v == 255));
            let mut preds = Vec::new();
            for (i, p) in pred_raw.iter().enumerate() {
                check_size(prediction, i, (p.width, p.height), &truth_classes[i])?;
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

fn check_same_slices(a: &Path, na: usize, b: &Path, nb: usize) -> Result<()> {
    if na != nb {
        bail!(
            "{} has {na} slices but {} has {nb}",
            a.display(),
            b.display()
        );
    }
    Ok(())
}

fn check_size(path: &Path, i: usize, size: (usize, usize), truth: &Plane<u8>) -> Result<()> {
    if size != (truth.width, truth.height) {
        bail!(
            "{}: slice {i} is {}x{} but the truth is {}x{}",
            path.display(),
            size.0,
            size.1,
            truth.width,
            truth.height
        );
    }
    Ok(())
}
