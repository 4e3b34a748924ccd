//! Slow implementations of the kernels' definitions, in `f64`, for the tests of every
//! kernel file.

use super::common::ConvShape;
use super::upconv::UpShape;

/// The 3x3 valid convolution by its definition.
pub(crate) fn reference_forward(x: &[f32], wt: &[f32], b: &[f32], s: &ConvShape) -> Vec<f32> {
    let (ho, wo) = (s.ho(), s.wo());
    let mut y = vec![0.0f32; s.cout * ho * wo];
    for co in 0..s.cout {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut acc = b[co] as f64;
                for ci in 0..s.cin {
                    for kh in 0..3 {
                        for kw in 0..3 {
                            acc += f64::from(wt[((co * s.cin + ci) * 3 + kh) * 3 + kw])
                                * f64::from(x[(ci * s.h + oy + kh) * s.w + ox + kw]);
                        }
                    }
                }
                y[(co * ho + oy) * wo + ox] = acc as f32;
            }
        }
    }
    y
}

/// `n` pseudo-random values in [-0.5, 0.5) from `seed` (a linear congruential generator).
pub(crate) fn pseudo(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

/// The 2x2 up-convolution by its definition.
pub(crate) fn reference_up(x: &[f32], wt: &[f32], b: &[f32], s: &UpShape) -> Vec<f32> {
    let (h2, w2) = (2 * s.h, 2 * s.w);
    let mut y = vec![0.0f32; s.cout * h2 * w2];
    for co in 0..s.cout {
        for oy in 0..h2 {
            for ox in 0..w2 {
                let (i, a, j, bb) = (oy / 2, oy % 2, ox / 2, ox % 2);
                let mut acc = f64::from(b[co]);
                for ci in 0..s.cin {
                    acc += f64::from(wt[((ci * s.cout + co) * 2 + a) * 2 + bb])
                        * f64::from(x[(ci * s.h + i) * s.w + j]);
                }
                y[(co * h2 + oy) * w2 + ox] = acc as f32;
            }
        }
    }
    y
}
