//! The training loop: batch 1 of the largest tile, random tiles centred on labelled pixels,
//! elastic deformation and other augmentation on the fly, weighted loss, SGD with momentum
//! 0.99 (paper) or Adam, validation on held-out labelled blocks, atomic checkpoints.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module as _;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use crate::data::{LabelSlice, Plane};
use crate::ml::checkpoint::{Checkpoint, CheckpointMeta, fnv1a_hex, now_unix_s, save_checkpoint};
use crate::ml::device::ComputeDevice;
use crate::ml::infer::{
    plane_tensor, predict_probabilities_tta, predict_probabilities_where, tensor_values,
};
use crate::ml::loss::weighted_cross_entropy;
use crate::ml::optim::SgdMomentum;
use crate::ml::unet::{UNet, UNetConfig};
use crate::ml::{CancelToken, MlError, in_compute_pool};
use crate::preprocess::{
    AugmentConfig, D4, DeformationField, ElasticConfig, GreyJitter, Interpolation, Rng,
    WeightMapConfig, class_weights, warp_f32, warp_nearest, weight_map,
};

/// The optimiser.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum OptimizerConfig {
    /// Plain SGD with (undampened) momentum, as Caffe and the paper: `v = m v + g`,
    /// `theta -= lr v`.
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum (paper: 0.99).
        momentum: f64,
    },
    /// Adam (not in the paper; converges faster on small budgets).
    Adam {
        /// Learning rate.
        lr: f64,
    },
}

impl OptimizerConfig {
    /// The paper's optimiser: SGD, momentum 0.99. The paper gives no learning rate; 0.001
    /// trains here, 0.01 collapsed to chance level within 500 iterations on ISBI 2012.
    pub fn paper() -> Self {
        Self::Sgd {
            lr: 0.001,
            momentum: 0.99,
        }
    }

    /// The default recipe of the CLI, the app and `experiment`: Adam, lr 0.001 (with the
    /// cosine schedule of [`LrSchedule::cosine`]). SGD collapsed on sparse scribbles.
    pub fn default_recipe() -> Self {
        Self::Adam { lr: 1e-3 }
    }

    fn lr(&self) -> f64 {
        match *self {
            Self::Sgd { lr, .. } | Self::Adam { lr } => lr,
        }
    }

    /// A fresh optimiser of this kind.
    pub fn init_optimizer(&self) -> ModuleOptimizer {
        match *self {
            Self::Sgd { momentum, .. } => ModuleOptimizer::from(SgdMomentum { momentum }),
            Self::Adam { .. } => AdamConfig::new().init(),
        }
    }
}

/// How the learning rate changes over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum LrSchedule {
    /// The same rate throughout (what runs saved before schedules existed used).
    #[default]
    Constant,
    /// A linear warm-up over `warmup` iterations, then a cosine decay to `final_factor` times
    /// the rate at the end of the run (its iterations or its time budget, whichever ends
    /// first).
    Cosine {
        /// Rate at the end, as a fraction of the configured rate.
        final_factor: f64,
        /// Iterations of linear warm-up from 0.
        warmup: u64,
    },
}

impl LrSchedule {
    /// The default for new runs: warm-up over 50 iterations, cosine decay to 1 %.
    pub fn cosine() -> Self {
        Self::Cosine {
            final_factor: 0.01,
            warmup: 50,
        }
    }

    /// The factor of the configured rate at `step` (0-based, within this run) when a fraction
    /// `progress` (0..=1) of the run is done.
    pub fn factor(&self, step: u64, progress: f64) -> f64 {
        match *self {
            Self::Constant => 1.0,
            Self::Cosine {
                final_factor,
                warmup,
            } => {
                let warm = if warmup > 0 {
                    ((step + 1) as f64 / warmup as f64).min(1.0)
                } else {
                    1.0
                };
                let p = progress.clamp(0.0, 1.0);
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * p).cos());
                warm * (final_factor + (1.0 - final_factor) * cos)
            }
        }
    }
}

