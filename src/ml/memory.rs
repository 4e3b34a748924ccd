//! Tile sizes that fit the device's memory, and a retry with a smaller tile when the device
//! runs out of memory anyway.
//!
//! The paper favours large tiles over large batches; how large depends on the device. The
//! CPU's budget is half the memory the system reports available; a GPU's largest single
//! buffer is its `max_storage_buffer_binding_size` / `max_buffer_size` limit, and its total
//! (which wgpu does not report) is assumed to be [`ASSUMED_GPU_BYTES`], or the system's budget
//! for a software adapter. Estimates come from [`UNetConfig::memory_estimate`]. When a pass
//! fails anyway with an allocation error, [`with_smaller_tiles`] runs it again with the next
//! smaller tile; burn's wgpu backend reports such failures as a panic with the allocation
//! error, and the device stays usable afterwards (tested on lavapipe with lowered limits).

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use burn::tensor::wgpu::wgpu;

use crate::ml::error::MlError;
use crate::ml::unet::UNetConfig;

/// GPU memory assumed when the adapter does not say (wgpu reports limits, not capacity).
pub const ASSUMED_GPU_BYTES: u64 = 2 << 30;

/// What a device can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Bytes one pass may use in total.
    pub budget_bytes: u64,
    /// Largest single tensor (one GPU buffer) in bytes.
    pub max_tensor_bytes: u64,
}

impl MemoryLimits {
    /// The CPU: half of the memory the system reports available (4 GiB when unknown).
    pub fn cpu() -> Self {
        let budget = crate::data::io::probe::available_memory().map_or(4 << 30, |b| b / 2);
        Self {
            budget_bytes: budget,
            max_tensor_bytes: budget,
        }
    }

    /// A wgpu device with these limits; `software` adapters use system memory.
    pub fn gpu(max_buffer_size: u64, max_binding_size: u64, software: bool) -> Self {
        let budget = if software {
            Self::cpu().budget_bytes
        } else {
            ASSUMED_GPU_BYTES
        };
        Self {
            budget_bytes: budget,
            max_tensor_bytes: max_buffer_size.min(max_binding_size),
        }
    }

    /// [`Self::gpu`] of a wgpu device and its adapter.
    pub fn of_wgpu(device: &wgpu::Device, adapter: &wgpu::Adapter) -> Self {
        let limits = device.limits();
        Self::gpu(
            limits.max_buffer_size,
            limits.max_storage_buffer_binding_size,
            adapter.get_info().device_type == wgpu::DeviceType::Cpu,
        )
    }
}

/// The largest valid output tile of at most `max_out` pixels whose pass fits `limits`
/// (the smallest valid tile when none does: the attempt then reports the failure).
pub fn largest_fitting_tile(
    unet: &UNetConfig,
    limits: &MemoryLimits,
    training: bool,
    max_out: usize,
) -> usize {
    let geometry = unet.geometry();
    let valid = geometry.valid_outputs(max_out.max(1));
    valid
        .iter()
        .rev()
        .copied()
        .find(|&out| {
            geometry
                .input_size(out)
                .and_then(|input| unet.memory_estimate(input, training))
                .is_some_and(|m| {
                    m.total_bytes <= limits.budget_bytes
                        && m.largest_tensor_bytes <= limits.max_tensor_bytes
                })
        })
        .or_else(|| valid.first().copied())
        .unwrap_or_else(|| geometry.nearest_valid_output(max_out))
}

/// The next smaller valid output tile to try after `tile` ran out of memory: about half the
/// pixels, `None` when `tile` is already the smallest.
pub fn smaller_tile(unet: &UNetConfig, tile: usize) -> Option<usize> {
    let geometry = unet.geometry();
    let target = (tile as f64 / std::f64::consts::SQRT_2) as usize;
    let valid = geometry.valid_outputs(tile.saturating_sub(1));
    valid
        .iter()
        .rev()
        .copied()
        .find(|&o| o <= target)
        .or_else(|| valid.first().copied())
}

/// Whether an error message is a device allocation failure.
pub fn is_out_of_memory(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "out of memory",
        "outofmemory",
        "can't allocate",
        "cannot allocate",
        "allocation failed",
        "failed to allocate",
        "max_buffer_size",
        "max_storage_buffer_binding_size",
    ]
    .iter()
    .any(|k| m.contains(k))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_default()
}

