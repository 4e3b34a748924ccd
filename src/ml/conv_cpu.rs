//! CPU kernels of the 3x3 valid convolution (stride 1, no dilation, no groups) and its two
//! gradients, as blocked im2col + GEMM. The U-Net spends most of its time here.
//!
//! Layouts are NCHW, row-major. The weight `[Cout, Cin, 3, 3]` is read as a `Cout x 9 Cin`
//! matrix whose column `k = ci * 9 + kh * 3 + kw` matches the row `k` of the im2col buffer.
//! The im2col buffer is built for a band of output rows at a time (a few MB), so memory stays
//! bounded and bands run in parallel.
//!
//! - forward: `Y = W . col(X) + b`;
//! - weight gradient: `dW = sum over bands dY_band . col_band(X)^T`;
//! - input gradient: the valid convolution of `dY` zero-padded by 2 with the weights
//!   transposed (`Cin <-> Cout`) and flipped — the same forward kernel.

use rayon::prelude::*;

/// Target size of one im2col band, in floats (4 MiB).
const BAND_FLOATS: usize = 1 << 20;

/// Shape of a 3x3 valid convolution on one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
}

impl ConvShape {
    /// Output height.
    pub fn ho(&self) -> usize {
        self.h - 2
    }
    /// Output width.
    pub fn wo(&self) -> usize {
        self.w - 2
    }
    fn k(&self) -> usize {
        self.cin * 9
    }
    /// Output rows per band.
    fn band_rows(&self) -> usize {
        let per_row = self.k() * self.wo();
        let rows = (BAND_FLOATS / per_row.max(1)).max(1);
        // At least 4 bands per thread when the image allows it, for load balance.
        let want = 4 * rayon::current_num_threads();
        rows.min(self.ho().div_ceil(want).max(1))
    }
}

/// Safe wrapper of `gemm::gemm` for row-major strided f32 matrices:
/// `dst[m x n] = (accumulate ? dst : 0) + lhs[m x k] . rhs[k x n]`.
/// Strides are `(row stride, column stride)` in elements; every index that the product
/// touches is checked against the slice lengths before the call.
#[allow(clippy::too_many_arguments)]
fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_s: (usize, usize),
    accumulate: bool,
    lhs: &[f32],
    lhs_s: (usize, usize),
    rhs: &[f32],
    rhs_s: (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    let last =
        |rows: usize, cols: usize, s: (usize, usize)| (rows - 1) * s.0 + (cols.max(1) - 1) * s.1;
    assert!(last(m, n, dst_s) < dst.len(), "sgemm: dst out of bounds");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst[i * dst_s.0 + j * dst_s.1] = 0.0;
                }
            }
        }
        return;
    }
    assert!(last(m, k, lhs_s) < lhs.len(), "sgemm: lhs out of bounds");
    assert!(last(k, n, rhs_s) < rhs.len(), "sgemm: rhs out of bounds");
    // SAFETY: the three matrices lie inside their slices (checked above), `dst` is borrowed
    // mutably and cannot alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_s.1 as isize,
            dst_s.0 as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_s.1 as isize,
            lhs_s.0 as isize,
            rhs.as_ptr(),
            rhs_s.1 as isize,
            rhs_s.0 as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Fills `col` (`9 Cin x rows*Wo`) with the patches of output rows `oy0 .. oy0 + rows` of one
/// image `x` (`Cin x H x W`).
fn im2col_band(x: &[f32], s: &ConvShape, oy0: usize, rows: usize, col: &mut [f32]) {
    let (w, wo) = (s.w, s.wo());
    let n = rows * wo;
    for ci in 0..s.cin {
        let plane = &x[ci * s.h * w..(ci + 1) * s.h * w];
        for kh in 0..3 {
            for kw in 0..3 {
                let k = ci * 9 + kh * 3 + kw;
                let dst = &mut col[k * n..(k + 1) * n];
                for r in 0..rows {
                    let src = &plane[(oy0 + r + kh) * w + kw..(oy0 + r + kh) * w + kw + wo];
                    dst[r * wo..(r + 1) * wo].copy_from_slice(src);
                }
            }
        }
    }
}

/// Up to this many input channels the forward pass accumulates shifted rows directly: with
/// a reduction of only `9 Cin` a GEMM spends its time packing, not multiplying.
const DIRECT_MAX_CIN: usize = 4;

