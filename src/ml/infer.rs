//! Overlap-tile inference: the image is cut into output tiles, each predicted from a larger
//! input tile whose missing context at the image border is mirrored.

use burn::prelude::*;
use burn::tensor::activation::softmax;

use crate::data::Plane;
use crate::ml::cancel::CancelToken;
use crate::ml::compute_pool::in_compute_pool;
use crate::ml::error::MlError;
use crate::ml::unet::{UNet, UNetConfig};
use crate::preprocess::{D4, TileGeometry, tile_origins};

/// The tile actually used for an image: the valid output edge nearest to `requested`, but no
/// larger than the smallest valid edge that covers the whole image.
pub fn effective_tile(
    geometry: &TileGeometry,
    requested: usize,
    width: usize,
    height: usize,
) -> usize {
    let tile = geometry.nearest_valid_output(requested.max(1));
    let cover = geometry.nearest_valid_output(width.max(height));
    let cover = if cover < width.max(height) {
        // Nearest may round down; take the next valid size up.
        let step = 1usize << geometry.depth;
        (cover + 1..=cover + 2 * step)
            .find(|&o| geometry.input_size(o).is_some())
            .unwrap_or(cover)
    } else {
        cover
    };
    // Tiles must reach the pooling grid step so that stitching stays exact.
    let align = 1usize << geometry.depth;
    let at_least = (align..=4 * align)
        .find(|&o| geometry.input_size(o).is_some())
        .unwrap_or(align);
    tile.min(cover).max(at_least)
}

/// Converts a plane into a `[1, 1, H, W]` tensor.
pub fn plane_tensor(p: &Plane<f32>, device: &Device) -> Tensor<4> {
    Tensor::from_data(
        TensorData::new(p.data.clone(), [1, 1, p.height, p.width]),
        device,
    )
}

/// Converts the channels of an image into a `[1, C, H, W]` tensor.
pub fn image_tensor(channels: &[Plane<f32>], device: &Device) -> Tensor<4> {
    let (w, h) = channels.first().map_or((0, 0), |p| (p.width, p.height));
    let data: Vec<f32> = channels
        .iter()
        .flat_map(|p| p.data.iter().copied())
        .collect();
    Tensor::from_data(TensorData::new(data, [1, channels.len(), h, w]), device)
}

/// Refuses an image whose channels the network does not take.
pub fn check_channels(cfg: &UNetConfig, image: &[Plane<f32>]) -> Result<(), MlError> {
    if image.len() != cfg.in_channels {
        return Err(MlError::Channels(format!(
            "the network takes {} channel(s) but the image has {}",
            cfg.in_channels,
            image.len()
        )));
    }
    Ok(())
}

/// Reads a tensor back as `f32`s.
pub fn tensor_values<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, MlError> {
    t.into_data()
        .try_to_vec::<f32>()
        .map_err(|e| MlError::Backend(format!("reading a tensor back: {e:?}")))
}

/// [`predict_probabilities_tta`] over `views`, again with a smaller tile when the device
/// runs out of memory (see [`crate::ml::memory::with_smaller_tiles`]; `on_retry(from, to)` is
/// told first). Returns the tile that worked, to start the next image with, and the
/// probabilities.
#[allow(clippy::too_many_arguments)]
pub fn predict_fitting(
    model: &UNet,
    cfg: &UNetConfig,
    image: &[Plane<f32>],
    tile_out: usize,
    device: &Device,
    cancel: &CancelToken,
    on_retry: &mut dyn FnMut(usize, usize),
    on_tile: &mut dyn FnMut(usize, usize),
    views: &[D4],
) -> Result<(usize, Vec<Plane<f32>>), MlError> {
    crate::ml::memory::with_smaller_tiles(cfg, tile_out, on_retry, &mut |t| {
        predict_probabilities_tta(model, cfg, image, t, device, cancel, on_tile, views)
            .map(|p| (t, p))
    })
}

/// The overlap tiles of an image: output tiles of `tile` px at `origins` (`(x, y)`, row by
/// row, the last of a row or column reaching the border), each predicted from an input of
/// `input` px reaching `margin` px beyond it, mirrored at the image border.
pub(crate) struct TilePlan {
    /// Output tile edge actually used ([`effective_tile`]).
    pub(crate) tile: usize,
    /// Input tile edge.
    pub(crate) input: usize,
    /// Context on each side of an output tile.
    pub(crate) margin: usize,
    /// Top-left corners of the output tiles.
    pub(crate) origins: Vec<(usize, usize)>,
}

impl TilePlan {
    /// The tiles of a `width x height` image for output tiles near `tile_out` px.
    pub(crate) fn new(
        cfg: &UNetConfig,
        width: usize,
        height: usize,
        tile_out: usize,
    ) -> Result<Self, MlError> {
        let geom = cfg.geometry();
        let tile = effective_tile(&geom, tile_out, width, height);
        let input = geom
            .input_size(tile)
            .ok_or_else(|| MlError::Tile(format!("no input size gives a {tile} px output")))?;
        let align = 1usize << cfg.depth;
        let xs = tile_origins(width, tile, align);
        let origins = tile_origins(height, tile, align)
            .into_iter()
            .flat_map(|ty| xs.iter().map(move |&tx| (tx, ty)))
            .collect();
        Ok(Self {
            tile,
            input,
            margin: (input - tile) / 2,
            origins,
        })
    }

