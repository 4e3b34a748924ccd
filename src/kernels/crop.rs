//! Copies of feature maps: the centre crop of a skip connection, its gradient (the crop put
//! back into zeros) and plain copies, in parallel by planes.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::common::{planes_per_task, write_copy};

/// The centre `h x w` window of `sh x sw` planes, the U-Net's crop of a skip connection: the
/// window starts at row `(sh - h) / 2`, column `(sw - w) / 2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crop {
    /// Height and width of the full planes.
    pub full: (usize, usize),
    /// Height and width of the window.
    pub window: (usize, usize),
}

impl Crop {
    /// Row and column of the window's first pixel.
    pub fn origin(&self) -> (usize, usize) {
        (
            (self.full.0 - self.window.0) / 2,
            (self.full.1 - self.window.1) / 2,
        )
    }
}

/// Copies the window of each full plane of `src` into the planes of `dst` (as many; every
/// value written, so `dst` may start uninitialised), in parallel over planes.
pub fn crop_into(src: &[f32], c: &Crop, dst: &mut [MaybeUninit<f32>]) {
    let ((sh, sw), (h, w), (oy, ox)) = (c.full, c.window, c.origin());
    if h * w == 0 {
        return;
    }
    assert!(
        dst.len().is_multiple_of(h * w) && dst.len() / (h * w) * sh * sw == src.len(),
        "crop_into: planes"
    );
    dst.par_chunks_mut(h * w)
        .with_min_len(planes_per_task(h * w))
        .zip(src.par_chunks(sh * sw))
        .for_each(|(d, s)| {
            for (row, out) in d.chunks_exact_mut(w).enumerate() {
                let at = (oy + row) * sw + ox;
                write_copy(out, &s[at..at + w]);
            }
        });
}

/// The reverse of [`crop_into`]: each window plane of `src` into the window of a full plane of
/// `dst`, zeros around it (all of `dst` written: it may start uninitialised). The gradient of
/// the crop.
pub fn uncrop_into(src: &[f32], c: &Crop, dst: &mut [MaybeUninit<f32>]) {
    let ((sh, sw), (h, w), (oy, ox)) = (c.full, c.window, c.origin());
    let zero = MaybeUninit::new(0.0f32);
    dst.par_chunks_mut(sh * sw)
        .enumerate()
        .with_min_len(planes_per_task(sh * sw))
        .for_each(|(p, d)| {
            for (y, out) in d.chunks_exact_mut(sw).enumerate() {
                if (oy..oy + h).contains(&y) {
                    let at = (p * h + y - oy) * w;
                    out[..ox].fill(zero);
                    write_copy(&mut out[ox..ox + w], &src[at..at + w]);
                    out[ox + w..].fill(zero);
                } else {
                    out.fill(zero);
                }
            }
        });
}

/// Copies `src` into `dst` (same length; `dst` may start uninitialised) in parallel chunks.
pub fn copy_into(src: &[f32], dst: &mut [MaybeUninit<f32>]) {
    const CHUNK: usize = 1 << 16;
    assert_eq!(dst.len(), src.len(), "copy_into: lengths");
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| write_copy(d, s));
}
