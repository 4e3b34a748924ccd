//! The training loop: batch 1 of the largest tile, random tiles centred on labelled pixels,
//! elastic deformation and other augmentation on the fly, weighted loss, SGD with momentum
//! 0.99 (paper) or Adam on a learning-rate schedule, validation with keep-best, atomic
//! checkpoints of the best network and of the last state.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::module::Module as _;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use crate::data::{LabelSlice, Plane};
use crate::ml::cancel::CancelToken;
use crate::ml::checkpoint::{CheckpointMeta, now_unix_s, save_checkpoint};
use crate::ml::compute_pool::in_compute_pool;
use crate::ml::config::TrainConfig;
use crate::ml::device::ComputeDevice;
use crate::ml::error::MlError;
use crate::ml::infer::{check_channels, image_tensor, predict_probabilities, tensor_values};
use crate::ml::loss::weighted_cross_entropy;
use crate::ml::unet::{UNet, UNetConfig};
use crate::postprocess::{Decision, choose_decision};
use crate::preprocess::{D4, Rng, class_weights, weight_map};

use super::begin::Begin;
use super::events::{StartFrom, TrainEvent, TrainOutcome};
use super::set::{
    HeldOutSlice, Sample, SliceTargets, TrainSet, draw_sample, target_tensors_with,
    validation_masks,
};
use super::validate::{Best, Validator, held_out_probabilities};