/// Everything that controls a training run. Saved with every checkpoint.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Iterations (one tile each) in this run.
    pub iterations: u64,
    /// Output tile edge in pixels (rounded to a valid size).
    pub tile_out: usize,
    /// Optimiser and learning rate.
    pub optimizer: OptimizerConfig,
    /// Seed of tile sampling, augmentation and the validation split.
    pub seed: u64,
    /// Fraction of `val_block_px`-sized blocks whose labels are held out for validation.
    pub val_fraction: f32,
    /// Edge of the validation blocks.
    pub val_block_px: usize,
    /// Validate every this many iterations (0: only at the end).
    pub val_every: u64,
    /// Write a checkpoint every this many iterations (0: only at the end).
    pub checkpoint_every: u64,
    /// Augmentation.
    pub augment: AugmentConfig,
    /// Elastic deformation.
    pub elastic: ElasticConfig,
    /// Weight map.
    pub weights: WeightMapConfig,
    /// Send the current network as a [`TrainEvent::Snapshot`] every this many iterations
    /// (0: never), for live previews.
    #[serde(default)]
    pub preview_every: u64,
    /// Learning-rate schedule over the run.
    #[serde(default)]
    pub schedule: LrSchedule,
    /// Time budget of the run in minutes (`None`: only `iterations` ends it). Paused time
    /// does not count.
    #[serde(default)]
    pub minutes: Option<f64>,
    /// Hand back (and save as the model) the network of the best validation, not the last.
    #[serde(default)]
    pub keep_best: bool,
    /// `w_c` of classes 1..=K as given instead of computed from the labels' frequencies
    /// (empty: computed; ignored without `weights.balance_classes`). A fine-tune on a few
    /// strokes keeps the class balance its network was trained with: the strokes' own
    /// frequencies say nothing about the image's. The weights a run used are saved here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_weights: Vec<f32>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            iterations: 1000,
            tile_out: 68,
            optimizer: OptimizerConfig::default_recipe(),
            seed: 0,
            val_fraction: 0.1,
            val_block_px: 64,
            val_every: 100,
            checkpoint_every: 200,
            augment: AugmentConfig::default(),
            elastic: ElasticConfig::default(),
            weights: WeightMapConfig::default(),
            preview_every: 0,
            schedule: LrSchedule::cosine(),
            minutes: None,
            keep_best: true,
            class_weights: Vec::new(),
        }
    }
}

/// Training images (normalised) and their labels, slice by slice.
#[derive(Clone, Debug)]
pub struct TrainSet {
    /// Normalised images.
    pub images: Vec<Plane<f32>>,
    /// Labels of each image (same size).
    pub labels: Vec<LabelSlice>,
    /// Fully labelled slices held out for validation by the paper's measures (may be empty;
    /// then validation uses the held-out blocks of `labels`).
    pub held_out: Vec<HeldOutSlice>,
}

/// A normalised image and the cell (class 2) mask of its full labels.
#[derive(Clone, Debug)]
pub struct HeldOutSlice {
    /// Normalised image.
    pub image: Plane<f32>,
    /// Where the truth is cell (class >= 2).
    pub cell: Plane<bool>,
}

impl TrainSet {
    /// Number of classes the labels use (at least 2).
    pub fn classes(&self) -> usize {
        self.labels
            .iter()
            .map(|l| l.max_class() as usize)
            .max()
            .unwrap_or(0)
            .max(2)
    }

    /// FNV-1a hash of all label classes.
    pub fn labels_hash(&self) -> String {
        fnv1a_hex(self.labels.iter().map(|l| &l.classes.data[..]))
    }
}

