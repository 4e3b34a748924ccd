//! Errors of the network side.

/// Errors of the network side.
#[derive(Debug, thiserror::Error)]
pub enum MlError {
    /// Reading or writing files.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// No usable device.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A checkpoint is unreadable or does not fit.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Nothing (usable) to train on.
    #[error("{0}")]
    NoLabels(String),
    /// Images with other channels than the network takes.
    #[error("channels: {0}")]
    Channels(String),
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

/// Why no device could be had.
#[derive(Debug, thiserror::Error, Clone)]
pub enum DeviceError {
    /// `--device gpu` without a usable adapter.
    #[error("no GPU adapter could be initialised: {0}")]
    NoAdapter(String),
}
