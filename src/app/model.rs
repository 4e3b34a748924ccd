//! Training and prediction from the app: background jobs around the engine, the loss curve,
//! live previews, and the overlay maps computed from the predicted probabilities.

use std::path::PathBuf;

use crate::data::{LabelEncoding, LabelSlice, Plane, encode_labels};
use crate::jobs::Job;
use crate::ml::checkpoint::{CheckpointMeta, now_unix_s};
use crate::ml::infer::decide_classes;
use crate::ml::memory::largest_fitting_tile;
use crate::ml::{
    Checkpoint, ComputeDevice, MlError, OptimizerConfig, Preset, StartFrom, TrainConfig,
    TrainEvent, TrainOutcome, TrainSet, UNet, UNetConfig, entropy, predict_fitting,
    save_checkpoint, train_fitting,
};
use crate::preprocess::{D4, WeightMapConfig, class_weights, normalize_percentile, weight_map};

use super::StudioApp;
use crate::project::models::{LoadedModel, VersionInfo, save_version};

/// The output tile finally used, and the probabilities per predicted slice.
type PredictResult = Result<(usize, Vec<(usize, Vec<Plane<f32>>)>), MlError>;

/// A training job's result: the run and the versions now saved.
type TrainResult = Result<(TrainOutcome, Vec<VersionInfo>), MlError>;

/// What the overlay shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlay {
    /// Nothing.
    None,
    /// Probability of the selected class.
    Probability,
    /// Where the argmax is the selected class.
    Mask,
    /// Entropy of the class distribution, normalised to 0..1: where labels would help most.
    Uncertainty,
    /// The paper's weight map of the painted labels (w_c plus the border term).
    WeightMap,
}

/// Key of a computed weight map: slice, label edits, w0, sigma.
type WeightKey = (usize, u64, u32, u32);

fn weight_key(slice: usize, edits: u64, cfg: &WeightMapConfig) -> WeightKey {
    (slice, edits, cfg.w0.to_bits(), cfg.sigma_px.to_bits())
}

/// Training and prediction state of the app.
pub struct ModelState {
    /// The current network.
    pub model: Option<LoadedModel>,
    /// The running (or last) training started from the current network.
    pub fine_tuning: bool,
    /// `[iteration of the run, Rand error]` of each validation on whole slices (a fine-tune:
    /// against the starting model's segmentation with the labels over it).
    pub val_rand: Vec<[f64; 2]>,
    /// Where training and prediction run.
    pub compute: ComputeDevice,
    /// Preset of a network trained from scratch.
    pub preset: Preset,
    /// Iterations of one training run.
    pub iterations: u64,
    /// Seed of tile sampling and augmentation (fixed: the same labels train the same model).
    pub seed: u64,
    /// `(iteration, loss)` of the running (or last) training.
    pub losses: Vec<[f64; 2]>,
    /// `(iteration, validation loss)`.
    pub val_losses: Vec<[f64; 2]>,
    /// Training speed.
    pub its_per_s: f32,
    /// Probabilities per slice (class `k` at index `k - 1`), from the current network.
    pub probabilities: Vec<Option<Vec<Plane<f32>>>>,
    /// Overlay mode.
    pub overlay: Overlay,
    /// Class the probability / mask overlays show.
    pub overlay_class: u8,
    /// Overlay opacity.
    pub overlay_opacity: f32,
    /// Bumped whenever probabilities change, so the viewer re-uploads the map.
    pub generation: u64,
    pub(super) train_job: Option<Job<TrainResult, TrainEvent>>,
    /// Saved versions of the model of this stack, oldest first.
    pub history: Vec<VersionInfo>,
    pub(super) load_job: Option<Job<Result<LoadedModel, MlError>>>,
    pub(super) save_job: Option<Job<Result<PathBuf, MlError>>>,
    pub(super) predict_job: Option<Job<PredictResult>>,
    /// Weight-map parameters of the weight-map view (and of training).
    pub weights: WeightMapConfig,
    /// The weight map last computed, with its key.
    pub weight_map: Option<(WeightKey, Plane<f32>)>,
    pub(super) weights_job: Option<Job<(WeightKey, Plane<f32>)>>,
    /// Config of the network being trained (for previews before the first model exists).
    training_unet: Option<UNetConfig>,
    /// Output tile edges of training and prediction: the largest that fit the device's
    /// memory (at most [`MAX_TRAIN_TILE_CPU`] for training on the CPU, to keep iterations
    /// short), reduced after an out-of-memory failure.
    pub tile_train: Option<usize>,
    /// See `tile_train`.
    pub tile_predict: Option<usize>,
    /// What happened to the tile sizes, for the model panel.
    pub tile_note: String,
    /// Views averaged by a prediction (test-time augmentation: 1 = off, up to the 8 flips
    /// and quarter turns).
    pub tta_views: usize,
    /// Time limit of a training run in minutes (0: none; the learning-rate schedule follows
    /// whichever of it and the iterations ends first).
    pub minutes: f64,
}