/// Progress of a training run.
#[derive(Clone, Debug)]
pub enum TrainEvent {
    /// The run is set up.
    Started {
        /// Where it runs.
        device: String,
        /// Output and input tile edges.
        tile_out: usize,
        /// See `tile_out`.
        tile_in: usize,
        /// Labelled pixels used for training and held out for validation.
        train_pixels: usize,
        /// See `train_pixels`.
        val_pixels: usize,
        /// Iteration the run starts at (non-zero when resuming).
        first_iteration: u64,
    },
    /// One optimisation step finished.
    Iteration {
        /// Global iteration number (1-based).
        iteration: u64,
        /// Loss of this step.
        loss: f32,
        /// Iterations per second over this run so far.
        its_per_s: f32,
    },
    /// Validation loss on the held-out labelled pixels.
    Validation {
        /// Global iteration number.
        iteration: u64,
        /// Weighted cross-entropy on the held-out pixels.
        loss: f32,
        /// Fraction of held-out pixels whose argmax class is wrong.
        pixel_error: f32,
        /// The paper's Rand error on the held-out slices at its best threshold, when the set
        /// has held-out slices.
        rand_error: Option<f64>,
        /// Whether this is the best validation of the run so far (the one kept).
        best: bool,
    },
    /// The network as trained so far (validation mode), for a live preview.
    Snapshot {
        /// Global iteration number.
        iteration: u64,
        /// The network.
        model: Box<UNet>,
    },
    /// How `predict` uses the kept network by default: one view or the mean of 8, whichever
    /// scored the lower Rand error on the held-out slices, and the threshold for it.
    Threshold {
        /// Threshold of the cell probability.
        threshold: f32,
        /// Views averaged (1 or 8).
        views: usize,
        /// Rand error on the held-out slices at that threshold.
        rand_error: f64,
        /// The views not chosen, and their best Rand error.
        other_views: usize,
        /// See `other_views`.
        other_rand_error: f64,
    },
    /// A checkpoint was written.
    Checkpoint {
        /// Global iteration number.
        iteration: u64,
        /// The file.
        path: PathBuf,
    },
    /// The device ran out of memory with tile `from`; the run starts again with `to`
    /// (sent by callers that wrap [`train`] in [`crate::ml::memory::with_smaller_tiles`]).
    TileReduced {
        /// Output tile edge that did not fit.
        from: usize,
        /// Output tile edge of the new attempt.
        to: usize,
    },
}

/// What a finished (or cancelled) run returns.
#[derive(Debug)]
pub struct TrainOutcome {
    /// The trained network (plain device, validation mode).
    pub model: UNet,
    /// Its config.
    pub unet: UNetConfig,
    /// Global iteration reached.
    pub iteration: u64,
    /// Loss of every step of this run.
    pub losses: Vec<f32>,
    /// Last validation result `(loss, pixel error)`, if any.
    pub validation: Option<(f32, f32)>,
    /// Whether the run was cancelled before its last iteration.
    pub cancelled: bool,
    /// Iteration of the network handed back (the best validation's, with `keep_best`).
    pub model_iteration: u64,
    /// The decision threshold of the cell probability chosen on the held-out slices (or the
    /// starting checkpoint's).
    pub threshold: Option<f32>,
    /// The views the threshold was chosen with (`None`: one).
    pub threshold_views: Option<u8>,
}

/// Where the weights come from.
#[derive(Clone, Debug)]
pub enum StartFrom {
    /// A freshly initialised network.
    Scratch(UNetConfig),
    /// Fine-tune: the weights of a checkpoint, a fresh optimiser, iterations from 0.
    FineTune(Box<Checkpoint>),
    /// Resume: weights, optimiser state and iteration count of a checkpoint.
    Resume(Box<Checkpoint>),
}

impl StartFrom {
    /// Names the network's classes (class k at index k - 1), keeping the weights.
    pub fn with_class_names(mut self, names: Vec<String>) -> Self {
        match &mut self {
            Self::Scratch(u) => u.class_names = names,
            Self::FineTune(c) | Self::Resume(c) => c.meta.unet.class_names = names,
        }
        self
    }

    /// The network's configuration.
    pub fn unet(&self) -> &UNetConfig {
        match self {
            Self::Scratch(u) => u,
            Self::FineTune(c) | Self::Resume(c) => &c.meta.unet,
        }
    }
}

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

