//! What the command line and the app do alike: predicting a stack slice by slice.

use burn::prelude::Device;

use crate::data::plane::Plane;
use crate::ml::cancel::CancelToken;
use crate::ml::error::MlError;
use crate::ml::infer::predict_fitting;
use crate::ml::unet::{UNet, UNetConfig};
use crate::preprocess::{D4, normalize_percentile};

/// Reports of [`predict_slices`], each with the index of the slice in the list.
pub trait SliceProgress {
    /// The device ran out of memory with `from` px tiles; the slice runs again with `to`.
    fn retry(&mut self, _slice: usize, _from: usize, _to: usize) {}
    /// `done` of the slice's `total` tiles are predicted.
    fn tiles(&mut self, _slice: usize, _done: usize, _total: usize) {}
    /// The slice's class probabilities.
    fn slice(&mut self, slice: usize, probs: Vec<Plane<f32>>);
}

/// Predicts `slices` (each the raw values of the channels the network takes, normalised here
/// channel by channel as in training) one after the other
/// with the mean of `views`, starting with `tile`: when the device runs out of memory, the
/// slice runs again with a smaller tile, which the following slices keep. Returns the tile in
/// use at the end.
pub fn predict_slices(
    (model, unet): (&UNet, &UNetConfig),
    slices: &[Vec<&Plane<f32>>],
    mut tile: usize,
    views: &[D4],
    (device, cancel): (&Device, &CancelToken),
    progress: &mut dyn SliceProgress,
) -> Result<usize, MlError> {
    // The two reports below are called one at a time, never together.
    let progress = std::cell::RefCell::new(progress);
    for (i, slice) in slices.iter().enumerate() {
        let (used, probs) = predict_fitting(
            model,
            unet,
            &slice
                .iter()
                .map(|c| normalize_percentile(c))
                .collect::<Vec<_>>(),
            tile,
            device,
            cancel,
            &mut |from, to| progress.borrow_mut().retry(i, from, to),
            &mut |done, total| progress.borrow_mut().tiles(i, done, total),
            views,
        )?;
        tile = used;
        progress.borrow_mut().slice(i, probs);
    }
    Ok(tile)
}
