//! The network, its loss, training and tiled inference, on one runtime-selected device.

pub mod checkpoint;
pub mod conv;
pub mod conv_cpu;
#[cfg(target_arch = "x86_64")]
pub mod conv_direct;
pub mod device;
pub mod infer;
pub mod loss;
pub mod memory;
pub mod optim;
pub mod train;
pub mod unet;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use checkpoint::{Checkpoint, CheckpointMeta, load_checkpoint, save_checkpoint};
pub use device::{ComputeDevice, DeviceChoice, select_device};
pub use infer::{argmax_classes, effective_tile, entropy, predict_fitting, predict_probabilities};
pub use loss::weighted_cross_entropy;
pub use train::{
    OptimizerConfig, StartFrom, TrainConfig, TrainEvent, TrainOutcome, TrainSet, train,
    train_fitting,
};
pub use unet::{Preset, UNet, UNetConfig};

/// Runs `f` on one of rayon's worker threads, the pool the CPU kernels parallelise on (directly
/// when already on one). A network pass is a sequence of about a hundred parallel operations:
/// called from another thread, each of them is handed to the pool while the caller sleeps
/// until it is done (a wake-up per operation, three threads on two cores); from a worker they
/// run as nested joins whose halves the other worker steals. Training steps and tile
/// predictions run here; measured on the lite preset's 252 px training step: 3-7 % faster.
/// On the GPU the operations are queued either way.
pub fn in_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// Shared flags that ask a long computation to stop, or to pause, at its next check.
#[derive(Clone, Debug, Default)]
pub struct CancelToken {
    cancelled: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    held: Arc<AtomicBool>,
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks the computation to stop.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }
    /// Whether stopping was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
    /// Asks the computation to pause (`true`) or to go on (`false`).
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }
    /// Whether pausing was asked for.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }
    /// Whether the computation is held in [`Self::wait_while_paused`] right now (it got
    /// there after a pause was asked for and has not gone on).
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }
    /// Blocks while paused and not cancelled; returns how long it waited.
    pub fn wait_while_paused(&self) -> std::time::Duration {
        let start = std::time::Instant::now();
        while self.is_paused() && !self.is_cancelled() {
            self.held.store(true, Ordering::Release);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.held.store(false, Ordering::Release);
        start.elapsed()
    }
}

/// Errors of the network side.
#[derive(Debug, thiserror::Error)]
pub enum MlError {
    /// Reading or writing files.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// No usable device.
    #[error(transparent)]
    Device(#[from] device::DeviceError),
    /// A checkpoint is unreadable or does not fit.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Nothing (usable) to train on.
    #[error("{0}")]
    NoLabels(String),
    /// A tile size the network cannot use.
    #[error("tile: {0}")]
    Tile(String),
    /// The loss became NaN or infinite; the last checkpoint was kept.
    #[error(
        "training diverged at iteration {iteration} (non-finite loss); the last checkpoint was kept, lower the learning rate"
    )]
    Diverged {
        /// The iteration whose loss was not finite.
        iteration: u64,
    },
    /// The backend failed.
    #[error("compute backend: {0}")]
    Backend(String),
    /// The computation was cancelled.
    #[error("cancelled")]
    Cancelled,
}