/// One training sample: input tile, classes and weights of the output tile.
#[derive(Clone, Debug)]
pub struct Sample {
    /// `tile_in x tile_in` normalised image.
    pub image: Plane<f32>,
    /// `tile_out x tile_out` classes (0 = unlabelled).
    pub classes: Plane<u8>,
    /// `tile_out x tile_out` weights.
    pub weights: Plane<f32>,
}

/// Per-slice masks of the held-out validation blocks.
fn validation_masks(set: &TrainSet, cfg: &TrainConfig) -> Vec<Plane<bool>> {
    let mut rng = Rng::new(cfg.seed ^ 0x7A11_DA7E);
    let b = cfg.val_block_px.max(8);
    set.labels
        .iter()
        .map(|l| {
            let (w, h) = (l.classes.width, l.classes.height);
            let (bw, bh) = (w.div_ceil(b), h.div_ceil(b));
            let blocks: Vec<bool> = (0..bw * bh)
                .map(|_| rng.uniform() < f64::from(cfg.val_fraction))
                .collect();
            let mut m = Plane::filled(w, h, false);
            for y in 0..h {
                for x in 0..w {
                    m.set(x, y, blocks[(y / b) * bw + x / b]);
                }
            }
            m
        })
        .collect()
}

/// Draws one augmented training sample centred near a random training pixel.
#[allow(clippy::too_many_arguments)]
fn draw_sample(
    set: &TrainSet,
    weights: &[Plane<f32>],
    pixels: &[Vec<u32>],
    cumulative: &[usize],
    tile_out: usize,
    tile_in: usize,
    cfg: &TrainConfig,
    rng: &mut Rng,
) -> Sample {
    let total = cumulative.last().copied().unwrap_or(0);
    let pick = rng.below(total.max(1));
    let s = cumulative.partition_point(|&c| c <= pick);
    let s = s.min(set.images.len() - 1);
    let list = &pixels[s];
    let idx = list[rng.below(list.len())] as usize;
    let img = &set.images[s];
    let (px, py) = (idx % img.width, idx / img.width);
    let jitter = (tile_out / 4).max(1);
    let margin = (tile_in - tile_out) / 2;
    let ox =
        px as isize - (tile_out / 2) as isize + rng.below(2 * jitter) as isize - jitter as isize;
    let oy =
        py as isize - (tile_out / 2) as isize + rng.below(2 * jitter) as isize - jitter as isize;
    let (ix, iy) = (ox - margin as isize, oy - margin as isize);
    let mut image = img.crop_mirrored(ix, iy, tile_in, tile_in);
    let mut classes = set.labels[s]
        .classes
        .crop_mirrored(ix, iy, tile_in, tile_in);
    let mut wmap = weights[s].crop_mirrored(ix, iy, tile_in, tile_in);
    let aug = &cfg.augment;
    if aug.elastic {
        let field = DeformationField::random(tile_in, tile_in, &cfg.elastic, rng.next_u64());
        let (dx, dy) = field.dense();
        image = warp_f32(&image, &dx, &dy, Interpolation::Bicubic);
        classes = warp_nearest(&classes, &dx, &dy);
        wmap = warp_nearest(&wmap, &dx, &dy);
    }
    if aug.flips_rotations {
        let d4 = D4::random(rng);
        image = d4.apply(&image);
        classes = d4.apply(&classes);
        wmap = d4.apply(&wmap);
    }
    if aug.brightness > 0.0 || aug.contrast > 0.0 || aug.gamma > 0.0 {
        GreyJitter::random(aug, rng).apply(&mut image);
    }
    let m = margin as isize;
    Sample {
        image,
        classes: classes.crop_mirrored(m, m, tile_out, tile_out),
        weights: wmap.crop_mirrored(m, m, tile_out, tile_out),
    }
}

