//! The network, its loss, training and tiled inference, on one runtime-selected device.
//!
//! - [`unet`] (the network, built from [`layers`] on the operations of [`ops`]), [`loss`],
//!   [`optim`];
//! - [`config`] (how a run trains), [`train`] (the loop, validation, keep-best),
//!   [`checkpoint`] (a model on disk: weights, config, threshold);
//! - [`infer`] (tiled prediction, test-time augmentation), [`memory`] (what fits the device),
//!   [`device`] (CPU or GPU, sharing eframe's wgpu device);
//! - [`cancel`], [`compute_pool`], [`error`]: what the others share.
//!
//! This file only declares and re-exports; the files below import each other by their own
//! paths, never through it.

pub mod cancel;
pub mod checkpoint;
pub mod compute_pool;
pub mod config;
pub mod device;
pub mod error;
pub mod infer;
pub mod layers;
pub mod loss;
pub mod memory;
pub mod ops;
pub mod optim;
pub mod resident;
pub mod train;
pub mod unet;

pub use cancel::CancelToken;
pub use checkpoint::{Checkpoint, CheckpointMeta, load_checkpoint, save_checkpoint};
pub use compute_pool::in_compute_pool;
pub use config::{LrSchedule, OptimizerConfig, TrainConfig};
pub use device::{ComputeDevice, DeviceChoice, select_device};
pub use error::DeviceError;
pub use error::MlError;
pub use infer::{effective_tile, entropy, predict_fitting, predict_probabilities};
pub use loss::weighted_cross_entropy;
pub use train::{StartFrom, TrainEvent, TrainOutcome, TrainSet, train, train_fitting};
pub use unet::{Preset, UNet, UNetConfig};
