//! The 3x3 convolution as blocked im2col + GEMM (the `gemm` crate), the kernel every CPU has.
//!
//! The weight `[Cout, Cin, 3, 3]` is read as a `Cout x 9 Cin` matrix whose column
//! `k = ci * 9 + kh * 3 + kw` matches the row `k` of the im2col buffer. The im2col buffer is
//! built for a band of output rows at a time (a few MB), so memory stays bounded and bands run
//! in parallel; bands write their rows of the output directly (each band owns a disjoint set
//! of output rows), so no per-band result is copied afterwards.

use rayon::prelude::*;

use super::common::{BandOutput, ConvShape, Padded, with_scratch, zeros};
use super::relu::relu_in_place;

/// Threads of a GEMM: all of them when it is the only one running (one band), else one.
pub(crate) fn gemm_threads(bands: usize) -> gemm::Parallelism {
    if bands <= 1 {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    }
}

/// Safe wrapper of `gemm::gemm` for row-major strided f32 matrices:
/// `dst[m x n] = (accumulate ? dst : 0) + lhs[m x k] . rhs[k x n]`.
/// Strides are `(row stride, column stride)` in elements; every index that the product
/// touches is checked against the slice lengths before the call.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
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
    par: gemm::Parallelism,
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
    // SAFETY: `dst` is borrowed mutably, its matrix lies inside it (checked above) and it
    // cannot alias `lhs` or `rhs`.
    unsafe {
        sgemm_raw(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_s,
            accumulate,
            lhs,
            lhs_s,
            rhs,
            rhs_s,
            par,
        )
    }
}

/// [`sgemm`] into a raw destination.
///
/// # Safety
/// `dst` must be valid for writes of the whole `m x n` strided matrix, and no other live
/// reference may cover those elements.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm_raw(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_s: (usize, usize),
    accumulate: bool,
    lhs: &[f32],
    lhs_s: (usize, usize),
    rhs: &[f32],
    rhs_s: (usize, usize),
    par: gemm::Parallelism,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let last =
        |rows: usize, cols: usize, s: (usize, usize)| (rows - 1) * s.0 + (cols.max(1) - 1) * s.1;
    assert!(last(m, k, lhs_s) < lhs.len(), "sgemm: lhs out of bounds");
    assert!(last(k, n, rhs_s) < rhs.len(), "sgemm: rhs out of bounds");
    // SAFETY: lhs and rhs lie inside their slices (checked above); the caller guarantees dst.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
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
            par,
        );
    }
}

/// Fills `col` (`9 Cin x rows*Wo`) with the patches of output rows `oy0 .. oy0 + rows` of one
/// image `x` (`Cin x H x W`), reading zeros outside the image (implicit padding `p.pad`).
pub(crate) fn im2col_band(x: &[f32], p: &Padded, oy0: usize, rows: usize, col: &mut [f32]) {
    let s = &p.s;
    let n = rows * p.wo();
    for (ci, dst) in col.chunks_exact_mut(9 * n).take(s.cin).enumerate() {
        im2col_channel(&x[ci * s.h * s.w..(ci + 1) * s.h * s.w], p, oy0, rows, dst);
    }
}

/// [`im2col_band`] of one input channel (`plane`) into its 9 rows of the buffer.
pub(crate) fn im2col_channel(plane: &[f32], p: &Padded, oy0: usize, rows: usize, col: &mut [f32]) {
    let s = &p.s;
    let (w, wo, pad) = (s.w, p.wo(), p.pad as isize);
    let n = rows * wo;
    for kh in 0..3 {
        for kw in 0..3 {
            let dst = &mut col[(kh * 3 + kw) * n..(kh * 3 + kw + 1) * n];
            // Output columns whose input column ox + kw - pad lies inside 0..w.
            let shift = kw as isize - pad;
            let lo = (-shift).clamp(0, wo as isize) as usize;
            let hi = (w as isize - shift).clamp(lo as isize, wo as isize) as usize;
            for r in 0..rows {
                let d = &mut dst[r * wo..(r + 1) * wo];
                let iy = (oy0 + r + kh) as isize - pad;
                if iy < 0 || iy >= s.h as isize {
                    d.fill(0.0);
                    continue;
                }
                let row = &plane[iy as usize * w..(iy as usize + 1) * w];
                d[..lo].fill(0.0);
                let start = (lo as isize + shift) as usize;
                d[lo..hi].copy_from_slice(&row[start..start + (hi - lo)]);
                d[hi..].fill(0.0);
            }
        }
    }
}

/// Output row `oy` of the unfolding in pixel-major layout (`col^T`): the row of output pixel
/// `(oy, ox)` holds `X[ci, oy + kh, ox + kw]` at `ci * 9 + kh * 3 + kw`.
pub(crate) fn im2col_pixel_rows(x: &[f32], s: &ConvShape, oy: usize, rows: &mut [f32]) {
    let (plane, w, k) = (s.h * s.w, s.w, 9 * s.cin);
    for (ox, row) in rows.chunks_exact_mut(k).enumerate() {
        for (ci, taps) in row.as_chunks_mut::<9>().0.iter_mut().enumerate() {
            let at = ci * plane + oy * w + ox;
            let r = |kh: usize| &x[at + kh * w..at + kh * w + 3];
            let (r0, r1, r2) = (r(0), r(1), r(2));
            *taps = [
                r0[0], r0[1], r0[2], r1[0], r1[1], r1[2], r2[0], r2[1], r2[2],
            ];
        }
    }
}

