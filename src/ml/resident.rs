//! Class probabilities that stay on the device: overlap-tile inference assembled in one
//! device tensor (no read-back per tile), and, on the wgpu device the display shares, the
//! buffer that holds it ([`GpuPlanes`]), so that the viewer copies it into its textures on the
//! GPU instead of receiving it from the CPU.
//!
//! burn's wgpu runtime hands out the buffer of a tensor through CubeCL's `get_resource`,
//! which pins the allocation while the returned resource lives; the pending GPU work is
//! flushed to the shared queue before the buffer is handed over, so that the display's copy,
//! submitted later on the same queue, reads finished values (burn's documented contract for
//! sharing a device: flush, and keep the allocation alive while others use it).

use std::sync::Arc;

use burn::backend::{BackendTensor, DispatchTensorKind};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::wgpu::wgpu;

use crate::data::Plane;
use crate::ml::cancel::CancelToken;
use crate::ml::error::MlError;
use crate::ml::infer::{TilePlan, check_channels, image_tensor, tensor_values};
use crate::ml::unet::{UNet, UNetConfig};
use crate::preprocess::D4;

/// wgpu's alignment of a row in a buffer-to-texture copy, in `f32`s (256 bytes).
pub const ROW_ALIGN: usize = 64;

/// `D4::apply` on the last two dimensions (height, width) of a `[K, H, W]` tensor.
pub fn d4_tensor(view: D4, t: Tensor<3>) -> Tensor<3> {
    let mut cur = if view.flip { t.flip([2]) } else { t };
    for _ in 0..view.rot90 % 4 {
        // Counter-clockwise: new[y][x] = old[x][w - 1 - y], the transpose flipped upside down.
        cur = cur.swap_dims(1, 2).flip([1]);
    }
    cur
}

/// The class probabilities of a normalised image as one `[K, H, W]` tensor on `device`: the
/// mean over `views` of overlap-tile predictions, each mapped back, as
/// [`crate::ml::infer::predict_probabilities_tta`] computes them, but assembled on the device.
#[allow(clippy::too_many_arguments)]
pub fn predict_resident(
    model: &UNet,
    cfg: &UNetConfig,
    image: &[Plane<f32>],
    tile_out: usize,
    device: &Device,
    cancel: &CancelToken,
    on_tile: &mut dyn FnMut(usize, usize),
    views: &[D4],
) -> Result<Tensor<3>, MlError> {
    check_channels(cfg, image)?;
    let n = views.len().max(1);
    let identity = [D4::default()];
    let views = if views.is_empty() {
        &identity[..]
    } else {
        views
    };
    let mut sum: Option<Tensor<3>> = None;
    for (v, &view) in views.iter().enumerate() {
        let turned: Vec<Plane<f32>> = image.iter().map(|c| view.apply(c)).collect();
        let probs = assemble(
            model,
            cfg,
            &turned,
            tile_out,
            device,
            cancel,
            &mut |d, t| on_tile(v * t + d, n * t),
        )?;
        let back = d4_tensor(view.inverse(), probs);
        sum = Some(match sum {
            None => back,
            Some(acc) => acc + back,
        });
    }
    let sum = sum.ok_or_else(|| MlError::Backend("no view to predict".into()))?;
    Ok(if n > 1 { sum * (1.0 / n as f32) } else { sum })
}

/// One view's overlap-tile prediction, each tile's probabilities written into a `[K, H, W]`
/// tensor on the device (later tiles overwrite the overlap, as on the CPU).
fn assemble(
    model: &UNet,
    cfg: &UNetConfig,
    image: &[Plane<f32>],
    tile_out: usize,
    device: &Device,
    cancel: &CancelToken,
    on_tile: &mut dyn FnMut(usize, usize),
) -> Result<Tensor<3>, MlError> {
    let (w, h) = (image[0].width, image[0].height);
    let plan = TilePlan::new(cfg, w, h, tile_out)?;
    let (k, tile) = (cfg.classes, plan.tile);
    let mut out = Tensor::<3>::zeros([k, h, w], device);
    let total = plan.origins.len();
    for (done, &(tx, ty)) in plan.origins.iter().enumerate() {
        if cancel.is_cancelled() {
            return Err(MlError::Cancelled);
        }
        let crop = plan.crop(image, (tx, ty));
        let (tw, th) = (tile.min(w - tx), tile.min(h - ty));
        // On this thread, not in the compute pool: CubeCL keeps a stream per thread, and
        // the tiles written into `out` from pool threads were not all visible to the
        // reader on this one (the last tile of a 512 px slice read back as zeros on
        // lavapipe). The GPU queues the operations either way.
        let probs = softmax(model.forward(image_tensor(&crop, device)), 1);
        let part = probs.slice([0..1, 0..k, 0..th, 0..tw]).reshape([k, th, tw]);
        out = out.slice_assign([0..k, ty..ty + th, tx..tx + tw], part);
        on_tile(done + 1, total);
    }
    Ok(out)
}

/// The planes of a `[K, H, W]` tensor, read back (class 1 first).
pub fn planes_of(t: Tensor<3>) -> Result<Vec<Plane<f32>>, MlError> {
    let [k, h, w] = t.dims();
    let values = tensor_values(t)?;
    Ok((0..k)
        .map(|c| Plane {
            width: w,
            height: h,
            data: values[c * w * h..(c + 1) * w * h].to_vec(),
        })
        .collect())
}