/// Largest output tile of training on the CPU: 100 px keeps an iteration of the lite net near
/// 0.1 s on two cores, so the preview moves while one watches.
pub const MAX_TRAIN_TILE_CPU: usize = 100;
/// Largest output tile otherwise: the paper's 388 px.
pub const MAX_TILE: usize = 388;

impl ModelState {
    /// Fresh state computing on `compute`.
    pub fn new(compute: ComputeDevice) -> Self {
        Self {
            model: None,
            compute,
            preset: Preset::Lite,
            iterations: 200,
            seed: 0,
            losses: Vec::new(),
            val_losses: Vec::new(),
            its_per_s: 0.0,
            probabilities: Vec::new(),
            overlay: Overlay::Probability,
            overlay_class: 2,
            overlay_opacity: 0.5,
            generation: 0,
            train_job: None,
            predict_job: None,
            history: Vec::new(),
            load_job: None,
            save_job: None,
            weights: WeightMapConfig::default(),
            weight_map: None,
            weights_job: None,
            training_unet: None,
            fine_tuning: false,
            val_rand: Vec::new(),
            tile_train: None,
            tile_predict: None,
            tile_note: String::new(),
            tta_views: 1,
            minutes: 0.0,
        }
    }

    /// Makes `m` the current model; predictions then use the views its threshold was chosen
    /// with (the "8 flips and rotations" box follows).
    pub fn set_model(&mut self, m: LoadedModel) {
        self.tta_views = usize::from(m.threshold_views.unwrap_or(1)).clamp(1, 8);
        self.model = Some(m);
    }

    /// The output tile for `unet` on the compute device: the largest that fits its memory,
    /// capped as described at [`Self::tile_train`], and never larger than one that already
    /// ran out of memory.
    pub(super) fn tile_for(&self, unet: &UNetConfig, training: bool) -> usize {
        let cap = if training && !self.compute.is_gpu {
            MAX_TRAIN_TILE_CPU
        } else {
            MAX_TILE
        };
        let known = if training {
            self.tile_train
        } else {
            self.tile_predict
        };
        let cap = known.map_or(cap, |k| k.min(cap));
        largest_fitting_tile(unet, &self.compute.memory, training, cap)
    }

    /// Whether training runs.
    pub fn training(&self) -> bool {
        self.train_job.is_some()
    }

    /// Whether a prediction (or a model load) runs.
    pub fn predicting(&self) -> bool {
        self.predict_job.is_some() || self.load_job.is_some() || self.save_job.is_some()
    }

    /// Value range of the overlay map: (shown cold, shown hot).
    pub fn overlay_range(&self) -> (f32, f32) {
        match self.overlay {
            Overlay::WeightMap => (0.0, self.weights.w0 + 2.0),
            _ => (0.0, 1.0),
        }
    }

    /// Whether the weight map of this key is being computed.
    pub fn weights_pending(&self) -> bool {
        self.weights_job.is_some()
    }

