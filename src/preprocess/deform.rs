//! Random elastic deformation as in the U-Net paper: displacement vectors on a coarse 3x3
//! grid drawn from a Gaussian (10 px standard deviation), per-pixel displacements by bicubic
//! interpolation of the grid. The field is a plain value that can be stored and shown.

use crate::data::{Plane, mirror_index};
use crate::preprocess::rng::Rng;

/// Parameters of the random elastic deformation.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ElasticConfig {
    /// Control points per side of the coarse grid (paper: 3).
    pub grid: usize,
    /// Standard deviation of each displacement component in pixels (paper: 10).
    pub sigma_px: f32,
}

impl Default for ElasticConfig {
    fn default() -> Self {
        Self {
            grid: 3,
            sigma_px: 10.0,
        }
    }
}

/// A deformation: displacement vectors at `grid x grid` control points spread evenly over a
/// `width x height` image (corners included). Sampling is backward: the output pixel `x`
/// takes the input value at `x + d(x)`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeformationField {
    /// Image width the field is laid over.
    pub width: usize,
    /// Image height the field is laid over.
    pub height: usize,
    /// Control points per side.
    pub grid: usize,
    /// `(dx, dy)` per control point, row-major over the grid.
    pub control: Vec<[f32; 2]>,
    /// The seed the field was drawn with (`None` for hand-made fields).
    pub seed: Option<u64>,
}

/// Interpolation used when sampling a warped plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Interpolation {
    /// Cubic convolution (Keys, a = -0.5) over 4x4 pixels.
    Bicubic,
    /// Bilinear over 2x2 pixels.
    Bilinear,
    /// Nearest pixel; the only choice for label and weight planes.
    Nearest,
}

/// Keys' cubic convolution kernel with a = -0.5 (Catmull-Rom): interpolating, C1-continuous.
#[inline]
fn cubic_weights(t: f32) -> [f32; 4] {
    let a = -0.5f32;
    let w = |x: f32| {
        let x = x.abs();
        if x <= 1.0 {
            ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
        } else {
            0.0
        }
    };
    [w(1.0 + t), w(t), w(1.0 - t), w(2.0 - t)]
}

impl DeformationField {
    /// The identity: every displacement is zero.
    pub fn identity(width: usize, height: usize, grid: usize) -> Self {
        let grid = grid.max(2);
        Self {
            width,
            height,
            grid,
            control: vec![[0.0, 0.0]; grid * grid],
            seed: None,
        }
    }

    /// A random field: each component of each control vector ~ N(0, sigma^2), from `seed`.
    pub fn random(width: usize, height: usize, cfg: &ElasticConfig, seed: u64) -> Self {
        let grid = cfg.grid.max(2);
        let mut rng = Rng::new(seed);
        let control = (0..grid * grid)
            .map(|_| {
                [
                    rng.normal() as f32 * cfg.sigma_px,
                    rng.normal() as f32 * cfg.sigma_px,
                ]
            })
            .collect();
        Self {
            width,
            height,
            grid,
            control,
            seed: Some(seed),
        }
    }

    /// The dense per-pixel displacement `(dx, dy)`, by bicubic interpolation of the control
    /// grid (control points outside the grid are clamped to its edge).
    pub fn dense(&self) -> (Plane<f32>, Plane<f32>) {
        let (w, h, g) = (self.width, self.height, self.grid);
        let mut dx = Plane::filled(w, h, 0.0f32);
        let mut dy = Plane::filled(w, h, 0.0f32);
        let to_grid = |p: usize, len: usize| -> f32 {
            if len <= 1 {
                0.0
            } else {
                p as f32 * (g - 1) as f32 / (len - 1) as f32
            }
        };
        let clamp = |i: isize| i.clamp(0, g as isize - 1) as usize;
        // Per-column weights and indices, reused for every row.
        let cols: Vec<([usize; 4], [f32; 4])> = (0..w)
            .map(|x| {
                let u = to_grid(x, w);
                let i = (u.floor() as isize).min(g as isize - 2);
                let t = u - i as f32;
                let idx = [clamp(i - 1), clamp(i), clamp(i + 1), clamp(i + 2)];
                (idx, cubic_weights(t))
            })
            .collect();
        for y in 0..h {
            let v = to_grid(y, h);
            let j = (v.floor() as isize).min(g as isize - 2);
            let t = v - j as f32;
            let rows = [clamp(j - 1), clamp(j), clamp(j + 1), clamp(j + 2)];
            let wy = cubic_weights(t);
            // Interpolate along y first: one value per grid column.
            let mut col_vals = vec![[0.0f32; 2]; g];
            for (gx, cv) in col_vals.iter_mut().enumerate() {
                for (r, wr) in rows.iter().zip(wy) {
                    let c = self.control[r * g + gx];
                    cv[0] += wr * c[0];
                    cv[1] += wr * c[1];
                }
            }
            for (x, (idx, wx)) in cols.iter().enumerate() {
                let mut a = [0.0f32; 2];
                for (&i, &wi) in idx.iter().zip(wx) {
                    a[0] += wi * col_vals[i][0];
                    a[1] += wi * col_vals[i][1];
                }
                dx.set(x, y, a[0]);
                dy.set(x, y, a[1]);
            }
        }
        (dx, dy)
    }

    /// The largest displacement length at any control point.
    pub fn max_control_displacement(&self) -> f32 {
        self.control
            .iter()
            .map(|c| c[0].hypot(c[1]))
            .fold(0.0, f32::max)
    }
}

