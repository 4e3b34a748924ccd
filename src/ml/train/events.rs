//! How a run starts ([`StartFrom`]), what it reports while it runs ([`TrainEvent`]) and what
//! it hands back ([`TrainOutcome`]).

use std::path::PathBuf;

use crate::ml::checkpoint::Checkpoint;
use crate::ml::config::TrainConfig;
use crate::ml::unet::{UNet, UNetConfig};
use crate::postprocess::{Decision, GapClosing};

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
        /// The paper's Rand error on the held-out slices by the network's best decision rule
        /// there (the starting model's rule against its own segmentation), when the set has
        /// held-out slices.
        rand_error: Option<f64>,
        /// What picks the kept network on held-out slices: the lowest sum of the Rand and
        /// pixel errors of its best decision rule (threshold, gap closing); the Rand error
        /// alone against the starting model's segmentation.
        score: Option<f64>,
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
    /// How `predict` uses the kept network by default: one view or the mean of 8, and the
    /// decision rule for it, chosen on the held-out slices (the lowest sum of Rand and pixel
    /// errors).
    Threshold {
        /// Threshold of the cell probability.
        threshold: f32,
        /// Gap closing after the threshold, if chosen.
        gap_closing: Option<GapClosing>,
        /// Views averaged (1 or 8).
        views: usize,
        /// Rand error of the chosen rule's masks on the held-out slices.
        rand_error: f64,
        /// Pixel error of the same masks.
        pixel_error: f64,
        /// The views not chosen, and the Rand and pixel errors of their best rule.
        other_views: usize,
        /// See `other_views`.
        other_rand_error: f64,
        /// See `other_views`.
        other_pixel_error: f64,
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
    /// The decision rule (threshold of the cell probability, gap closing) chosen on the
    /// held-out slices (or the starting checkpoint's).
    pub decision: Decision,
    /// The views the threshold was chosen with (`None`: one).
    pub threshold_views: Option<u8>,
    /// The configuration as run: the one asked for, with the class weights it computed from
    /// the labels (what a fine-tune of the result inherits).
    pub config: TrainConfig,
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