    /// The overlay map of `slice` for the current mode, if there is one.
    pub fn overlay_map(&self, slice: usize) -> Option<Vec<f32>> {
        if self.overlay == Overlay::WeightMap {
            return self
                .weight_map
                .as_ref()
                .filter(|(k, _)| k.0 == slice)
                .map(|(_, m)| m.data.clone());
        }
        let probs = self.probabilities.get(slice)?.as_ref()?;
        let k = (self.overlay_class.max(1) as usize - 1).min(probs.len().saturating_sub(1));
        match self.overlay {
            Overlay::None | Overlay::WeightMap => None,
            Overlay::Probability => Some(probs[k].data.clone()),
            Overlay::Mask => {
                let mask = decide_classes(probs, self.model.as_ref().and_then(|m| m.threshold));
                Some(
                    mask.data
                        .iter()
                        .map(|&c| f32::from(u8::from(c as usize == k + 1)))
                        .collect(),
                )
            }
            Overlay::Uncertainty => {
                let norm = (probs.len().max(2) as f32).ln();
                Some(entropy(probs).data.iter().map(|e| e / norm).collect())
            }
        }
    }
}

/// The document's labels as training sees them (classes convention, objects from components).
fn train_labels(labels: &[Plane<u8>]) -> Vec<LabelSlice> {
    labels
        .iter()
        .filter_map(|p| encode_labels(&p.map(u32::from), LabelEncoding::Classes).ok())
        .collect()
}

impl StudioApp {
    /// Starts training on the painted labels of all slices: fine-tunes the current network,
    /// or starts from scratch with the chosen preset.
    pub fn start_training(&mut self) {
        if self.models.training() {
            return;
        }
        let Some(doc) = &self.doc else { return };
        let labels = train_labels(&doc.labels);
        let labelled: usize = labels.iter().map(LabelSlice::labelled_count).sum();
        if labelled == 0 {
            self.error = Some("paint some labels first: every pixel is unlabelled".into());
            return;
        }
        let set = TrainSet {
            images: doc.stack.slices.iter().map(normalize_percentile).collect(),
            labels,
            held_out: Vec::new(),
        };
        let classes = set.classes().max(doc.classes.len());
        let start = match &self.models.model {
            Some(m) if m.unet.classes >= set.classes() => {
                let meta = CheckpointMeta {
                    threshold: m.threshold,
                    ..CheckpointMeta::new(m.unet.clone(), m.iteration, "")
                };
                match Checkpoint::of_model(meta, &m.model) {
                    Ok(c) => StartFrom::FineTune(Box::new(c)),
                    Err(e) => {
                        self.error = Some(format!("cannot fine-tune the current model: {e}"));
                        return;
                    }
                }
            }
            _ => StartFrom::Scratch(UNetConfig::preset(self.models.preset, classes)),
        };
        // The model learns what the classes are called in this stack.
        let start = start.with_class_names(doc.classes.iter().map(|c| c.name.clone()).collect());
        let unet = start.unet().clone();
        self.models.training_unet = Some(unet.clone());
        let iterations = self.models.iterations.max(1);
        let tile = self.models.tile_for(&unet, true);
        self.models.tile_train = Some(tile);
        let cfg = TrainConfig {
            iterations,
            tile_out: tile,
            // Fine-tuning takes a tenth of the rate of training from scratch: at 1e-3 a
            // short run on a few strokes washed out the shipped model's probabilities.
            optimizer: OptimizerConfig::Adam {
                lr: if matches!(start, StartFrom::FineTune(_)) {
                    1e-4
                } else {
                    1e-3
                },
            },
            seed: self.models.seed,
            val_fraction: 0.1,
            val_block_px: 64,
            val_every: (iterations / 5).max(1),
            checkpoint_every: 0,
            preview_every: (iterations / 10).max(10),
            weights: self.models.weights,
            minutes: (self.models.minutes > 0.0).then_some(self.models.minutes),
            ..TrainConfig::default()
        };
        let device = self.models.compute.clone();
        let model_dir = doc.model_dir();
        // Fine-tuning continues the count of the model it started from.
        let base_iteration = self.models.model.as_ref().map_or(0, |m| m.iteration);
        let fine_tune = matches!(start, StartFrom::FineTune(_));
        self.models.fine_tuning = fine_tune;
        self.models.losses.clear();
        self.models.val_losses.clear();
        self.models.val_rand.clear();
        self.status = format!("training on {}", device.description);
        self.models.train_job = Some(Job::spawn("train", self.waker.clone(), move |ctx| {
            // Out of device memory: the same run again with a smaller tile.
            let out = train_fitting(
                &set,
                &cfg,
                start,
                &device,
                None,
                &ctx.cancel,
                &mut |from, to| ctx.send(TrainEvent::TileReduced { from, to }),
                &mut |e| ctx.send(e),
            )?;
            // Keep the result on disk too (atomically): a crash later loses nothing.
            let mut out = out;
            out.iteration += base_iteration;
            out.model_iteration += base_iteration;
            let meta = CheckpointMeta {
                unet: out.unet.clone(),
                train: Some(cfg.clone()),
                iteration: out.model_iteration,
                created_unix_s: now_unix_s(),
                train_loss: out.losses.last().copied(),
                val_loss: out.validation.map(|v| v.0),
                labels_hash: Some(set.labels_hash()),
                note: format!("trained in the app on {}", device.description),
                threshold: out.threshold,
                threshold_views: out.threshold_views,
            };
            // A fine-tune that kept its starting network adds no version.
            let history = if fine_tune && out.model_iteration == base_iteration {
                crate::project::models::list_versions(&model_dir)
            } else {
                save_version(&model_dir, &meta, &out.model)?
            };
            Ok((out, history))
        }));
    }

