//! unet-studio: the U-Net of Ronneberger et al. (2015) for microscopy, as a library.
//!
//! Data flows one way: [`data`] (stacks, labels) -> [`preprocess`] (weight maps, deformation,
//! tiles) -> [`ml`] (network, training, tiled inference) -> [`postprocess`] (the decision rule:
//! threshold, gap closing) -> [`metrics`]; [`ml`] uses the last two to validate and to choose a
//! model's decision rule, and they use only [`data`] (and [`postprocess`] uses [`metrics`]);
//! the CPU kernels below [`ml`] are plain functions in [`kernels`]. Lower layers
//! never import higher ones (README, architecture; `tests/architecture.rs`). Only the
//! application edge shows or prints: [`app`] (the window) and [`cli`] (the commands, their
//! progress bars and the benchmarks); everything below returns values and errors.

pub mod app;
pub mod cli;
pub mod data;
pub mod experiment;
pub mod jobs;
pub mod kernels;
pub mod metrics;
pub mod ml;
pub mod postprocess;
pub mod preprocess;
pub mod project;
pub mod render;
pub mod ui;