/// One-hot `[1, K, H, W]` targets (all zero at unlabelled pixels) and `[1, 1, H, W]` weights.
pub fn target_tensors(
    classes: &Plane<u8>,
    weights: &Plane<f32>,
    n_classes: usize,
    device: &Device,
) -> (Tensor<4>, Tensor<4>) {
    let n = classes.data.len();
    let mut onehot = vec![0.0f32; n_classes * n];
    for (i, &c) in classes.data.iter().enumerate() {
        if c >= 1 && (c as usize) <= n_classes {
            onehot[(c as usize - 1) * n + i] = 1.0;
        }
    }
    let (h, w) = (classes.height, classes.width);
    (
        Tensor::from_data(TensorData::new(onehot, [1, n_classes, h, w]), device),
        plane_tensor(weights, device),
    )
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
    if set.images.is_empty() || set.images.len() != set.labels.len() {
        return Err(MlError::NoLabels(
            "training needs at least one image with labels".into(),
        ));
    }
    for (i, (im, l)) in set.images.iter().zip(&set.labels).enumerate() {
        if (im.width, im.height) != (l.classes.width, l.classes.height) {
            return Err(MlError::NoLabels(format!(
                "slice {i}: image is {}x{} but labels are {}x{}",
                im.width, im.height, l.classes.width, l.classes.height
            )));
        }
    }
    // Initial weights and dropout masks come from the device's generator: seed it too.
    device.device.seed(cfg.seed);
    let ad = device.device.clone().autodiff();
    let (start_threshold, start_threshold_views, from_checkpoint) = match &start {
        StartFrom::Scratch(_) => (None, None, false),
        StartFrom::FineTune(c) | StartFrom::Resume(c) => {
            (c.meta.threshold, c.meta.threshold_views, true)
        }
    };
    let (unet, mut model, mut optim, first_iteration) = match start {
        StartFrom::Scratch(u) => {
            let m = u.init(&ad);
            (u, m, cfg.optimizer.init_optimizer(), 0)
        }
        StartFrom::FineTune(c) => (
            c.meta.unet.clone(),
            c.model(&ad)?,
            cfg.optimizer.init_optimizer(),
            0,
        ),
        StartFrom::Resume(c) => {
            let o = c.restore_optimizer(cfg.optimizer.init_optimizer())?;
            (c.meta.unet.clone(), c.model(&ad)?, o, c.meta.iteration)
        }
    };
    if set.classes() > unet.classes {
        return Err(MlError::NoLabels(format!(
            "the labels use class {} but the network predicts {} classes",
            set.classes(),
            unet.classes
        )));
    }
    let geom = unet.geometry();
    let tile_out = geom.nearest_valid_output(cfg.tile_out.max(1));
    let tile_in = geom
        .input_size(tile_out)
        .ok_or_else(|| MlError::Tile(format!("no input size gives a {tile_out} px output")))?;

    // Held-out blocks, weight maps (computed once, before training, as in the paper).
    let val_masks = validation_masks(set, cfg);
    let train_labels: Vec<LabelSlice> = set
        .labels
        .iter()
        .zip(&val_masks)
        .map(|(l, m)| {
            let mut l = l.clone();
            for (c, &v) in l.classes.data.iter_mut().zip(&m.data) {
                if v {
                    *c = 0;
                }
            }
            l
        })
        .collect();
    let cw = match &cfg.class_weights[..] {
        _ if !cfg.weights.balance_classes => class_weights(&train_labels, unet.classes),
        [] => class_weights(&train_labels, unet.classes),
        fixed if fixed.len() == unet.classes && fixed.iter().all(|w| w.is_finite() && *w > 0.0) => {
            std::iter::once(0.0).chain(fixed.iter().copied()).collect()
        }
        fixed => {
            return Err(MlError::NoLabels(format!(
                "{} fixed class weights for {} classes (each must be positive)",
                fixed.len(),
                unet.classes
            )));
        }
    };
    // The class weights actually used go with every checkpoint (a fine-tune can keep them).
    let cfg = &TrainConfig {
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
    let train_weights: Vec<Plane<f32>> = full_weights
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
    let pixels: Vec<Vec<u32>> = train_weights
        .iter()
        .map(|w| {
            w.data
                .iter()
                .enumerate()
                .filter(|(_, v)| **v > 0.0)
                .map(|(i, _)| i as u32)
                .collect()
        })
        .collect();
    let mut cumulative = Vec::with_capacity(pixels.len());
    let mut acc = 0;
    for p in &pixels {
        acc += p.len();
        cumulative.push(acc);
    }
    let train_pixels = acc;
    if train_pixels == 0 {
        return Err(MlError::NoLabels(
            "no labelled pixels to train on (all pixels are 0 = unlabelled, or all were held out)"
                .into(),
        ));
    }
    let val_pixels: usize = set
        .labels
        .iter()
        .zip(&val_masks)
        .map(|(l, m)| {
            l.classes
                .data
                .iter()
                .zip(&m.data)
                .filter(|(c, v)| **c > 0 && **v)
                .count()
        })
        .sum();
    on_event(TrainEvent::Started {
        device: device.description.clone(),
        tile_out,
        tile_in,
        train_pixels,
        val_pixels,
        first_iteration,
    });

    let labels_hash = set.labels_hash();
    let meta_for = |iteration: u64,
                    train_loss: Option<f32>,
                    val: Option<(f32, f32)>,
                    threshold: Option<f32>| CheckpointMeta {
        unet: unet.clone(),
        train: Some(cfg.clone()),
        iteration,
        created_unix_s: now_unix_s(),
        train_loss,
        val_loss: val.map(|v| v.0),
        labels_hash: Some(labels_hash.clone()),
        note: format!("trained on {}", device.description),
        threshold,
        threshold_views: None,
    };
    // The best validation so far: its score, iteration, network, threshold, (loss, error).
    let mut best: Option<Best> = None;
    let mut validation = None;
    let validator = Validator {
        unet: &unet,
        set,
        weights: &full_weights,
        masks: &val_masks,
        val_pixels,
        tile_out,
        device,
        cancel,
        keep_best: cfg.keep_best,
        start_threshold,
    };
    // A run from a checkpoint validates the starting network first, so that a run that only
    // makes it worse hands the starting network back.
    if from_checkpoint && cfg.keep_best && validator.can() {
        let (v, event) = validator.round(model.valid(), first_iteration, &mut best)?;
        validation = Some(v);
        on_event(event);
    }
    let mut rng = Rng::new(cfg.seed.wrapping_add(first_iteration.wrapping_mul(0x9E37)));
    let mut losses = Vec::with_capacity(cfg.iterations.min(100_000) as usize);
    let t0 = Instant::now();
    let budget_s = cfg.minutes.map(|m| (m * 60.0).max(0.0));
    let mut cancelled = false;
    let mut iteration = first_iteration;
    // Time spent paused does not count in the speed.
    let mut paused = std::time::Duration::ZERO;
    for step in 0..cfg.iterations {
        paused += cancel.wait_while_paused();
        if cancel.is_cancelled() {
            cancelled = true;
            break;
        }
        let elapsed_s = t0.elapsed().saturating_sub(paused).as_secs_f64();
        let time_progress = budget_s.map_or(0.0, |b| elapsed_s / b.max(1e-9));
        if time_progress >= 1.0 {
            break;
        }
        let progress = (step as f64 / cfg.iterations.max(1) as f64).max(time_progress);
        let lr = cfg.optimizer.lr() * cfg.schedule.factor(step, progress);
        // Resample when augmentation pushed every labelled pixel out of the output tile.
        let mut sample = None;
        for _ in 0..9 {
            let s = draw_sample(
                set,
                &train_weights,
                &pixels,
                &cumulative,
                tile_out,
                tile_in,
                cfg,
                &mut rng,
            );
            let usable = s.weights.data.iter().any(|&w| w > 0.0);
            sample = Some(s);
            if usable {
                break;
            }
        }
        let Some(sample) = sample else { break };
        let (next, loss_value) = in_compute_pool(|| {
            let x = plane_tensor(&sample.image, &ad);
            let (target, weights) =
                target_tensors(&sample.classes, &sample.weights, unet.classes, &ad);
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
        })?;
        model = next;
        iteration += 1;
        losses.push(loss_value);
        let elapsed = t0.elapsed().saturating_sub(paused).as_secs_f32().max(1e-6);
        on_event(TrainEvent::Iteration {
            iteration,
            loss: loss_value,
            its_per_s: (step + 1) as f32 / elapsed,
        });
        let last = step + 1 == cfg.iterations
            || budget_s.is_some_and(|b| t0.elapsed().saturating_sub(paused).as_secs_f64() >= b);
        if cfg.preview_every > 0 && (step + 1) % cfg.preview_every == 0 && !last {
            on_event(TrainEvent::Snapshot {
                iteration,
                model: Box::new(model.valid()),
            });
        }
        if validator.can() && ((cfg.val_every > 0 && (step + 1) % cfg.val_every == 0) || last) {
            let (v, event) = validator.round(model.valid(), iteration, &mut best)?;
            validation = Some(v);
            on_event(event);
        }
        if let Some(dir) = out_dir
            && cfg.checkpoint_every > 0
            && (step + 1) % cfg.checkpoint_every == 0
            && !last
        {
            let last_meta = meta_for(iteration, recent_mean(&losses), validation, None);
            let path = save_run(dir, last_meta, &model.valid(), &optim, best.as_ref())?;
            on_event(TrainEvent::Checkpoint { iteration, path });
        }
        if last {
            break;
        }
    }
    // How `predict` should use the kept network by default: one view, or the mean of the 8
    // flips and rotations (which smooths the probabilities and shifts the best threshold),
    // whichever gives the lower Rand error on the held-out slices, with its own threshold.
    // On ISBI 2012 either has won, depending on the network (docs/results.md).
    let mut threshold_views = None;
    if let Some(b) = &mut best
        && !set.held_out.is_empty()
        && !cancel.is_cancelled()
        && let Some((rand8, t8)) = validate_held_out(
            &b.model,
            &unet,
            &set.held_out,
            tile_out,
            device,
            cancel,
            &D4::all(),
        )?
    {
        let eight = D4::all().len();
        let one = (b.threshold.unwrap_or(t8), 1, b.score);
        let all = (t8, eight, rand8);
        let (chosen, other) = if rand8 < b.score {
            (all, one)
        } else {
            (one, all)
        };
        b.threshold = Some(chosen.0);
        threshold_views = Some(chosen.1 as u8);
        on_event(TrainEvent::Threshold {
            threshold: chosen.0,
            views: chosen.1,
            rand_error: chosen.2,
            other_views: other.1,
            other_rand_error: other.2,
        });
    }
    if let Some(dir) = out_dir
        && (!losses.is_empty() || best.is_some())
    {
        let mut last_meta = meta_for(iteration, recent_mean(&losses), validation, start_threshold);
        last_meta.threshold_views = threshold_views.or(start_threshold_views);
        let path = save_run(dir, last_meta, &model.valid(), &optim, best.as_ref())?;
        on_event(TrainEvent::Checkpoint { iteration, path });
    }
    let (model, model_iteration, threshold, validation) = match best {
        Some(b) => (b.model, b.iteration, b.threshold, Some(b.validation)),
        None => (model.valid(), iteration, start_threshold, validation),
    };
    Ok(TrainOutcome {
        model,
        unet,
        iteration,
        losses,
        validation,
        cancelled,
        model_iteration,
        threshold,
        threshold_views: threshold_views.or(start_threshold_views),
    })
}

/// What validation needs, and its rule for the best network.
struct Validator<'a> {
    unet: &'a UNetConfig,
    set: &'a TrainSet,
    /// Weight maps of the full labels.
    weights: &'a [Plane<f32>],
    /// Held-out blocks per slice.
    masks: &'a [Plane<bool>],
    /// Labelled pixels in the held-out blocks.
    val_pixels: usize,
    tile_out: usize,
    device: &'a ComputeDevice,
    cancel: &'a CancelToken,
    keep_best: bool,
    start_threshold: Option<f32>,
}