/// Samples `src` at `(x + dx, y + dy)` for every pixel, mirroring outside the plane.
/// `dx`/`dy` must have `src`'s size.
pub fn warp_f32(
    src: &Plane<f32>,
    dx: &Plane<f32>,
    dy: &Plane<f32>,
    interp: Interpolation,
) -> Plane<f32> {
    let (w, h) = (src.width, src.height);
    let mut out = Plane::filled(w, h, 0.0f32);
    let px = |x: isize, y: isize| src.at(mirror_index(x, w), mirror_index(y, h));
    for y in 0..h {
        for x in 0..w {
            let sx = x as f32 + dx.at(x, y);
            let sy = y as f32 + dy.at(x, y);
            let v = match interp {
                Interpolation::Nearest => px(sx.round() as isize, sy.round() as isize),
                Interpolation::Bilinear => {
                    let (x0, y0) = (sx.floor(), sy.floor());
                    let (tx, ty) = (sx - x0, sy - y0);
                    let (x0, y0) = (x0 as isize, y0 as isize);
                    let top = px(x0, y0) * (1.0 - tx) + px(x0 + 1, y0) * tx;
                    let bot = px(x0, y0 + 1) * (1.0 - tx) + px(x0 + 1, y0 + 1) * tx;
                    top * (1.0 - ty) + bot * ty
                }
                Interpolation::Bicubic => {
                    let (x0, y0) = (sx.floor(), sy.floor());
                    let wx = cubic_weights(sx - x0);
                    let wy = cubic_weights(sy - y0);
                    let (x0, y0) = (x0 as isize, y0 as isize);
                    let mut acc = 0.0f32;
                    for (j, wyj) in wy.iter().enumerate() {
                        let yy = y0 - 1 + j as isize;
                        let mut row = 0.0f32;
                        for (i, wxi) in wx.iter().enumerate() {
                            row += wxi * px(x0 - 1 + i as isize, yy);
                        }
                        acc += wyj * row;
                    }
                    acc
                }
            };
            out.set(x, y, v);
        }
    }
    out
}

/// Nearest-neighbour warp for label-like planes (values are only ever copied, never mixed).
pub fn warp_nearest<T: Copy>(src: &Plane<T>, dx: &Plane<f32>, dy: &Plane<f32>) -> Plane<T> {
    let (w, h) = (src.width, src.height);
    let mut data = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            let sx = (x as f32 + dx.at(x, y)).round() as isize;
            let sy = (y as f32 + dy.at(x, y)).round() as isize;
            data.push(src.at(mirror_index(sx, w), mirror_index(sy, h)));
        }
    }
    Plane {
        width: w,
        height: h,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: usize, h: usize) -> Plane<f32> {
        let mut p = Plane::filled(w, h, 0.0);
        for y in 0..h {
            for x in 0..w {
                p.set(x, y, (x * 7 + y * 13 % 5) as f32 + (x as f32 * 0.3).sin());
            }
        }
        p
    }

    #[test]
    fn zero_displacement_is_the_identity() {
        let img = ramp(23, 17);
        let (dx, dy) = DeformationField::identity(23, 17, 3).dense();
        for interp in [
            Interpolation::Bicubic,
            Interpolation::Bilinear,
            Interpolation::Nearest,
        ] {
            assert_eq!(
                warp_f32(&img, &dx, &dy, interp).data,
                img.data,
                "{interp:?}"
            );
        }
        let labels = img.map(|v| v as u8);
        assert_eq!(warp_nearest(&labels, &dx, &dy), labels);
    }

    #[test]
    fn dense_field_passes_through_control_points() {
        let f = DeformationField::random(41, 21, &ElasticConfig::default(), 7);
        let (dx, dy) = f.dense();
        for gy in 0..3 {
            for gx in 0..3 {
                let (x, y) = (gx * 20, gy * 10);
                let c = f.control[gy * 3 + gx];
                assert!((dx.at(x, y) - c[0]).abs() < 1e-4);
                assert!((dy.at(x, y) - c[1]).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn constant_shift_moves_the_image() {
        let img = ramp(16, 16);
        let mut f = DeformationField::identity(16, 16, 3);
        f.control = vec![[2.0, 1.0]; 9];
        let (dx, dy) = f.dense();
        let out = warp_f32(&img, &dx, &dy, Interpolation::Bicubic);
        // Integer shifts sample exactly on pixels: bicubic reproduces them.
        for y in 0..14 {
            for x in 0..13 {
                assert!((out.at(x, y) - img.at(x + 2, y + 1)).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn labels_stay_in_their_label_set_and_sigma_is_respected() {
        let labels =
            Plane::from_vec(32, 32, (0..1024).map(|i| [0u8, 1, 2, 7][i % 4]).collect()).unwrap();
        let mut norms = Vec::new();
        for seed in 0..200 {
            let f = DeformationField::random(32, 32, &ElasticConfig::default(), seed);
            norms.extend(f.control.iter().flat_map(|c| [c[0], c[1]]));
            let (dx, dy) = f.dense();
            let out = warp_nearest(&labels, &dx, &dy);
            assert!(out.data.iter().all(|v| [0, 1, 2, 7].contains(v)));
        }
        let n = norms.len() as f32;
        let mean = norms.iter().sum::<f32>() / n;
        let sd = (norms.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt();
        assert!(mean.abs() < 1.0, "mean {mean}");
        assert!((sd - 10.0).abs() < 0.6, "sd {sd}");
        // Same seed, same field.
        let a = DeformationField::random(32, 32, &ElasticConfig::default(), 5);
        assert_eq!(
            a,
            DeformationField::random(32, 32, &ElasticConfig::default(), 5)
        );
    }
}