/// `out[co, r, :] += sum_{ci, kh, kw} W[co, ci, kh, kw] x[ci, oy0 + r + kh, kw ..]` for the
/// rows of one band; `out` is `Cout x rows*Wo`.
fn direct_band(x: &[f32], weight: &[f32], s: &ConvShape, oy0: usize, rows: usize, out: &mut [f32]) {
    let (w, wo) = (s.w, s.wo());
    let n = rows * wo;
    for co in 0..s.cout {
        let o = &mut out[co * n..(co + 1) * n];
        for r in 0..rows {
            let orow = &mut o[r * wo..(r + 1) * wo];
            for ci in 0..s.cin {
                for kh in 0..3 {
                    let base = (ci * s.h + oy0 + r + kh) * w;
                    for kw in 0..3 {
                        let wv = weight[((co * s.cin + ci) * 3 + kh) * 3 + kw];
                        let src = &x[base + kw..base + kw + wo];
                        for (a, &b) in orow.iter_mut().zip(src) {
                            *a += wv * b;
                        }
                    }
                }
            }
        }
    }
}

fn bands(s: &ConvShape) -> Vec<(usize, usize)> {
    let r = s.band_rows();
    (0..s.ho())
        .step_by(r)
        .map(|oy0| (oy0, r.min(s.ho() - oy0)))
        .collect()
}

/// Forward pass for one image: `x` is `Cin x H x W`, `weight` `Cout x Cin x 3 x 3`, `bias`
/// `Cout` (optional); returns `Cout x (H-2) x (W-2)`.
pub fn conv3x3_forward(x: &[f32], weight: &[f32], bias: Option<&[f32]>, s: &ConvShape) -> Vec<f32> {
    let (ho, wo, k) = (s.ho(), s.wo(), s.k());
    let plane = ho * wo;
    let results: Vec<(usize, usize, Vec<f32>)> = bands(s)
        .into_par_iter()
        .map(|(oy0, rows)| {
            let n = rows * wo;
            let mut out = vec![0.0f32; s.cout * n];
            if let Some(b) = bias {
                for (co, row) in out.chunks_mut(n).enumerate() {
                    row.fill(b[co]);
                }
            }
            if s.cin <= DIRECT_MAX_CIN {
                direct_band(x, weight, s, oy0, rows, &mut out);
            } else {
                let mut col = vec![0.0f32; k * n];
                im2col_band(x, s, oy0, rows, &mut col);
                sgemm(
                    s.cout,
                    n,
                    k,
                    &mut out,
                    (n, 1),
                    true,
                    weight,
                    (k, 1),
                    &col,
                    (n, 1),
                );
            }
            (oy0, rows, out)
        })
        .collect();
    let mut y = vec![0.0f32; s.cout * plane];
    for (oy0, rows, out) in results {
        let n = rows * wo;
        for co in 0..s.cout {
            y[co * plane + oy0 * wo..co * plane + oy0 * wo + n]
                .copy_from_slice(&out[co * n..(co + 1) * n]);
        }
    }
    y
}

/// Weight gradient for one image: `dW[co, ci, kh, kw] = sum dY[co, oy, ox] X[ci, oy+kh, ox+kw]`.
/// `dy` is `Cout x (H-2) x (W-2)`; returns `Cout x Cin x 3 x 3`.
pub fn conv3x3_weight_grad(x: &[f32], dy: &[f32], s: &ConvShape) -> Vec<f32> {
    let (ho, wo, k) = (s.ho(), s.wo(), s.k());
    let plane = ho * wo;
    let partials: Vec<Vec<f32>> = bands(s)
        .into_par_iter()
        .map(|(oy0, rows)| {
            let n = rows * wo;
            let mut col = vec![0.0f32; k * n];
            im2col_band(x, s, oy0, rows, &mut col);
            // dW^T band (K x Cout) = col (K x n) . dY_band^T (n x Cout): both operands are
            // read along their contiguous dimension by the packing of the GEMM.
            let mut dwt = vec![0.0f32; k * s.cout];
            sgemm(
                k,
                s.cout,
                n,
                &mut dwt,
                (s.cout, 1),
                false,
                &col,
                (n, 1),
                &dy[oy0 * wo..],
                (1, plane),
            );
            dwt
        })
        .collect();
    let mut dwt = vec![0.0f32; k * s.cout];
    for p in partials {
        for (a, b) in dwt.iter_mut().zip(p) {
            *a += b;
        }
    }
    // Back to Cout x K.
    let mut dw = vec![0.0f32; s.cout * k];
    for (kk, row) in dwt.chunks_exact(s.cout).enumerate() {
        for (co, v) in row.iter().enumerate() {
            dw[co * k + kk] = *v;
        }
    }
    dw
}