impl Validator<'_> {
    /// Whether there is anything to validate on.
    fn can(&self) -> bool {
        self.val_pixels > 0 || !self.set.held_out.is_empty()
    }

    /// Validates `valid` (the network at `iteration`), makes it `best` when it scores lower
    /// (the Rand error on held-out slices, else the loss on held-out blocks), and returns the
    /// `(loss, wrong px)` on the blocks and the event to send.
    fn round(
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
        // One view during the run (fast); the kept network's threshold is chosen again with
        // the views `predict` averages at the end.
        let held = validate_held_out(
            &valid,
            self.unet,
            &self.set.held_out,
            self.tile_out,
            self.device,
            self.cancel,
            &[D4::default()],
        )?;
        let score = held.map_or(f64::from(v.0), |(rand, _)| rand);
        let is_best = best.as_ref().is_none_or(|b| score < b.score);
        if is_best && self.keep_best {
            *best = Some(Best {
                score,
                iteration,
                model: valid,
                threshold: held.map(|(_, t)| t).or(self.start_threshold),
                validation: v,
            });
        }
        let event = TrainEvent::Validation {
            iteration,
            loss: v.0,
            pixel_error: v.1,
            rand_error: held.map(|(rand, _)| rand),
            best: is_best,
        };
        Ok((v, event))
    }
}