/// Runs `attempt(tile)`; when it fails by running out of device memory (an error or a
/// panic saying so), runs it again with the next smaller tile, calling `on_retry(failed,
/// next)` first, until the smallest tile. Other errors are returned and other panics
/// continue unwinding.
pub fn with_smaller_tiles<T>(
    unet: &UNetConfig,
    first_tile: usize,
    on_retry: &mut dyn FnMut(usize, usize),
    attempt: &mut dyn FnMut(usize) -> Result<T, MlError>,
) -> Result<T, MlError> {
    let mut tile = first_tile;
    loop {
        let failure = match catch_unwind(AssertUnwindSafe(|| attempt(tile))) {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if is_out_of_memory(&e.to_string()) => e.to_string(),
            Ok(Err(e)) => return Err(e),
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                if !is_out_of_memory(&message) {
                    resume_unwind(payload);
                }
                message
            }
        };
        match smaller_tile(unet, tile) {
            Some(next) => {
                on_retry(tile, next);
                tile = next;
            }
            None => {
                return Err(MlError::Backend(format!(
                    "out of memory even with the smallest tile ({tile} px): {failure}"
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::unet::Preset;

    #[test]
    fn tiles_follow_the_memory_limits() {
        let lite = UNetConfig::preset(Preset::Lite, 2);
        let roomy = MemoryLimits {
            budget_bytes: 64 << 30,
            max_tensor_bytes: 64 << 30,
        };
        assert_eq!(largest_fitting_tile(&lite, &roomy, true, 388), 388);
        // One buffer of 16 MiB: the first map is 16 x (in - 2)^2 floats, so the input edge
        // must stay below 2 + sqrt(16 MiB / 64 B) = 514: output 324 (input 508) fits, the
        // next valid one (340, input 524) does not.
        let small_buffers = MemoryLimits {
            budget_bytes: 64 << 30,
            max_tensor_bytes: 16 << 20,
        };
        assert_eq!(largest_fitting_tile(&lite, &small_buffers, true, 388), 324);
        // A total budget: the chosen tile fits, the next valid one does not.
        let budget = MemoryLimits {
            budget_bytes: 300 << 20,
            max_tensor_bytes: 64 << 30,
        };
        let t = largest_fitting_tile(&lite, &budget, true, 2000);
        let g = lite.geometry();
        let bytes = |o: usize| {
            lite.memory_estimate(g.input_size(o).unwrap(), true)
                .unwrap()
                .total_bytes
        };
        assert!(bytes(t) <= 300 << 20);
        let next = g.valid_outputs(2000).into_iter().find(|&o| o > t).unwrap();
        assert!(bytes(next) > 300 << 20);
        // Nothing fits: the smallest valid tile (the attempt reports the failure).
        let tiny = MemoryLimits {
            budget_bytes: 1,
            max_tensor_bytes: 1,
        };
        assert_eq!(largest_fitting_tile(&lite, &tiny, true, 388), 4);
    }

    #[test]
    fn retries_with_smaller_tiles_only_on_out_of_memory() {
        let lite = UNetConfig::preset(Preset::Lite, 2);
        // Fails above 100 px with the wgpu backend's message, as a panic and as an error.
        let mut tried = Vec::new();
        let mut retries = Vec::new();
        let got = with_smaller_tiles(&lite, 388, &mut |a, b| retries.push((a, b)), &mut |tile| {
            tried.push(tile);
            if tile > 200 {
                panic!(
                    "An IO error happened\nCaused by:\n  can't allocate buffer of size: 5017600"
                );
            }
            if tile > 100 {
                return Err(MlError::Backend("Out of memory".into()));
            }
            Ok(tile)
        })
        .unwrap();
        assert!(got <= 100 && got > 50, "{got}");
        assert_eq!(tried.first(), Some(&388));
        assert!(tried.windows(2).all(|w| w[1] < w[0]), "{tried:?}");
        assert_eq!(retries.len(), tried.len() - 1);
        // Each retry roughly halves the pixels.
        for (a, b) in retries {
            let ratio = (b * b) as f64 / (a * a) as f64;
            assert!((0.3..0.65).contains(&ratio), "{a} -> {b}");
        }
        // Other errors are not retried.
        let mut n = 0;
        let e = with_smaller_tiles(&lite, 388, &mut |_, _| {}, &mut |_| -> Result<(), _> {
            n += 1;
            Err(MlError::Tile("bad".into()))
        });
        assert!(matches!(e, Err(MlError::Tile(_))) && n == 1);
        // The smallest tile failing too is an error that says so.
        let e = with_smaller_tiles(&lite, 36, &mut |_, _| {}, &mut |_| -> Result<(), _> {
            Err(MlError::Backend("out of memory".into()))
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("smallest tile (4 px)"), "{e}");
    }

    #[test]
    fn other_panics_keep_unwinding() {
        let lite = UNetConfig::preset(Preset::Lite, 2);
        let r = std::panic::catch_unwind(|| {
            with_smaller_tiles(
                &lite,
                100,
                &mut |_, _| {},
                &mut |_| -> Result<(), MlError> { panic!("index out of bounds") },
            )
        });
        assert!(r.is_err());
    }
}