/// Input gradient for one image: `dX = conv3x3_valid(pad2(dY), flip(W)^T)`; returns
/// `Cin x H x W`.
pub fn conv3x3_input_grad(dy: &[f32], weight: &[f32], s: &ConvShape) -> Vec<f32> {
    let (ho, wo) = (s.ho(), s.wo());
    let (hp, wp) = (ho + 4, wo + 4);
    let mut padded = vec![0.0f32; s.cout * hp * wp];
    for co in 0..s.cout {
        for oy in 0..ho {
            let src = &dy[co * ho * wo + oy * wo..co * ho * wo + (oy + 1) * wo];
            let d = co * hp * wp + (oy + 2) * wp + 2;
            padded[d..d + wo].copy_from_slice(src);
        }
    }
    // Transposed, flipped weights: Wt[ci, co, kh, kw] = W[co, ci, 2 - kh, 2 - kw].
    let mut wt = vec![0.0f32; s.cin * s.cout * 9];
    for co in 0..s.cout {
        for ci in 0..s.cin {
            for kh in 0..3 {
                for kw in 0..3 {
                    wt[((ci * s.cout + co) * 3 + kh) * 3 + kw] =
                        weight[((co * s.cin + ci) * 3 + (2 - kh)) * 3 + (2 - kw)];
                }
            }
        }
    }
    let back = ConvShape {
        cin: s.cout,
        cout: s.cin,
        h: hp,
        w: wp,
    };
    conv3x3_forward(&padded, &wt, None, &back)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_forward(x: &[f32], wt: &[f32], b: &[f32], s: &ConvShape) -> Vec<f32> {
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

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn forward_and_gradients_match_the_definition() {
        let s = ConvShape {
            cin: 3,
            cout: 5,
            h: 11,
            w: 9,
        };
        let x = pseudo(s.cin * s.h * s.w, 1);
        let wt = pseudo(s.cout * s.cin * 9, 2);
        let b = pseudo(s.cout, 3);
        let y = conv3x3_forward(&x, &wt, Some(&b), &s);
        let r = reference_forward(&x, &wt, &b, &s);
        for (a, e) in y.iter().zip(&r) {
            assert!((a - e).abs() < 1e-5);
        }
        // Gradients of L = sum(dy * y) by definition.
        let dy = pseudo(s.cout * s.ho() * s.wo(), 4);
        let dw = conv3x3_weight_grad(&x, &dy, &s);
        let dx = conv3x3_input_grad(&dy, &wt, &s);
        let (ho, wo) = (s.ho(), s.wo());
        let mut dw_ref = vec![0.0f64; wt.len()];
        let mut dx_ref = vec![0.0f64; x.len()];
        for co in 0..s.cout {
            for oy in 0..ho {
                for ox in 0..wo {
                    let g = f64::from(dy[(co * ho + oy) * wo + ox]);
                    for ci in 0..s.cin {
                        for kh in 0..3 {
                            for kw in 0..3 {
                                let xi = (ci * s.h + oy + kh) * s.w + ox + kw;
                                let wi = ((co * s.cin + ci) * 3 + kh) * 3 + kw;
                                dw_ref[wi] += g * f64::from(x[xi]);
                                dx_ref[xi] += g * f64::from(wt[wi]);
                            }
                        }
                    }
                }
            }
        }
        for (a, e) in dw.iter().zip(&dw_ref) {
            assert!((f64::from(*a) - e).abs() < 1e-4, "dw {a} vs {e}");
        }
        for (a, e) in dx.iter().zip(&dx_ref) {
            assert!((f64::from(*a) - e).abs() < 1e-4, "dx {a} vs {e}");
        }
    }

    #[test]
    fn many_bands_equal_one_band() {
        // Tall image: several bands run in parallel and are stitched.
        let s = ConvShape {
            cin: 2,
            cout: 3,
            h: 300,
            w: 7,
        };
        let x = pseudo(s.cin * s.h * s.w, 9);
        let wt = pseudo(s.cout * s.cin * 9, 8);
        let b = vec![0.0; 3];
        assert!(bands(&s).len() > 1);
        let y = conv3x3_forward(&x, &wt, None, &s);
        let r = reference_forward(&x, &wt, &b, &s);
        for (a, e) in y.iter().zip(&r) {
            assert!((a - e).abs() < 1e-5);
        }
    }
}
