//! Everything that controls a training run ([`TrainConfig`]): optimiser, learning-rate
//! schedule, tiles, augmentation, weight map, validation and time budget. Saved with every
//! checkpoint, so a model says how it was trained.

use burn::optim::{AdamConfig, ModuleOptimizer};

use crate::ml::optim::SgdMomentum;
use crate::preprocess::{AugmentConfig, ElasticConfig, WeightMapConfig};

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

    pub(crate) fn lr(&self) -> f64 {
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
    /// Fine-tunes only: the weight, relative to the class weights, of the starting network's
    /// own predictions (its class probabilities as soft targets, i.e. distillation) on the
    /// pixels the user left unlabelled, learnt beside the user's strokes, so that a few
    /// strokes correct the network where they are without unlearning it everywhere else
    /// (0: off). The user's labels always win where they exist.
    #[serde(default = "default_parent_weight")]
    pub parent_weight: f32,
}

fn default_parent_weight() -> f32 {
    0.2
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
            parent_weight: default_parent_weight(),
        }
    }
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
