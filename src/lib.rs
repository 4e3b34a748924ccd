//! unet-studio: the U-Net of Ronneberger et al. (2015) for microscopy, as a library.
//!
//! Data flows one way: [`data`] (stacks, labels) -> [`preprocess`] (weight maps, deformation,
//! tiles) -> [`ml`] (network, training, tiled inference) -> [`postprocess`] (optional gap closing) ->
//! [`metrics`]. Lower layers never
//! import higher ones; nothing here prints.

pub mod app;
pub mod bench;
pub mod cli;
pub mod data;
pub mod experiment;
pub mod jobs;
pub mod kernels;
pub mod metrics;
pub mod ml;
pub mod postprocess;
pub mod preprocess;
pub mod render;