/// Class probabilities in a buffer of the wgpu device: `classes` planes of `height` rows of
/// `pitch` floats (the first `width` of each row are the pixels; the pitch is a multiple of
/// [`ROW_ALIGN`]), starting at `offset` bytes. Holds the allocation in place while it lives.
#[derive(Clone)]
pub struct GpuPlanes {
    /// Planes (classes).
    pub classes: u32,
    /// Pixels per row.
    pub width: u32,
    /// Rows per plane.
    pub height: u32,
    /// Floats from one row to the next.
    pub pitch: u32,
    /// The buffer.
    pub buffer: wgpu::Buffer,
    /// Where the first plane starts in it, in bytes.
    pub offset: u64,
    /// The pinned allocation and the tensor that owns it.
    _keep: Arc<dyn std::any::Any + Send + Sync>,
}

impl std::fmt::Debug for GpuPlanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GpuPlanes({} x {} x {}, pitch {}, offset {})",
            self.classes, self.height, self.width, self.pitch, self.offset
        )
    }
}

impl GpuPlanes {
    /// The buffer of a `[K, H, W]` tensor on burn's wgpu backend, rows padded to
    /// [`ROW_ALIGN`] floats; `None` for a tensor of another backend (the CPU).
    pub fn of(t: Tensor<3>) -> Result<Option<Self>, MlError> {
        let [k, h, w] = t.dims();
        let pitch = w.div_ceil(ROW_ALIGN) * ROW_ALIGN;
        let padded = if pitch > w {
            let pad = Tensor::<3>::zeros([k, h, pitch - w], &t.device());
            Tensor::cat(vec![t, pad], 2)
        } else {
            t
        };
        let DispatchTensorKind::Cube(BackendTensor::Float(cube)) = padded.into_dispatch().kind
        else {
            return Ok(None);
        };
        // The server of burn's wgpu runtime (the default, automatic compiler); a client of
        // another service answers with an error, not a wrong buffer.
        type Server = burn::cubecl::wgpu::WgpuServer<burn::cubecl::wgpu::AutoCompiler>;
        let backend = |e: &dyn std::fmt::Debug| MlError::Backend(format!("{e:?}"));
        let res = cube
            .client
            .get_resource::<Server>(cube.handle.clone())
            .map_err(|e| backend(&e))?;
        cube.client.flush().map_err(|e| backend(&e))?;
        let (buffer, offset, size) = {
            let r = res.resource();
            (r.buffer.clone(), r.offset, r.size)
        };
        let need = (k * h * pitch * 4) as u64;
        if size < need {
            return Err(MlError::Backend(format!(
                "the probabilities' buffer holds {size} bytes, {need} expected"
            )));
        }
        Ok(Some(Self {
            classes: k as u32,
            width: w as u32,
            height: h as u32,
            pitch: pitch as u32,
            buffer,
            offset,
            _keep: Arc::new(std::sync::Mutex::new((res, cube))),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: usize, h: usize, k: usize) -> Vec<Plane<f32>> {
        (0..k)
            .map(|c| Plane {
                width: w,
                height: h,
                data: (0..w * h).map(|i| (i * 7 + c * 1000) as f32).collect(),
            })
            .collect()
    }

    fn tensor_of(planes: &[Plane<f32>], device: &Device) -> Tensor<3> {
        let (w, h) = (planes[0].width, planes[0].height);
        let data: Vec<f32> = planes.iter().flat_map(|p| p.data.clone()).collect();
        Tensor::<1>::from_floats(data.as_slice(), device).reshape([planes.len(), h, w])
    }

    /// Each of the 8 symmetries on a tensor moves every value where `D4::apply` moves it (a
    /// non-square image, so a wrong transpose cannot pass).
    #[test]
    fn symmetries_of_a_tensor_match_those_of_planes() {
        let device = Device::flex();
        let planes = ramp(5, 3, 2);
        for view in D4::all() {
            let want: Vec<Plane<f32>> = planes.iter().map(|p| view.apply(p)).collect();
            let got = planes_of(d4_tensor(view, tensor_of(&planes, &device))).unwrap();
            assert_eq!(got, want, "{view:?}");
        }
    }

    /// The device-assembled prediction equals the CPU-assembled one, with one view and with
    /// all 8, on an image that needs several tiles.
    #[test]
    fn resident_prediction_matches_the_tiled_prediction() {
        let device = Device::flex();
        let cfg = UNetConfig {
            base_channels: 4,
            depth: 2,
            ..UNetConfig::preset(crate::ml::Preset::Lite, 2)
        };
        let model = cfg.init(&device);
        let image = vec![Plane {
            width: 70,
            height: 45,
            data: (0..70 * 45)
                .map(|i| ((i * 37) % 101) as f32 / 100.0)
                .collect(),
        }];
        for views in [vec![D4::default()], D4::all().to_vec()] {
            let cancel = CancelToken::default();
            let want = crate::ml::infer::predict_probabilities_tta(
                &model,
                &cfg,
                &image,
                20,
                &device,
                &cancel,
                &mut |_, _| {},
                &views,
            )
            .unwrap();
            let got = planes_of(
                predict_resident(
                    &model,
                    &cfg,
                    &image,
                    20,
                    &device,
                    &cancel,
                    &mut |_, _| {},
                    &views,
                )
                .unwrap(),
            )
            .unwrap();
            let worst = got
                .iter()
                .zip(&want)
                .flat_map(|(a, b)| a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()))
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-6, "{} views: {worst}", views.len());
        }
    }

    /// A CPU tensor has no wgpu buffer.
    #[test]
    fn a_cpu_tensor_has_no_gpu_planes() {
        let t = Tensor::<3>::zeros([2, 3, 4], &Device::flex());
        assert!(GpuPlanes::of(t).unwrap().is_none());
    }
}