/// The best validation of a run so far.
struct Best {
    /// Lower is better.
    score: f64,
    iteration: u64,
    model: UNet,
    threshold: Option<f32>,
    /// `(loss, pixel error)` on the held-out blocks.
    validation: (f32, f32),
}

/// The folder of a run's last state (weights and optimiser, to resume from) when the run keeps
/// its best network as the model.
pub const LAST_STATE_DIR: &str = "last";

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
        threshold: b.threshold,
        threshold_views: last_meta.threshold_views,
        note: format!(
            "{}; best validation at iteration {} of {reached}",
            last_meta.note, b.iteration
        ),
        ..last_meta
    };
    save_checkpoint(dir, &meta, &b.model, None)
}

/// The paper's Rand error of `model` on the held-out slices at its best threshold, and that
/// threshold (a grid of 0.05 steps); `None` without held-out slices or for more than two
/// classes.
fn validate_held_out(
    model: &UNet,
    unet: &UNetConfig,
    held_out: &[HeldOutSlice],
    tile_out: usize,
    device: &ComputeDevice,
    cancel: &CancelToken,
    views: &[D4],
) -> Result<Option<(f64, f32)>, MlError> {
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
    let grid: Vec<f32> = (1..20).map(|k| k as f32 / 20.0).collect();
    let scores = crate::metrics::threshold_scores(&p_cell, &truth, &grid, false);
    Ok(crate::metrics::decision_threshold(&scores)
        .and_then(|t| scores.at(t).map(|s| (s.rand_error, t))))
}

fn recent_mean(losses: &[f32]) -> Option<f32> {
    let tail = &losses[losses.len().saturating_sub(20)..];
    (!tail.is_empty()).then(|| tail.iter().sum::<f32>() / tail.len() as f32)
}

/// Weighted cross-entropy and pixel error on the held-out labelled pixels.
#[allow(clippy::too_many_arguments)]
fn validate(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_by_hand() {
        assert_eq!(LrSchedule::Constant.factor(7, 0.9), 1.0);
        let s = LrSchedule::Cosine {
            final_factor: 0.01,
            warmup: 4,
        };
        // Warm-up: (step + 1) / 4 of the cosine value (1 at the start).
        assert!((s.factor(0, 0.0) - 0.25).abs() < 1e-12);
        assert!((s.factor(3, 0.0) - 1.0).abs() < 1e-12);
        // Half way: 0.01 + 0.99 * (1 + cos(pi / 2)) / 2 = 0.505.
        assert!((s.factor(100, 0.5) - 0.505).abs() < 1e-12);
        // The end, and past it (a time budget can overshoot): the final factor.
        assert!((s.factor(100, 1.0) - 0.01).abs() < 1e-12);
        assert!((s.factor(100, 1.5) - 0.01).abs() < 1e-12);
    }
}