/// [`train`], started again with a smaller tile when the device runs out of memory (see
/// [`crate::ml::memory::with_smaller_tiles`]); `on_retry(from, to)` is told first.
#[allow(clippy::too_many_arguments)]
pub fn train_fitting(
    set: &TrainSet,
    cfg: &TrainConfig,
    start: StartFrom,
    device: &ComputeDevice,
    out_dir: Option<&Path>,
    cancel: &CancelToken,
    on_retry: &mut dyn FnMut(usize, usize),
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<TrainOutcome, MlError> {
    let unet = start.unet().clone();
    crate::ml::memory::with_smaller_tiles(&unet, cfg.tile_out, on_retry, &mut |tile| {
        let cfg = TrainConfig {
            tile_out: tile,
            ..cfg.clone()
        };
        train(set, &cfg, start.clone(), device, out_dir, cancel, on_event)
    })
}

/// Trains a U-Net. Checkpoints go to `out_dir` (when given) every `checkpoint_every`
/// iterations and at the end, also when cancelled; a non-finite loss stops the run with an
/// error and leaves the last checkpoint as it was.
pub fn train(
    set: &TrainSet,
    cfg: &TrainConfig,
    start: StartFrom,
    device: &ComputeDevice,
    out_dir: Option<&Path>,
    cancel: &CancelToken,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<TrainOutcome, MlError> {
    // Initial weights and dropout masks come from the device's generator: seed it too.
    device.device.seed(cfg.seed);
    let ad = device.device.clone().autodiff();
    let begin = Begin::new(start, cfg, &ad)?;
    check_set(set, &begin.unet)?;
    if set.classes() > begin.unet.classes {
        return Err(MlError::NoLabels(format!(
            "the labels use class {} but the network predicts {} classes",
            set.classes(),
            begin.unet.classes
        )));
    }
    let geom = begin.unet.geometry();
    let tile_out = geom.nearest_valid_output(cfg.tile_out.max(1));
    let tile_in = geom
        .input_size(tile_out)
        .ok_or_else(|| MlError::Tile(format!("no input size gives a {tile_out} px output")))?;
    let wanted = cfg.parent_weight > 0.0 || parent_truth_applies(set, cfg, &begin);
    let parent = match wanted {
        true => parent_predictions(set, &begin, tile_out, device, cancel)?,
        false => None,
    };
    let with_truth = with_parent_truth(set, parent.as_deref(), cfg, &begin);
    let set = with_truth.as_ref().unwrap_or(set);
    let parent = parent.filter(|_| cfg.parent_weight > 0.0);
    let data = Prepared::new(set, cfg, begin.unet.classes, parent)?;
    let cfg = &data.cfg;
    on_event(TrainEvent::Started {
        device: device.description.clone(),
        tile_out,
        tile_in,
        train_pixels: data.train_pixels,
        val_pixels: data.val_pixels,
        first_iteration: begin.first_iteration,
    });
    let validator = Validator {
        unet: &begin.unet,
        set,
        weights: &data.full_weights,
        masks: &data.val_masks,
        val_pixels: data.val_pixels,
        tile_out,
        device,
        cancel,
        keep_best: cfg.keep_best,
        start_decision: begin.decision,
        // Against the starting model's own segmentation every network is scored by the rule
        // that made it (the starting model then scores 0), and keeps that rule.
        fixed_rule: with_truth.is_some(),
    };
    let kept = begin.kept_best(cfg, out_dir);
    let mut run = Run {
        set,
        cfg,
        data: &data,
        tiles: (tile_out, tile_in),
        device,
        labels_hash: set.labels_hash(),
        unet: begin.unet.clone(),
        model: begin.model,
        optim: begin.optim,
        iteration: begin.first_iteration,
        losses: Vec::with_capacity(cfg.iterations.min(100_000) as usize),
        best: None,
        validation: None,
    };
    // A resumed run first takes back the network its earlier part kept (the best, saved in
    // `out_dir` beside the last state): resuming must neither forget it nor replace it with a
    // worse one.
    if let Some(kept) = kept
        && validator.can()
    {
        let model = kept.model(&device.device)?;
        let (_, event) = validator.round(model, kept.meta.iteration, &mut run.best)?;
        on_event(event);
    }
    // A run from a checkpoint validates the starting network first, so that a run that only
    // makes it worse hands the starting network back.
    if begin.from_checkpoint && cfg.keep_best && validator.can() {
        let (v, event) = validator.round(run.model.valid(), run.iteration, &mut run.best)?;
        run.validation = Some(v);
        on_event(event);
    }
    let (run, cancelled) = run.steps(&ad, &validator, out_dir, cancel, on_event)?;
    // Views and decision rule are chosen on real held-out slices only (the starting
    // network's own segmentation says nothing about averaging views or closing gaps).
    run.finish(
        (begin.decision, begin.threshold_views, with_truth.is_none()),
        &validator,
        (out_dir, cancel, cancelled),
        on_event,
    )
}

impl Run<'_> {
    /// The end of a run: views and decision rule chosen (when `choose`), the last state and
    /// the kept network saved, the outcome.
    fn finish(
        mut self,
        (start_decision, start_views, choose): (Decision, Option<u8>, bool),
        validator: &Validator<'_>,
        (out_dir, cancel, cancelled): (Option<&Path>, &CancelToken, bool),
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<TrainOutcome, MlError> {
        let views = if choose {
            self.choose_decision(validator, cancel, on_event)?
        } else {
            None
        };
        let threshold_views = views.or(start_views);
        if let Some(dir) = out_dir
            && (!self.losses.is_empty() || self.best.is_some())
        {
            let mut last_meta = self.meta(start_decision);
            last_meta.threshold_views = threshold_views;
            let path = self.save(dir, last_meta)?;
            on_event(TrainEvent::Checkpoint {
                iteration: self.iteration,
                path,
            });
        }
        let (model, model_iteration, decision, validation) = match self.best {
            Some(b) => (b.model, b.iteration, b.decision, Some(b.validation)),
            None => (
                self.model.valid(),
                self.iteration,
                start_decision,
                self.validation,
            ),
        };
        Ok(TrainOutcome {
            model,
            unet: self.unet,
            iteration: self.iteration,
            losses: self.losses,
            validation,
            cancelled,
            model_iteration,
            decision,
            threshold_views,
            config: self.cfg.clone(),
        })
    }
}

/// Refuses a set without images, with labels of another size than their image, or with
/// images of other channels than the network takes.
fn check_set(set: &TrainSet, unet: &UNetConfig) -> Result<(), MlError> {
    for image in set
        .images
        .iter()
        .chain(set.held_out.iter().map(|h| &h.image))
    {
        check_channels(unet, image)?;
    }
    if set.images.is_empty() || set.images.len() != set.labels.len() {
        return Err(MlError::NoLabels(
            "training needs at least one image with labels".into(),
        ));
    }
    for (i, (im, l)) in set.images.iter().zip(&set.labels).enumerate() {
        let size = (l.classes.width, l.classes.height);
        if let Some(c) = im.iter().find(|c| (c.width, c.height) != size) {
            return Err(MlError::NoLabels(format!(
                "slice {i}: image is {}x{} but labels are {}x{}",
                c.width, c.height, size.0, size.1
            )));
        }
    }
    Ok(())
}

/// The labels split into training and held-out blocks, the class weights, the weight maps
/// (computed once, before training, as in the paper) and the pixels tiles are centred on.
struct Prepared {
    /// The run's config with the class weights it uses (saved with every checkpoint, so a
    /// fine-tune can keep them).
    cfg: TrainConfig,
    val_masks: Vec<Plane<bool>>,
    /// The classes trained on: the labels outside the held-out blocks.
    train_classes: Vec<Plane<u8>>,
    /// In a fine-tune, the starting network's class probabilities of every slice: the soft
    /// targets of the pixels the user left unlabelled (empty otherwise).
    parent: Vec<Vec<Plane<f32>>>,
    full_weights: Vec<Plane<f32>>,
    train_weights: Vec<Plane<f32>>,
    /// Per slice, the training pixels (weight > 0).
    pixels: Vec<Vec<u32>>,
    /// Running totals of `pixels`' lengths.
    cumulative: Vec<usize>,
    train_pixels: usize,
    val_pixels: usize,
}

impl Prepared {
    fn new(
        set: &TrainSet,
        cfg: &TrainConfig,
        classes: usize,
        parent: Option<Vec<Vec<Plane<f32>>>>,
    ) -> Result<Self, MlError> {
        let val_masks = validation_masks(set, cfg);
        let masked = |l: &LabelSlice, m: &Plane<bool>| {
            let mut l = l.clone();
            for (c, &v) in l.classes.data.iter_mut().zip(&m.data) {
                if v {
                    *c = 0;
                }
            }
            l
        };
        let train_labels: Vec<LabelSlice> = set
            .labels
            .iter()
            .zip(&val_masks)
            .map(|(l, m)| masked(l, m))
            .collect();
        let cw = run_class_weights(cfg, &train_labels, classes)?;
        let cfg = TrainConfig {
            class_weights: if cfg.weights.balance_classes {
                cw[1..].to_vec()
            } else {
                Vec::new()
            },
            ..cfg.clone()
        };
        let full_weights: Vec<Plane<f32>> = set
            .labels
            .iter()
            .map(|l| weight_map(l, &cw, &cfg.weights))
            .collect();
        let mut train_weights: Vec<Plane<f32>> = full_weights
            .iter()
            .zip(&val_masks)
            .map(|(w, m)| {
                let mut w = w.clone();
                for (x, &v) in w.data.iter_mut().zip(&m.data) {
                    if v {
                        *x = 0.0;
                    }
                }
                w
            })
            .collect();
        let train_classes: Vec<Plane<u8>> =
            train_labels.iter().map(|l| l.classes.clone()).collect();
        // Tiles are centred on the user's labels only; the parent's predictions fill the rest.
        let pixels: Vec<Vec<u32>> = train_weights
            .iter()
            .map(|w| {
                let labelled = w.data.iter().enumerate().filter(|(_, v)| **v > 0.0);
                labelled.map(|(i, _)| i as u32).collect()
            })
            .collect();
        let cumulative: Vec<usize> = pixels
            .iter()
            .scan(0, |acc, p| {
                *acc += p.len();
                Some(*acc)
            })
            .collect();
        let train_pixels = cumulative.last().copied().unwrap_or(0);
        let parent = parent.unwrap_or_default();
        let held_out = (&val_masks[..], &set.labels[..]);
        weigh_parent_pixels(&parent, held_out, &cw, &cfg, &mut train_weights);
        if train_pixels == 0 {
            return Err(MlError::NoLabels(
                "no labelled pixels to train on (all pixels are 0 = unlabelled, or all were held out)"
                    .into(),
            ));
        }
        let val_pixels = set
            .labels
            .iter()
            .zip(&val_masks)
            .map(|(l, m)| {
                let held = l.classes.data.iter().zip(&m.data);
                held.filter(|(c, v)| **c > 0 && **v).count()
            })
            .sum();
        Ok(Self {
            cfg,
            val_masks,
            train_classes,
            parent,
            full_weights,
            train_weights,
            pixels,
            cumulative,
            train_pixels,
            val_pixels,
        })
    }
}

/// In a fine-tune: the starting network's class probabilities of every training slice
/// (`None` otherwise).
fn parent_predictions(
    set: &TrainSet,
    begin: &Begin,
    tile_out: usize,
    device: &ComputeDevice,
    cancel: &CancelToken,
) -> Result<Option<Vec<Vec<Plane<f32>>>>, MlError> {
    if !begin.fine_tune {
        return Ok(None);
    }
    let parent = begin.model.valid();
    let tile = tile_out.max(begin.unet.geometry().nearest_valid_output(196));
    let mut out = Vec::with_capacity(set.images.len());
    for image in &set.images {
        out.push(predict_probabilities(
            &parent,
            &begin.unet,
            image,
            tile,
            &device.device,
            cancel,
            &mut |_, _| {},
        )?);
    }
    Ok(Some(out))
}

/// A fine-tune without held-out slices is validated on the starting network's own
/// segmentation of the training slices, corrected by the user's labels ([`parent_truth`]):
/// the labels alone (thin strokes, away from boundaries) cannot see a network that opens
/// gaps in membranes elsewhere, and a network that does is then not kept. Returns that set
/// (`None`: validate on `set` as it is).
fn with_parent_truth(
    set: &TrainSet,
    parent: Option<&[Vec<Plane<f32>>]>,
    cfg: &TrainConfig,
    begin: &Begin,
) -> Option<TrainSet> {
    let parent = parent?;
    parent_truth_applies(set, cfg, begin).then(|| TrainSet {
        held_out: parent_truth(set, parent, begin.decision),
        ..set.clone()
    })
}

/// Whether a run validates on the starting network's own segmentation ([`with_parent_truth`]):
/// a fine-tune of a two-class network that keeps its best network and has no held-out slices.
fn parent_truth_applies(set: &TrainSet, cfg: &TrainConfig, begin: &Begin) -> bool {
    begin.fine_tune && set.held_out.is_empty() && cfg.keep_best && begin.unet.classes == 2
}

/// The training slices as held-out slices whose truth is the starting network's segmentation
/// (cell where its `decision` rule says so) with the user's labels put over it.
fn parent_truth(
    set: &TrainSet,
    parent: &[Vec<Plane<f32>>],
    decision: Decision,
) -> Vec<HeldOutSlice> {
    set.images
        .iter()
        .zip(&set.labels)
        .zip(parent)
        .map(|((image, labels), probs)| {
            let mut cell = decision.classes(probs).map(|c| c >= 2);
            for (t, &l) in cell.data.iter_mut().zip(&labels.classes.data) {
                match l {
                    0 => {}
                    1 => *t = false,
                    _ => *t = true,
                }
            }
            HeldOutSlice {
                image: image.clone(),
                cell,
            }
        })
        .collect()
}

/// Gives the unlabelled pixels (outside the held-out blocks and the user's labels) the weight
/// `parent_weight` times the class weight the starting network expects there (its
/// probabilities times the class weights), so that they learn its predictions as soft
/// targets ([`super::set::target_tensors_with`]).
fn weigh_parent_pixels(
    parent: &[Vec<Plane<f32>>],
    (val_masks, labels): (&[Plane<bool>], &[LabelSlice]),
    cw: &[f32],
    cfg: &TrainConfig,
    weights: &mut [Plane<f32>],
) {
    for (s, probs) in parent.iter().enumerate() {
        for i in 0..weights[s].data.len() {
            if labels[s].classes.data[i] != 0 || val_masks[s].data[i] {
                continue;
            }
            let expected: f32 = probs
                .iter()
                .enumerate()
                .map(|(c, p)| p.data[i] * cw.get(c + 1).copied().unwrap_or(1.0))
                .sum();
            weights[s].data[i] = cfg.parent_weight * expected;
        }
    }
}

/// The class weights `w_c` (index 0: unlabelled) of a run: fixed ones from the config, else
/// computed from the training labels' frequencies.
fn run_class_weights(
    cfg: &TrainConfig,
    train_labels: &[LabelSlice],
    classes: usize,
) -> Result<Vec<f32>, MlError> {
    match &cfg.class_weights[..] {
        _ if !cfg.weights.balance_classes => Ok(class_weights(train_labels, classes)),
        [] => Ok(class_weights(train_labels, classes)),
        fixed if fixed.len() == classes && fixed.iter().all(|w| w.is_finite() && *w > 0.0) => {
            Ok(std::iter::once(0.0).chain(fixed.iter().copied()).collect())
        }
        fixed => Err(MlError::NoLabels(format!(
            "{} fixed class weights for {} classes (each must be positive)",
            fixed.len(),
            classes
        ))),
    }
}

/// The state of a run between steps.
struct Run<'a> {
    set: &'a TrainSet,
    cfg: &'a TrainConfig,
    data: &'a Prepared,
    /// Output and input tile edges.
    tiles: (usize, usize),
    device: &'a ComputeDevice,
    labels_hash: String,
    unet: UNetConfig,
    model: UNet,
    optim: ModuleOptimizer,
    iteration: u64,
    losses: Vec<f32>,
    /// The best validation so far.
    best: Option<Best>,
    /// The last validation's `(loss, wrong px)` on the held-out blocks.
    validation: Option<(f32, f32)>,
}

impl Run<'_> {
    /// Runs the steps until the iterations or the time budget end, or cancellation (then
    /// returns `true`), validating and checkpointing on the way.
    fn steps(
        mut self,
        ad: &Device,
        validator: &Validator<'_>,
        out_dir: Option<&Path>,
        cancel: &CancelToken,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<(Self, bool), MlError> {
        let cfg = self.cfg;
        let first_iteration = self.iteration;
        let mut rng = Rng::new(cfg.seed.wrapping_add(first_iteration.wrapping_mul(0x9E37)));
        let t0 = Instant::now();
        let budget_s = cfg.minutes.map(|m| (m * 60.0).max(0.0));
        // Time spent paused does not count in the speed.
        let mut paused = Duration::ZERO;
        let running_s = |paused: Duration| t0.elapsed().saturating_sub(paused).as_secs_f64();
        for step in 0..cfg.iterations {
            paused += cancel.wait_while_paused();
            if cancel.is_cancelled() {
                return Ok((self, true));
            }
            let time_progress = budget_s.map_or(0.0, |b| running_s(paused) / b.max(1e-9));
            if time_progress >= 1.0 {
                break;
            }
            let progress = (step as f64 / cfg.iterations.max(1) as f64).max(time_progress);
            let lr = cfg.optimizer.lr() * cfg.schedule.factor(step, progress);
            let Some(sample) = self.sample(&mut rng) else {
                break;
            };
            // The network moves into the step and back: a clone would share its tensors and
            // keep the optimiser from updating them in place.
            let (model, loss) = train_step(
                self.model,
                &mut self.optim,
                ad,
                (&sample, self.unet.classes),
                lr,
                self.iteration,
            )?;
            self.model = model;
            self.iteration += 1;
            self.losses.push(loss);
            on_event(TrainEvent::Iteration {
                iteration: self.iteration,
                loss,
                its_per_s: (step + 1) as f32 / running_s(paused).max(1e-6) as f32,
            });
            let last =
                step + 1 == cfg.iterations || budget_s.is_some_and(|b| running_s(paused) >= b);
            let every = |n: u64| n > 0 && (step + 1) % n == 0;
            if every(cfg.preview_every) && !last {
                on_event(TrainEvent::Snapshot {
                    iteration: self.iteration,
                    model: Box::new(self.model.valid()),
                });
            }
            if validator.can() && (every(cfg.val_every) || last) {
                let (v, event) =
                    validator.round(self.model.valid(), self.iteration, &mut self.best)?;
                self.validation = Some(v);
                on_event(event);
            }
            if let Some(dir) = out_dir
                && every(cfg.checkpoint_every)
                && !last
            {
                let path = self.save(dir, self.meta(Decision::default()))?;
                on_event(TrainEvent::Checkpoint {
                    iteration: self.iteration,
                    path,
                });
            }
            if last {
                break;
            }
        }
        Ok((self, false))
    }

    /// A training sample; drawn again (up to 9 times) when augmentation pushed every
    /// labelled pixel out of the output tile.
    fn sample(&self, rng: &mut Rng) -> Option<Sample> {
        let d = self.data;
        let (tile_out, tile_in) = self.tiles;
        let mut sample = None;
        for _ in 0..9 {
            let s = draw_sample(
                self.set,
                &SliceTargets {
                    classes: &d.train_classes,
                    weights: &d.train_weights,
                    parent: &d.parent,
                },
                &d.pixels,
                &d.cumulative,
                tile_out,
                tile_in,
                self.cfg,
                rng,
            );
            let usable = s.weights.data.iter().any(|&w| w > 0.0);
            sample = Some(s);
            if usable {
                break;
            }
        }
        sample
    }

    /// How `predict` should use the kept network by default, chosen on the held-out slices:
    /// one view or the mean of the 8 flips and rotations (which smooths the probabilities
    /// and shifts the best threshold), each with the decision rule ([`choose_decision`]: a
    /// threshold, or gap closing) with the lowest sum of Rand and pixel errors. Eight views
    /// cost eight predictions, so they are chosen only when they lower that sum by at least
    /// [`EIGHT_VIEWS_GAIN`]. On ISBI 2012 either has won, depending on the network
    /// (docs/results.md).
    fn choose_decision(
        &mut self,
        validator: &Validator<'_>,
        cancel: &CancelToken,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<Option<u8>, MlError> {
        let Some(b) = &mut self.best else {
            return Ok(None);
        };
        if self.set.held_out.is_empty() || cancel.is_cancelled() {
            return Ok(None);
        }
        let mut choices = Vec::with_capacity(2);
        for views in [&D4::all()[..1], &D4::all()[..]] {
            let Some((p_cell, truth)) = held_out_probabilities(
                &b.model,
                &self.unet,
                &self.set.held_out,
                validator.tile_out,
                self.device,
                cancel,
                views,
            )?
            else {
                return Ok(None);
            };
            let Some(choice) = choose_decision(&p_cell, &truth) else {
                return Ok(None);
            };
            choices.push((views.len(), choice));
        }
        let [one, eight] = [choices[0], choices[1]];
        let (chosen, other) = if eight.1.cost() < one.1.cost() * (1.0 - EIGHT_VIEWS_GAIN) {
            (eight, one)
        } else {
            (one, eight)
        };
        b.decision = chosen.1.decision;
        on_event(TrainEvent::Threshold {
            threshold: chosen.1.decision.threshold.unwrap_or(0.5),
            gap_closing: chosen.1.decision.gap_closing,
            views: chosen.0,
            rand_error: chosen.1.scores.rand_error,
            pixel_error: chosen.1.scores.pixel_error,
            other_views: other.0,
            other_rand_error: other.1.scores.rand_error,
            other_pixel_error: other.1.scores.pixel_error,
        });
        Ok(Some(chosen.0 as u8))
    }

    /// The checkpoint metadata of the current state.
    fn meta(&self, decision: Decision) -> CheckpointMeta {
        CheckpointMeta {
            unet: self.unet.clone(),
            train: Some(self.cfg.clone()),
            iteration: self.iteration,
            created_unix_s: now_unix_s(),
            train_loss: recent_mean(&self.losses),
            val_loss: self.validation.map(|v| v.0),
            labels_hash: Some(self.labels_hash.clone()),
            note: format!("trained on {}", self.device.description),
            threshold: decision.threshold,
            threshold_views: None,
            gap_closing: decision.gap_closing,
            gap_closing_off: None,
        }
    }

    /// [`save_run`] of the current state.
    fn save(&self, dir: &Path, last_meta: CheckpointMeta) -> Result<PathBuf, MlError> {
        save_run(
            dir,
            last_meta,
            &self.model.valid(),
            &self.optim,
            self.best.as_ref(),
        )
    }
}

/// One optimisation step of `model` on `sample` at learning rate `lr` (the step after
/// `iteration`); returns the updated network and the step's loss.
fn train_step(
    model: UNet,
    optim: &mut ModuleOptimizer,
    ad: &Device,
    (sample, classes): (&Sample, usize),
    lr: f64,
    iteration: u64,
) -> Result<(UNet, f32), MlError> {
    in_compute_pool(|| {
        let x = image_tensor(&sample.image, ad);
        let (target, weights) =
            target_tensors_with(&sample.classes, &sample.soft, &sample.weights, classes, ad);
        let logits = model.forward(x);
        let loss = weighted_cross_entropy(logits, target, weights);
        let loss_value = tensor_values(loss.clone())?
            .first()
            .copied()
            .unwrap_or(f32::NAN);
        if !loss_value.is_finite() {
            return Err(MlError::Diverged {
                iteration: iteration + 1,
            });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        Ok((optim.step(lr, model, grads), loss_value))
    })
}

/// The folder of a run's last state (weights and optimiser, to resume from) when the run keeps
/// its best network as the model.
pub const LAST_STATE_DIR: &str = "last";

/// How much lower (relative) the sum of Rand and pixel errors on held-out slices must be
/// with 8 views than with one for `predict` to average 8 by default (they cost 8x).
pub const EIGHT_VIEWS_GAIN: f64 = 0.05;

/// Where `--resume` finds the state of the run saved in `dir`.
pub fn resume_dir(dir: &Path) -> PathBuf {
    let last = dir.join(LAST_STATE_DIR);
    if crate::ml::checkpoint::checkpoint_path(&last).exists() {
        last
    } else {
        dir.to_path_buf()
    }
}

/// Saves a run. With a best network: that network (weights only, its own iteration, loss
/// and threshold) as the model in `dir`, and the last state with its optimiser in
/// `dir/last`. Without: the last state in `dir`. Returns the model's path.
fn save_run(
    dir: &Path,
    last_meta: CheckpointMeta,
    last: &UNet,
    optim: &ModuleOptimizer,
    best: Option<&Best>,
) -> Result<PathBuf, MlError> {
    let Some(b) = best else {
        return save_checkpoint(dir, &last_meta, last, Some(optim));
    };
    let reached = last_meta.iteration;
    save_checkpoint(&dir.join(LAST_STATE_DIR), &last_meta, last, Some(optim))?;
    let meta = CheckpointMeta {
        iteration: b.iteration,
        val_loss: Some(b.validation.0),
        threshold: b.decision.threshold,
        threshold_views: last_meta.threshold_views,
        gap_closing: b.decision.gap_closing,
        note: format!(
            "{}; best validation at iteration {} of {reached}",
            last_meta.note, b.iteration
        ),
        ..last_meta
    };
    save_checkpoint(dir, &meta, &b.model, None)
}

fn recent_mean(losses: &[f32]) -> Option<f32> {
    let tail = &losses[losses.len().saturating_sub(20)..];
    (!tail.is_empty()).then(|| tail.iter().sum::<f32>() / tail.len() as f32)
}
