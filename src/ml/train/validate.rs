//! Validation during a run: the loss and wrong pixels on held-out label blocks, the paper's
//! Rand error on held-out slices with its best threshold, and the rule that keeps the best
//! network ([`Validator`]).

use crate::data::Plane;
use crate::ml::cancel::CancelToken;
use crate::ml::device::ComputeDevice;
use crate::ml::error::MlError;
use crate::ml::infer::{predict_probabilities_tta, predict_probabilities_where};
use crate::ml::unet::{UNet, UNetConfig};
use crate::postprocess::{Decision, choose_decision, rule_errors};
use crate::preprocess::D4;

use super::events::TrainEvent;
use super::set::{HeldOutSlice, TrainSet};

/// What validation needs, and its rule for the best network.
pub(crate) struct Validator<'a> {
    pub(crate) unet: &'a UNetConfig,
    pub(crate) set: &'a TrainSet,
    /// Weight maps of the full labels.
    pub(crate) weights: &'a [Plane<f32>],
    /// Held-out blocks per slice.
    pub(crate) masks: &'a [Plane<bool>],
    /// Labelled pixels in the held-out blocks.
    pub(crate) val_pixels: usize,
    pub(crate) tile_out: usize,
    pub(crate) device: &'a ComputeDevice,
    pub(crate) cancel: &'a CancelToken,
    pub(crate) keep_best: bool,
    /// The starting network's decision rule, kept when there are no held-out slices.
    pub(crate) start_decision: Decision,
    /// Score the held-out slices by `start_decision` instead of the best plain threshold
    /// (they are the starting network's own segmentation by that rule).
    pub(crate) fixed_rule: bool,
}

impl Validator<'_> {
    /// Whether there is anything to validate on.
    pub(crate) fn can(&self) -> bool {
        self.val_pixels > 0 || !self.set.held_out.is_empty()
    }

    /// Validates `valid` (the network at `iteration`), makes it `best` when it scores lower
    /// (the Rand error on held-out slices, else the loss on held-out blocks), and returns the
    /// `(loss, wrong px)` on the blocks and the event to send.
    pub(crate) fn round(
        &self,
        valid: UNet,
        iteration: u64,
        best: &mut Option<Best>,
    ) -> Result<((f32, f32), TrainEvent), MlError> {
        let v = if self.val_pixels > 0 {
            validate(
                &valid,
                self.unet,
                self.set,
                self.weights,
                self.masks,
                self.tile_out,
                self.device,
                self.cancel,
            )?
        } else {
            (f32::NAN, f32::NAN)
        };
        // One view during the run (fast); the kept network's rule is chosen again with the
        // views `predict` averages at the end.
        let held = held_out_probabilities(
            &valid,
            self.unet,
            &self.set.held_out,
            self.tile_out,
            self.device,
            self.cancel,
            &[D4::default()],
        )?
        .and_then(|(p_cell, truth)| {
            if self.fixed_rule {
                let rand = rule_errors(self.start_decision, &p_cell, &truth).rand_error;
                Some((rand, rand, self.start_decision))
            } else {
                choose_decision(&p_cell, &truth)
                    .map(|c| (c.cost(), c.scores.rand_error, c.decision))
            }
        });
        let score = held.map_or(f64::from(v.0), |(score, _, _)| score);
        let is_best = best.as_ref().is_none_or(|b| score < b.score);
        if is_best && self.keep_best {
            *best = Some(Best {
                score,
                iteration,
                model: valid,
                decision: held.map_or(self.start_decision, |(_, _, d)| d),
                validation: v,
            });
        }
        let event = TrainEvent::Validation {
            iteration,
            loss: v.0,
            pixel_error: v.1,
            rand_error: held.map(|(_, rand, _)| rand),
            score: held.map(|(score, _, _)| score),
            best: is_best,
        };
        Ok((v, event))
    }
}

/// The best validation of a run so far.
pub(crate) struct Best {
    /// Lower is better.
    pub(crate) score: f64,
    pub(crate) iteration: u64,
    pub(crate) model: UNet,
    /// Its decision rule: the best plain threshold during the run; at the end, the rule
    /// chosen with the views `predict` will average (`Run::choose_decision`).
    pub(crate) decision: Decision,
    /// `(loss, pixel error)` on the held-out blocks.
    pub(crate) validation: (f32, f32),
}

/// Cell probabilities of the held-out slices and their truth's cell pixels.
pub(crate) type HeldOutPredictions = (Vec<Plane<f32>>, Vec<Plane<bool>>);

/// The cell probabilities of `model` on the held-out slices (the mean over `views`) and
/// their truth; `None` without held-out slices or for more than two classes.
pub(crate) fn held_out_probabilities(
    model: &UNet,
    unet: &UNetConfig,
    held_out: &[HeldOutSlice],
    tile_out: usize,
    device: &ComputeDevice,
    cancel: &CancelToken,
    views: &[D4],
) -> Result<Option<HeldOutPredictions>, MlError> {
    if held_out.is_empty() || unet.classes != 2 {
        return Ok(None);
    }
    let mut p_cell = Vec::with_capacity(held_out.len());
    for h in held_out {
        let mut probs = predict_probabilities_tta(
            model,
            unet,
            &h.image,
            tile_out.max(unet.geometry().nearest_valid_output(196)),
            &device.device,
            cancel,
            &mut |_, _| {},
            views,
        )?;
        p_cell.push(probs.swap_remove(1));
    }
    let truth: Vec<Plane<bool>> = held_out.iter().map(|h| h.cell.clone()).collect();
    Ok(Some((p_cell, truth)))
}

/// Weighted cross-entropy and pixel error on the held-out labelled pixels.
#[allow(clippy::too_many_arguments)]
pub(crate) fn validate(
    model: &UNet,
    unet: &UNetConfig,
    set: &TrainSet,
    weights: &[Plane<f32>],
    masks: &[Plane<bool>],
    tile_out: usize,
    device: &ComputeDevice,
    cancel: &CancelToken,
) -> Result<(f32, f32), MlError> {
    let (mut num, mut den, mut wrong, mut count) = (0.0f64, 0.0f64, 0usize, 0usize);
    for s in 0..set.images.len() {
        let held: Vec<usize> = (0..masks[s].data.len())
            .filter(|&i| masks[s].data[i] && set.labels[s].classes.data[i] > 0)
            .collect();
        if held.is_empty() {
            continue;
        }
        // Only the tiles that hold held-out pixels are predicted.
        let mask = &masks[s];
        let labels = &set.labels[s].classes;
        let want = |x0: usize, y0: usize, edge: usize| {
            (y0..(y0 + edge).min(mask.height)).any(|y| {
                (x0..(x0 + edge).min(mask.width)).any(|x| mask.at(x, y) && labels.at(x, y) > 0)
            })
        };
        let probs = predict_probabilities_where(
            model,
            unet,
            &set.images[s],
            tile_out.max(unet.geometry().nearest_valid_output(196)),
            &device.device,
            cancel,
            &mut |_, _| {},
            &want,
        )?;
        for i in held {
            let c = set.labels[s].classes.data[i] as usize;
            let w = f64::from(weights[s].data[i]);
            let p = probs[c - 1].data[i].max(1e-12);
            num -= w * f64::from(p.ln());
            den += w;
            let best = (0..probs.len())
                .max_by(|&a, &b| probs[a].data[i].total_cmp(&probs[b].data[i]))
                .unwrap_or(0);
            wrong += usize::from(best + 1 != c);
            count += 1;
        }
    }
    Ok((
        (num / den.max(1e-12)) as f32,
        wrong as f32 / count.max(1) as f32,
    ))
}