    /// The input of the output tile at `(tx, ty)`: each channel cropped with its context.
    pub(crate) fn crop(&self, image: &[Plane<f32>], (tx, ty): (usize, usize)) -> Vec<Plane<f32>> {
        let m = self.margin as isize;
        image
            .iter()
            .map(|c| c.crop_mirrored(tx as isize - m, ty as isize - m, self.input, self.input))
            .collect()
    }
}

/// Class probabilities of every pixel of a normalised image, by overlap-tile prediction.
/// Returns one plane per class (class `k` at index `k - 1`). `on_tile(done, total)` is called
/// after each tile; the cancel token is checked between tiles.
pub fn predict_probabilities(
    model: &UNet,
    cfg: &UNetConfig,
    image: &[Plane<f32>],
    tile_out: usize,
    device: &Device,
    cancel: &CancelToken,
    on_tile: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Plane<f32>>, MlError> {
    predict_probabilities_where(
        model,
        cfg,
        image,
        tile_out,
        device,
        cancel,
        on_tile,
        &|_, _, _| true,
    )
}

/// [`predict_probabilities`] restricted to the output tiles for which
/// `want(x0, y0, edge)` is true; pixels of skipped tiles keep probability 0.
#[allow(clippy::too_many_arguments)]
pub fn predict_probabilities_where(
    model: &UNet,
    cfg: &UNetConfig,
    image: &[Plane<f32>],
    tile_out: usize,
    device: &Device,
    cancel: &CancelToken,
    on_tile: &mut dyn FnMut(usize, usize),
    want: &dyn Fn(usize, usize, usize) -> bool,
) -> Result<Vec<Plane<f32>>, MlError> {
    check_channels(cfg, image)?;
    let (w, h) = (image[0].width, image[0].height);
    let plan = TilePlan::new(cfg, w, h, tile_out)?;
    let tile = plan.tile;
    let mut out: Vec<Plane<f32>> = (0..cfg.classes).map(|_| Plane::filled(w, h, 0.0)).collect();
    let todo: Vec<(usize, usize)> = plan
        .origins
        .iter()
        .copied()
        .filter(|&(tx, ty)| want(tx, ty, tile))
        .collect();
    let total = todo.len();
    let mut done = 0;
    for &(tx, ty) in &todo {
        if cancel.is_cancelled() {
            return Err(MlError::Cancelled);
        }
        let crop = plan.crop(image, (tx, ty));
        let v = in_compute_pool(|| {
            tensor_values(softmax(model.forward(image_tensor(&crop, device)), 1))
        })?;
        for (k, plane) in out.iter_mut().enumerate() {
            let base = k * tile * tile;
            for y in 0..tile.min(h - ty) {
                let src = &v[base + y * tile..base + y * tile + tile.min(w - tx)];
                // Later tiles overwrite the overlap: identical values up to rounding.
                let row = (ty + y) * w + tx;
                plane.data[row..row + src.len()].copy_from_slice(src);
            }
        }
        done += 1;
        on_tile(done, total);
    }
    Ok(out)
}

/// Test-time augmentation: the mean of the probabilities predicted for each symmetry in
/// `views` of the image (each prediction mapped back), as the paper averaged over rotated
/// inputs. Costs one prediction per view; `views = [D4::default()]` is a plain prediction.
/// `on_tile(done, total)` counts tiles over all views.
#[allow(clippy::too_many_arguments)]
pub fn predict_probabilities_tta(
    model: &UNet,
    cfg: &UNetConfig,
    image: &[Plane<f32>],
    tile_out: usize,
    device: &Device,
    cancel: &CancelToken,
    on_tile: &mut dyn FnMut(usize, usize),
    views: &[D4],
) -> Result<Vec<Plane<f32>>, MlError> {
    let mut sum: Option<Vec<Plane<f32>>> = None;
    let n = views.len().max(1);
    for (v, view) in views.iter().enumerate() {
        let probs = predict_probabilities(
            model,
            cfg,
            &image.iter().map(|c| view.apply(c)).collect::<Vec<_>>(),
            tile_out,
            device,
            cancel,
            &mut |done, total| on_tile(v * total + done, n * total),
        )?;
        let back = view.inverse();
        let probs: Vec<Plane<f32>> = probs.iter().map(|p| back.apply(p)).collect();
        match &mut sum {
            None => sum = Some(probs),
            Some(acc) => {
                for (a, p) in acc.iter_mut().zip(&probs) {
                    for (x, y) in a.data.iter_mut().zip(&p.data) {
                        *x += y;
                    }
                }
            }
        }
    }
    let mut out = sum.unwrap_or_default();
    let scale = 1.0 / n as f32;
    for p in &mut out {
        for x in &mut p.data {
            *x *= scale;
        }
    }
    Ok(out)
}

/// Shannon entropy of the class distribution per pixel (in nats): where the net is unsure.
pub fn entropy(probs: &[Plane<f32>]) -> Plane<f32> {
    let Some(first) = probs.first() else {
        return Plane::filled(0, 0, 0.0);
    };
    let mut out = Plane::filled(first.width, first.height, 0.0f32);
    for (i, o) in out.data.iter_mut().enumerate() {
        *o = probs
            .iter()
            .map(|p| p.data[i])
            .filter(|&q| q > 0.0)
            .map(|q| -q * q.ln())
            .sum();
    }
    out
}
