//! What the command line and the app do alike: predicting a stack slice by slice.

use burn::prelude::Device;

use crate::data::plane::Plane;
use crate::ml::cancel::CancelToken;
use crate::ml::error::MlError;
use crate::ml::infer::predict_fitting;
use crate::ml::memory::with_smaller_tiles;
use crate::ml::resident::{GpuPlanes, planes_of, predict_resident};
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
    /// Whether to keep the slice's probabilities on the GPU as well (the slice the display
    /// shows, when burn computes on the display's device): they are assembled there and
    /// handed to [`Self::slice_on_gpu`] before [`Self::slice`] gets them read back.
    fn keep_on_gpu(&self, _slice: usize) -> bool {
        false
    }
    /// The slice's class probabilities in the GPU's buffer (see [`Self::keep_on_gpu`]).
    fn slice_on_gpu(&mut self, _slice: usize, _planes: GpuPlanes) {}
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
        let image: Vec<Plane<f32>> = slice.iter().map(|c| normalize_percentile(c)).collect();
        let on_retry = &mut |from, to| progress.borrow_mut().retry(i, from, to);
        let on_tile = &mut |done, total| progress.borrow_mut().tiles(i, done, total);
        let probs = if progress.borrow().keep_on_gpu(i) {
            let (used, on_device) = with_smaller_tiles(unet, tile, on_retry, &mut |t| {
                predict_resident(model, unet, &image, t, device, cancel, on_tile, views)
                    .map(|p| (t, p))
            })?;
            tile = used;
            let probs = planes_of(on_device.clone())?;
            if let Some(gpu) = GpuPlanes::of(on_device)? {
                progress.borrow_mut().slice_on_gpu(i, gpu);
            }
            probs
        } else {
            let (used, probs) = predict_fitting(
                model, unet, &image, tile, device, cancel, on_retry, on_tile, views,
            )?;
            tile = used;
            probs
        };
        progress.borrow_mut().slice(i, probs);
    }
    Ok(tile)
}