    /// Makes a saved version the current model again (roll back), in the background.
    pub fn use_version(&mut self, dir: PathBuf) {
        if self.models.load_job.is_some() || self.models.training() {
            return;
        }
        let device = self.models.compute.device.clone();
        let current = self.doc.as_ref().map(|d| d.model_dir());
        self.models.load_job = Some(Job::spawn("load model", self.waker.clone(), move |_| {
            let ckpt = crate::ml::load_checkpoint(&dir)?;
            let loaded = LoadedModel::from_checkpoint(&ckpt, &device, Some(dir))?;
            // The chosen version becomes the one reopened with the stack.
            if let Some(cur) = current {
                save_checkpoint(&cur, &ckpt.meta, &loaded.model, None)?;
            }
            Ok(loaded)
        }));
    }

    /// Saves the current network (config and weights) as a model folder `dir`, in the
    /// background; File-level counterpart of the automatic saves beside the labels, for
    /// sharing a model or using it from the command line.
    pub fn save_model_to(&mut self, dir: PathBuf) {
        let Some(m) = &self.models.model else { return };
        if self.models.save_job.is_some() {
            return;
        }
        let meta = CheckpointMeta::new(
            m.unet.clone(),
            m.iteration,
            "saved from the unet-studio app",
        );
        let model = m.model.clone();
        self.models.save_job = Some(Job::spawn("save model", self.waker.clone(), move |_| {
            save_checkpoint(&dir, &meta, &model, None).map(|_| dir)
        }));
    }

    /// Forgets the current model: the next training starts from scratch. Saved versions stay.
    pub fn reset_model(&mut self) {
        if self.models.training() {
            return;
        }
        self.models.model = None;
        self.models.probabilities.iter_mut().for_each(|p| *p = None);
        self.models.generation += 1;
        self.status = "model reset: Train starts from scratch".into();
    }

    /// Stops training after the current iteration; the network trained so far is kept.
    pub fn stop_training(&mut self) {
        if let Some(j) = &self.models.train_job {
            j.cancel();
            self.status = "stopping training…".into();
        }
    }

    /// Pauses training after the current iteration, or resumes it.
    pub fn toggle_pause_training(&mut self) {
        if let Some(j) = &self.models.train_job {
            let pause = !j.is_paused();
            j.set_paused(pause);
            self.status = if pause {
                "training paused (Resume goes on, Stop keeps the network trained so far)".into()
            } else {
                "training resumed".into()
            };
        }
    }

    /// Whether training runs but is paused.
    pub fn training_paused(&self) -> bool {
        self.models
            .train_job
            .as_ref()
            .is_some_and(|j| j.is_paused())
    }

    /// Whether a paused training has finished its last iteration and waits.
    pub fn training_held(&self) -> bool {
        self.models.train_job.as_ref().is_some_and(|j| j.is_held())
    }

    /// Predicts the shown slice in the background (overlap-tile).
    pub fn predict_slice(&mut self) {
        self.predict_with(None, false);
    }

    /// Predicts every slice of the stack in the background.
    pub fn predict_stack(&mut self) {
        self.predict_with(None, true);
    }

