//! Unpacked matrix products for CPUs with AVX-512: the deep levels' small maps (up to 10 x 10
//! outputs, 128-256 channels), where packing the operands for the `gemm` crate costs more than
//! the products.

use std::arch::x86_64::{
    __mmask16, _mm512_fmadd_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_set1_ps,
    _mm512_setzero_ps,
};

use rayon::prelude::*;

use super::avx512::{available, lanes};

/// Rows of `C` per register block of [`gemm_rows`].
const GM: usize = 6;

/// 16-float vectors of a row of `C` per register block of [`gemm_rows`].
const GN: usize = 4;

/// `C = A . B` for small matrices, without packing: `A` is `m x k`, its element `(i, l)` at
/// `a[i * a_s.0 + l * a_s.1]`; `B` is `k x n` with rows `b_rs` floats apart (each row
/// contiguous); `C` is `m x n` with rows `c_rs` floats apart, all overwritten. A register
/// block of 6 rows x 64 columns takes, per `l`, 4 loads of a row of `B`, 6 broadcasts from `A`
/// and 24 fused multiply-adds. Tasks by blocks of rows, in parallel.
///
/// For the up-convolution on the deep levels (a few hundred channels, 8-20 px maps): the
/// general GEMM packed its whole weight matrix for every chunk of 2-4 input rows.
///
/// # Panics
/// If the CPU lacks AVX-512F ([`available`]) or an operand is too short for its shape.
#[allow(clippy::too_many_arguments)]
pub fn gemm_rows(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    a_s: (usize, usize),
    b: &[f32],
    b_rs: usize,
    c: &mut [f32],
    c_rs: usize,
) {
    assert!(available(), "avx512: the CPU lacks AVX-512F");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        n <= c_rs && c.len() >= (m - 1) * c_rs + n,
        "gemm_rows: C too short"
    );
    let c = &mut c[..(m - 1) * c_rs + n];
    if k == 0 {
        c.chunks_mut(c_rs).take(m).for_each(|r| r[..n].fill(0.0));
        return;
    }
    assert!(
        n <= b_rs && b.len() >= (k - 1) * b_rs + n,
        "gemm_rows: B too short"
    );
    assert!(
        a.len() > (m - 1) * a_s.0 + (k - 1) * a_s.1,
        "gemm_rows: A too short"
    );
    // About 16 register blocks per task (fewer tasks than that and one thread idles at the
    // end of the many small products of a training step).
    let col_blocks = n.div_ceil(16 * GN);
    let per_task = (16 / col_blocks).clamp(1, 16);
    c.par_chunks_mut(GM * c_rs)
        .enumerate()
        .with_min_len(per_task)
        .for_each(|(blk, rows)| {
            let i0 = blk * GM;
            let mr = GM.min(m - i0);
            for j0 in (0..n).step_by(16 * GN) {
                let masks: [__mmask16; GN] =
                    std::array::from_fn(|v| lanes(n.saturating_sub(j0 + 16 * v)));
                // Rows past `m` repeat the last one (computed, not stored).
                let arow: [usize; GM] = std::array::from_fn(|i| (i0 + i.min(mr - 1)) * a_s.0);
                // SAFETY: AVX-512F is present (asserted); A's elements (i0 + i, l) for i < mr,
                // l < k, B's lanes j0 + 16 v + lane < n of rows l < k, and C's of rows
                // i0 + i < m lie inside the slices (asserted above); `rows` starts at row i0.
                unsafe { gemm_block(a, &arow, a_s.1, k, b, b_rs, j0, &masks, rows, c_rs, mr) };
            }
        });
}

/// One register block of [`gemm_rows`]: rows `arow` (offsets into `a`) times columns `j0 ..
/// j0 + 64` (lanes under `masks`), into the first `mr` rows of `rows`.
///
/// # Safety
/// AVX-512F; the reads and writes described lie inside the slices.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_block(
    a: &[f32],
    arow: &[usize; GM],
    a_cs: usize,
    k: usize,
    b: &[f32],
    b_rs: usize,
    j0: usize,
    masks: &[__mmask16; GN],
    rows: &mut [f32],
    c_rs: usize,
    mr: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); GN]; GM];
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    for l in 0..k {
        let br = bp.wrapping_add(l * b_rs + j0);
        let mut bv = [_mm512_setzero_ps(); GN];
        for v in 0..GN {
            // SAFETY: lanes under the mask are inside B (caller).
            bv[v] = unsafe { _mm512_maskz_loadu_ps(masks[v], br.wrapping_add(16 * v)) };
        }
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: element (row i, l) of A (caller).
            let av = _mm512_set1_ps(unsafe { *ap.add(arow[i] + l * a_cs) });
            for v in 0..GN {
                row[v] = _mm512_fmadd_ps(av, bv[v], row[v]);
            }
        }
    }
    let cp = rows.as_mut_ptr();
    for (i, row) in acc.iter().enumerate().take(mr) {
        for v in 0..GN {
            // SAFETY: row i < mr of this block, lanes under the mask (caller).
            unsafe {
                _mm512_mask_storeu_ps(cp.add(i * c_rs + j0 + 16 * v), masks[v], row[v]);
            }
        }
    }
}