/// Whether the CPU runs [`super::avx512_gemm::gemm_rows`].
pub(crate) fn unpacked_products() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::avx512::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Up to this many input channels the (unpadded) forward pass accumulates shifted rows
/// directly: with a reduction of only `9 Cin` a GEMM spends its time packing, not multiplying.
const DIRECT_MAX_CIN: usize = 4;

/// `out[co][r] += sum_{ci, kh, kw} W[co, ci, kh, kw] x[ci, oy0 + r + kh, kw ..]`, where
/// `out[co]` is the band's segment (`rows * Wo` values) of output channel `co`.
fn direct_band(x: &[f32], weight: &[f32], s: &ConvShape, oy0: usize, out: &mut [&mut [f32]]) {
    let (w, wo) = (s.w, s.wo());
    for (co, o) in out.iter_mut().enumerate() {
        for (r, orow) in o.chunks_exact_mut(wo).enumerate() {
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

/// Convolution with implicit zero padding; returns `Cout x Ho x Wo`.
pub(crate) fn conv3x3_padded(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    p: &Padded,
    relu: bool,
    y: &mut [f32],
) {
    let s = &p.s;
    let (ho, wo, k) = (p.ho(), p.wo(), p.k());
    let plane = ho * wo;
    assert_eq!(x.len(), s.cin * s.h * s.w, "conv3x3: input size");
    assert_eq!(weight.len(), s.cout * k, "conv3x3: weight size");
    assert_eq!(y.len(), s.cout * plane, "conv3x3: output size");
    let shared = BandOutput {
        ptr: y.as_mut_ptr(),
        len: y.len(),
    };
    let bands = p.bands();
    let par = gemm_threads(bands.len());
    bands.into_par_iter().for_each(|(oy0, rows)| {
        let n = rows * wo;
        // SAFETY: bands cover disjoint output rows, so their segments never overlap.
        let mut out = unsafe {
            BandOutput::segments(shared.base().0, shared.base().1, s.cout, plane, oy0 * wo, n)
        };
        // The bias, or zeros for the shifted-row kernel, which accumulates (`y` may hold
        // anything).
        for (co, seg) in out.iter_mut().enumerate() {
            seg.fill(bias.map_or(0.0, |b| b[co]));
        }
        if p.pad == 0 && s.cin <= DIRECT_MAX_CIN {
            direct_band(x, weight, s, oy0, &mut out);
            if relu {
                relu_in_place(&mut out);
            }
            return;
        }
        // The band's rows of all channels form a `cout x n` matrix with row stride `plane`
        // inside `y`; gemm writes exactly those elements.
        drop(out);
        // SAFETY: the matrix spans rows co * plane + oy0 * wo .. + n for co < cout: inside `y`
        // (asserted below) and disjoint from the other bands' rows.
        let last = (s.cout - 1) * plane + oy0 * wo + n;
        assert!(last <= shared.base().1, "band matrix out of bounds");
        with_scratch(k * n, |col| {
            im2col_band(x, p, oy0, rows, col);
            unsafe {
                sgemm_raw(
                    s.cout,
                    n,
                    k,
                    shared.base().0.add(oy0 * wo),
                    (plane, 1),
                    bias.is_some(),
                    weight,
                    (k, 1),
                    col,
                    (n, 1),
                    par,
                );
            }
        });
        if relu {
            // The band is still in cache: the activation costs no extra pass over memory.
            // SAFETY: as above, this band's rows only.
            let mut out = unsafe {
                BandOutput::segments(shared.base().0, shared.base().1, s.cout, plane, oy0 * wo, n)
            };
            relu_in_place(&mut out);
        }
    });
}

/// One input channel's gradient from its 9 rows of `dcol` (`9 x Ho Wo`): `d` (`H x W`,
/// zeros) plus the sum over taps `(kh, kw)` of the tap's row placed at offset `(kh, kw)`.
pub(crate) fn col2im_channel(dcol: &[f32], s: &ConvShape, d: &mut [f32]) {
    let (w, ho, wo) = (s.w, s.ho(), s.wo());
    for (t, tap) in dcol.chunks_exact(ho * wo).enumerate() {
        let (kh, kw) = (t / 3, t % 3);
        for (oy, src) in tap.chunks_exact(wo).enumerate() {
            let at = (oy + kh) * w + kw;
            for (o, v) in d[at..at + wo].iter_mut().zip(src) {
                *o += v;
            }
        }
    }
}

/// `K x Cout` (the GEMM's layout of the weight gradient) to `Cout x K` (burn's).
pub(crate) fn transpose_to_cout_k(dwt: &[f32], cout: usize, k: usize) -> Vec<f32> {
    let mut dw = zeros(cout * k);
    // By blocks of 16 output rows in parallel: each reads 16 consecutive values of every
    // row of `dwt`.
    dw.par_chunks_mut(16 * k).enumerate().for_each(|(b, rows)| {
        for (kk, src) in dwt.chunks_exact(cout).enumerate() {
            for (c, row) in rows.chunks_exact_mut(k).enumerate() {
                row[kk] = src[b * 16 + c];
            }
        }
    });
    dw
}

/// [`super::avx512_gemm::gemm_rows`] (only called where [`unpacked_products`] holds).
pub(crate) fn gemm_rows(
    mnk: (usize, usize, usize),
    a: &[f32],
    a_s: (usize, usize),
    b: &[f32],
    b_rs: usize,
    c: &mut [f32],
    c_rs: usize,
) {
    #[cfg(target_arch = "x86_64")]
    super::avx512_gemm::gemm_rows(mnk, a, a_s, b, b_rs, c, c_rs);
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "unpacked_products is false without the direct kernels: {mnk:?} {a_s:?} {b_rs} {c_rs} {} {} {}",
        a.len(),
        b.len(),
        c.len()
    );
}