    fn predict_with(&mut self, preview: Option<UNet>, all: bool) {
        if self.models.predict_job.is_some() {
            return;
        }
        let (Some(doc), Some(m)) = (&self.doc, &self.models.model) else {
            return;
        };
        let preview_run = preview.is_some();
        let model = preview.unwrap_or_else(|| m.model.clone());
        let unet = m.unet.clone();
        let slices: Vec<usize> = if all {
            (0..doc.slices()).collect()
        } else {
            vec![self.view.slice]
        };
        let images: Vec<Plane<f32>> = slices
            .iter()
            .map(|&s| normalize_percentile(&doc.stack.slices[s]))
            .collect();
        let device = self.models.compute.device.clone();
        let mut tile = self.models.tile_for(&unet, false);
        self.models.tile_predict = Some(tile);
        // Live previews during training stay single-view; the user's predictions average
        // the chosen number of flips and quarter turns.
        let views_n = if preview_run {
            1
        } else {
            self.models.tta_views
        };
        let views: Vec<D4> = D4::all()[..views_n.clamp(1, 8)].to_vec();
        self.models.predict_job = Some(Job::spawn("predict", self.waker.clone(), move |ctx| {
            let mut out = Vec::with_capacity(slices.len());
            let n = slices.len();
            for (i, (&slice, image)) in slices.iter().zip(&images).enumerate() {
                // Out of device memory: this slice again with a smaller tile, kept for the
                // slices after it.
                let (used, probs) = predict_fitting(
                    &model,
                    &unet,
                    image,
                    tile,
                    &device,
                    &ctx.cancel,
                    &mut |from, to| {
                        ctx.progress(
                            i as f32 / n as f32,
                            format!("out of memory with {from} px tiles: retrying with {to} px"),
                        );
                    },
                    &mut |done, total| {
                        let f = (i as f32 + done as f32 / total.max(1) as f32) / n as f32;
                        ctx.progress(f, format!("slice {} of {n}", i + 1));
                    },
                    &views,
                )?;
                tile = used;
                out.push((slice, probs));
            }
            Ok((tile, out))
        }));
    }

    /// Starts computing the weight map of the shown slice when the view needs one that is
    /// missing or stale (labels edited, w0 or sigma changed). Runs in the background.
    pub(super) fn refresh_weight_map(&mut self) {
        if self.models.overlay != Overlay::WeightMap || self.models.weights_job.is_some() {
            return;
        }
        let Some(doc) = &self.doc else { return };
        let cfg = self.models.weights;
        let key = weight_key(self.view.slice, doc.edits, &cfg);
        if self
            .models
            .weight_map
            .as_ref()
            .is_some_and(|(k, _)| *k == key)
        {
            return;
        }
        let all = train_labels(&doc.labels);
        let slice = self.view.slice;
        let classes = doc.classes.len().max(2);
        self.models.weights_job = Some(Job::spawn("weight map", self.waker.clone(), move |_| {
            // Class balance over all slices, as training computes it.
            let cw = class_weights(&all, classes);
            let map = all
                .get(slice)
                .map(|l| weight_map(l, &cw, &cfg))
                .unwrap_or_else(|| Plane::filled(0, 0, 0.0));
            (key, map)
        }));
    }

