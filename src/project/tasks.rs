//! What the command line and the app do alike: predicting a stack slice by slice, and
//! predicting a stack larger than memory into files, one slice at a time.

use burn::prelude::Device;

use crate::data::error::DataError;
use crate::data::io::{MaskStream, TiffStream, commit};
use crate::data::plane::Plane;
use crate::ml::cancel::CancelToken;
use crate::ml::error::MlError;
use crate::ml::infer::predict_fitting;
use crate::ml::memory::with_smaller_tiles;
use crate::ml::resident::{GpuPlanes, planes_of, predict_resident};
use crate::ml::unet::{UNet, UNetConfig};
use crate::postprocess::Decision;
use crate::preprocess::{D4, normalize_percentile};
use std::sync::Arc;

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

/// Outputs written slice by slice as slices are predicted (a stack larger than memory): the
/// mask by the model's rule and the class probabilities, each optional; staged under
/// temporary names until [`Self::commit`] renames them into place, all or nothing.
pub struct StreamedOutputs {
    /// The rule that turns probabilities into classes.
    pub decision: Decision,
    /// The mask, when asked for.
    pub mask: Option<MaskStream>,
    /// The probabilities (every class of every slice), when asked for.
    pub probs: Option<TiffStream>,
    /// The first write that failed (reported after its slice).
    failed: Option<DataError>,
    /// A tile reduction of the last slice: (from, to) px.
    retried: Option<(usize, usize)>,
}

impl StreamedOutputs {
    /// Outputs by `decision` into `mask` and `probs`.
    pub fn new(decision: Decision, mask: Option<MaskStream>, probs: Option<TiffStream>) -> Self {
        Self {
            decision,
            mask,
            probs,
            failed: None,
            retried: None,
        }
    }

    /// Renames the complete outputs into place.
    pub fn commit(self) -> Result<(), DataError> {
        let mut staged = Vec::new();
        if let Some(m) = self.mask {
            staged.push(m.finish()?);
        }
        if let Some(p) = self.probs {
            staged.push(p.finish()?);
        }
        commit(staged)
    }
}

impl SliceProgress for StreamedOutputs {
    fn retry(&mut self, _: usize, from: usize, to: usize) {
        self.retried = Some((from, to));
    }
    fn slice(&mut self, _: usize, probs: Vec<Plane<f32>>) {
        let mut write = || -> Result<(), DataError> {
            if let Some(m) = &mut self.mask {
                m.push(&self.decision.classes(&probs))?;
            }
            if let Some(p) = &mut self.probs {
                for plane in &probs {
                    p.push_f32(plane)?;
                }
            }
            Ok(())
        };
        if let Err(e) = write() {
            self.failed.get_or_insert(e);
        }
    }
}

/// Predicts `n` slices read one at a time by `read` (every channel of a slice; the network
/// takes the channels `pick`) into `out`, as [`predict_slices`] does, holding one slice at a
/// time. `after(done, retried)` is called after each slice with the slices done and a tile
/// reduction (from, to) if the slice needed one. Returns the tile in use at the end.
#[allow(clippy::too_many_arguments)]
pub fn predict_streamed(
    net: (&UNet, &UNetConfig),
    (n, pick): (usize, &[usize]),
    read: &mut dyn FnMut(usize) -> Result<Arc<[Plane<f32>]>, DataError>,
    mut tile: usize,
    views: &[D4],
    run: (&Device, &CancelToken),
    out: &mut StreamedOutputs,
    after: &mut dyn FnMut(usize, Option<(usize, usize)>),
) -> Result<usize, MlError> {
    for s in 0..n {
        if run.1.is_cancelled() {
            return Err(MlError::Cancelled);
        }
        let image = read(s)?;
        let chosen = pick
            .iter()
            .map(|&c| {
                image.get(c).ok_or_else(|| {
                    MlError::Channels(format!(
                        "slice {s} has {} channel(s); the network reads channel {}",
                        image.len(),
                        c + 1
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        tile = predict_slices(net, &[chosen], tile, views, run, out)?;
        if let Some(e) = out.failed.take() {
            return Err(e.into());
        }
        after(s + 1, out.retried.take());
    }
    Ok(tile)
}