    pub(super) fn poll_model_jobs(&mut self) {
        if let Some(job) = &mut self.models.load_job
            && let Some(res) = job.poll()
        {
            self.models.load_job = None;
            match res {
                Ok(m) => {
                    self.status = format!(
                        "using model {}",
                        m.path
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    );
                    self.models.set_model(m);
                    self.models.probabilities.iter_mut().for_each(|p| *p = None);
                    self.models.generation += 1;
                    self.predict_slice();
                }
                Err(e) => self.error = Some(format!("loading the model failed: {e}")),
            }
        }
        if let Some(job) = &mut self.models.save_job
            && let Some(res) = job.poll()
        {
            self.models.save_job = None;
            match res {
                Ok(dir) => self.status = format!("model saved to {}", dir.display()),
                Err(e) => self.error = Some(format!("saving the model failed: {e}")),
            }
        }
        if let Some(job) = &mut self.models.weights_job
            && let Some(res) = job.poll()
        {
            self.models.weights_job = None;
            self.models.weight_map = Some(res);
            self.models.generation += 1;
        }
        self.refresh_weight_map();
        let mut snapshot = None;
        if let Some(mut job) = self.models.train_job.take() {
            let m = &mut self.models;
            let done = job.poll_events(|e| match e {
                TrainEvent::Iteration {
                    iteration,
                    loss,
                    its_per_s,
                } => {
                    // Iterations of this run (fine-tuning counts from 1 again).
                    m.losses.push([iteration as f64, f64::from(loss)]);
                    m.its_per_s = its_per_s;
                }
                TrainEvent::Validation {
                    iteration,
                    loss,
                    rand_error,
                    ..
                } => {
                    m.val_losses.push([iteration as f64, f64::from(loss)]);
                    if let Some(r) = rand_error {
                        m.val_rand.push([iteration as f64, r]);
                    }
                }
                TrainEvent::Snapshot { model, .. } => snapshot = Some(*model),
                TrainEvent::TileReduced { from, to } => {
                    m.tile_train = Some(to);
                    m.tile_note = format!(
                        "out of memory with {from} px training tiles: retrying with {to} px"
                    );
                    m.losses.clear();
                    m.val_losses.clear();
                }
                TrainEvent::Started { .. }
                | TrainEvent::Checkpoint { .. }
                | TrainEvent::Threshold { .. } => {}
            });
            if done.is_none() {
                self.models.train_job = Some(job);
            }
            if let Some(res) = done {
                match res {
                    Ok((out, history)) => {
                        self.models.history = history;
                        let ended = if out.cancelled { "stopped" } else { "finished" };
                        let unchanged = self.models.fine_tuning
                            && self.models.model.as_ref().map(|m| m.iteration)
                                == Some(out.model_iteration);
                        self.status = if unchanged {
                            format!(
                                "training {ended} at iteration {}; the model is unchanged: every fine-tuned network segmented the labelled slices worse than it (measured against its own segmentation with your labels over it). Paint where the model is wrong to correct it",
                                out.iteration
                            )
                        } else {
                            format!(
                                "training {ended} at iteration {}; kept the network of iteration {} (best validation)",
                                out.iteration, out.model_iteration
                            )
                        };
                        self.models.model = Some(LoadedModel {
                            model: out.model,
                            unet: out.unet,
                            iteration: out.model_iteration,
                            path: self.doc.as_ref().map(|d| d.model_dir()),
                            threshold: out.threshold,
                            threshold_views: out.threshold_views,
                        });
                        self.predict_slice();
                    }
                    Err(e) => {
                        self.error =
                            Some(format!("training failed (the previous model is kept): {e}"))
                    }
                }
            }
        }
        // Live preview: predict the shown slice with the network as trained so far.
        if let Some(m) = snapshot {
            if self.models.model.is_some() {
                self.predict_with(Some(m), false);
            } else if let Some(unet) = self.models.training_unet.clone() {
                // No model yet: the preview network is the current one until training ends.
                self.models.model = Some(LoadedModel {
                    model: m,
                    unet,
                    iteration: 0,
                    path: None,
                    threshold: None,
                    threshold_views: None,
                });
                self.predict_slice();
            }
        }
        if let Some(job) = &mut self.models.predict_job
            && let Some(res) = job.poll()
        {
            self.models.predict_job = None;
            match res {
                Ok((tile, results)) => {
                    if self.models.tile_predict.is_some_and(|t| t > tile) {
                        self.models.tile_note = format!(
                            "out of memory with {} px prediction tiles: now {tile} px",
                            self.models.tile_predict.unwrap_or(tile)
                        );
                        self.models.tile_predict = Some(tile);
                    }
                    let n = self.doc.as_ref().map_or(0, |d| d.slices());
                    self.models.probabilities.resize(n, None);
                    for (slice, probs) in results {
                        if let Some(p) = self.models.probabilities.get_mut(slice) {
                            *p = Some(probs);
                        }
                    }
                    self.models.generation += 1;
                }
                Err(MlError::Cancelled) => {}
                Err(e) => self.error = Some(format!("prediction failed: {e}")),
            }
        }
    }
}
