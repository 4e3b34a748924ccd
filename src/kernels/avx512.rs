//! Direct 3x3 valid convolution, forward, for CPUs with AVX-512: the layers with few channels
//! (the U-Net's top levels: 16 or 32 channels on maps of 390-570 px) spend more time in
//! im2col and GEMM packing than in multiplying, because their reduction is only `9 Cin` long.
//! These kernels read the image in place instead: a register block of 8 output channels x 48
//! pixels of one output row (24 accumulators) takes, per input channel and tap, 3 unaligned
//! loads of the input row, 8 broadcasts of the (repacked) weights and 24 fused multiply-adds.
//!
//! Row tails use masked loads and stores. Layouts and results are those of
//! [`super::conv3x3`], whose dispatch chooses these kernels when the CPU has AVX-512F.

use std::arch::x86_64::{
    __mmask16, _MM_HINT_T0, _mm_prefetch, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_mask_storeu_ps, _mm512_maskz_compress_ps, _mm512_maskz_loadu_ps, _mm512_max_ps,
    _mm512_set1_ps, _mm512_setzero_ps,
};

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::common::{SharedOut, Taps, block_biases, spread_rows};

/// Output channels per register block of the forward kernel.
const CO: usize = 8;

/// 16-float vectors of one output row per register block of the forward kernel.
const PX: usize = 3;

/// Whether this CPU runs the kernels of this module.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Mask of the first `n` lanes (all 16 for `n >= 16`).
pub(crate) fn lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// Where the forward kernel finds the weights of one block of [`CO`] output channels, read in
/// place (no repacked copy): the weight of output channel `c` of the block, input channel `ci`
/// and tap `t = 3 kh + kw` is at `base + c * per_out + ci * per_in + t * per_tap` (offsets in
/// floats; strides rather than a table of offsets, so the kernel addresses them from
/// registers).
///
/// Repacking the weights into blocks before every pass (and, for the input gradient,
/// transposing them before that) cost as much as the convolution itself on the deep levels'
/// small maps: 590 K weights written twice per pass into freshly faulted pages.
#[derive(Clone, Copy)]
struct BlockWeights {
    base: *const f32,
    per_out: isize,
    per_in: isize,
    per_tap: isize,
}

impl BlockWeights {
    /// The weights of output channels `cb * CO ..` of a pass with `cin` input and `cout`
    /// output channels; a last block of fewer than [`CO`] channels reads `partial`
    /// ([`partial_block`]).
    fn new(
        taps: Taps<'_>,
        (cin, cout): (usize, usize),
        cb: usize,
        partial: Option<&[f32]>,
    ) -> Self {
        let first = cb * CO;
        // (the weights, offset of the block's first weight, floats between output channels,
        // per input channel, per tap)
        let (w, start, per_out, per_in, per_tap) = match (taps, partial) {
            (_, Some(p)) if first + CO > cout => (p, 0, cin * 9, 9, 1),
            // W[co, ci, t] = w[(co Cin + ci) 9 + t].
            (Taps::Given(w), _) => (w, first * cin * 9, cin * 9, 9, 1),
            // W[co, ci, t] = w[(ci Cout + co) 9 + 8 - t].
            (Taps::Flipped(w), _) => (w, first * 9 + 8, 9, cout * 9, -1),
        };
        Self {
            base: w.as_ptr().wrapping_add(start),
            per_out: per_out as isize,
            per_in: per_in as isize,
            per_tap,
        }
    }
}

/// The weights of the last block when `cout` is not a multiple of [`CO`]: `CO x Cin x 9`
/// floats, zero past the real channels (the kernel computes all [`CO`] and stores the real
/// ones; read in place, it would run past the weights).
fn partial_block(taps: Taps<'_>, cin: usize, cout: usize) -> Option<Vec<f32>> {
    let nco = cout % CO;
    if nco == 0 {
        return None;
    }
    let first = cout - nco;
    let mut block = vec![0.0f32; CO * cin * 9];
    for (c, rows) in block.chunks_exact_mut(cin * 9).take(nco).enumerate() {
        for (ci, taps9) in rows.chunks_exact_mut(9).enumerate() {
            for (t, v) in taps9.iter_mut().enumerate() {
                *v = taps.at((cin, cout), first + c, ci, t);
            }
        }
    }
    Some(block)
}

/// Forward pass of one image with `pad` pixels of implicit zero padding on every side: `x`
/// `Cin x H x W`, `weight` (`Cout x Cin x 3 x 3` in effect), into `y` (`Cout x (H+2pad-2) x
/// (W+2pad-2)` values, every one written: it may start uninitialised) plus `bias`, through a
/// ReLU when `relu`. (Padding 2 with [`Taps::Flipped`] weights is the input gradient.)
///
/// # Panics
/// If the CPU lacks AVX-512F ([`available`]) or the sizes disagree.
pub fn forward_into(
    x: &[f32],
    weight: Taps<'_>,
    bias: Option<&[f32]>,
    (cin, cout, h, w): (usize, usize, usize, usize),
    pad: usize,
    relu: bool,
    y: &mut [MaybeUninit<f32>],
) {
    let prep = prepare_forward(x, weight, bias, (cin, cout, h, w), pad, y.len());
    let (ho, wo) = prep.out;
    let out = SharedOut(y.as_mut_ptr().cast::<f32>());
    let (hi, wi, pi) = (h as isize, w as isize, pad as isize);
    (0..ho).into_par_iter().for_each(|oy| {
        // Taps whose input row oy + kh - pad lies inside the image.
        let oyi = oy as isize;
        let kh = (
            (pi - oyi).max(0) as usize,
            (hi + pi - oyi).clamp(0, 3) as usize,
        );
        // Pixel blocks outside, channel blocks inside: the block's input (Cin x 3 rows x 50
        // columns) stays in the L1 cache for all output channels.
        let mut ox0 = 0;
        while ox0 < wo {
            let n = (PX * 16).min(wo - ox0);
            let store: [(__mmask16, usize); PX] =
                std::array::from_fn(|p| (lanes(n.saturating_sub(16 * p)), 16 * p));
            // Lanes of vector p of tap column kw whose input column lies inside the row.
            let load: [[__mmask16; PX]; 3] = std::array::from_fn(|kw| {
                std::array::from_fn(|p| {
                    let start = (ox0 + 16 * p + kw) as isize - pi;
                    let lo = (-start).clamp(0, 16);
                    let hi = (wi - start).clamp(lo, 16);
                    let hi = hi.min(n.saturating_sub(16 * p) as isize).max(lo);
                    lanes(hi as usize) & !lanes(lo as usize)
                })
            });
            // Element of channel 0 at input row oy - pad, column ox0 - pad (may lie outside;
            // only lanes under the masks of rows inside the image are read).
            let origin = (oyi - pi) * wi + ox0 as isize - pi;
            for cb in 0..prep.biases.len() {
                let (wb, nco, b) = prep.block(cb);
                // SAFETY: AVX-512F is present (asserted); the block reads, of every channel,
                // input rows oy + kh - pad for kh in `kh` (inside 0..h) at the columns its
                // masks allow (inside 0..w), and writes output row oy, columns ox0..ox0+n, of
                // channels cb*8..cb*8+nco: inside `x` and `y`. Rows are written by one task
                // each.
                unsafe {
                    forward_block(&Block {
                        x: x.as_ptr().wrapping_offset(origin),
                        dims: (h * w, w, cin),
                        wb,
                        kh,
                        load: &load,
                        y: out.at((cb * CO) * ho * wo + oy * wo + ox0),
                        out: (ho * wo, nco),
                        store: &store,
                        bias: b,
                        relu,
                    });
                }
            }
            ox0 += n;
        }
    });
}

/// [`forward_into`] for narrow maps: the output is computed over the flattened rows of the
/// (padded) input, so that a register block of 48 pixels spans several output rows instead of
/// being cut at each row's end (on a map 12 px wide the row kernel fills a quarter of its
/// lanes). With the input's rows `W` floats apart, output pixel `(oy, ox)` at flat index
/// `j = oy W + ox` is `sum x[j + kh W + kw] * w[kh, kw]` over the taps: every tap reads the
/// input contiguously. The two flat indices per row past its last output (`ox >= W - 2`) are
/// computed and dropped: the block's vectors are compressed to the kept lanes as they are
/// stored, contiguously in the output's own layout. Padding is an explicit zero-bordered copy
/// of the input (small on the maps this kernel is for).
///
/// # Panics
/// If the CPU lacks AVX-512F ([`available`]) or the sizes disagree.
pub fn forward_flat_into(
    x: &[f32],
    weight: Taps<'_>,
    bias: Option<&[f32]>,
    (cin, cout, h, w): (usize, usize, usize, usize),
    pad: usize,
    relu: bool,
    y: &mut [MaybeUninit<f32>],
) {
    let prep = prepare_forward(x, weight, bias, (cin, cout, h, w), pad, y.len());
    let (ho, wo) = prep.out;
    let (hp, wp) = (ho + 2, wo + 2);
    let padded;
    let x = if pad == 0 {
        x
    } else {
        padded = spread_rows(x, (h, w), (hp * wp, wp), pad * wp + pad);
        &padded
    };
    // Flat outputs: the last one is (ho - 1, wo - 1), so the taps read up to hp * wp - 1.
    let len = (ho - 1) * wp + wo;
    let (blocks, cblocks) = (len.div_ceil(PX * 16), cout.div_ceil(CO));
    let out = SharedOut(y.as_mut_ptr().cast::<f32>());
    // Tasks by pixel block, channel blocks innermost: neighbouring tasks share their input.
    (0..blocks * cblocks).into_par_iter().for_each(|t| {
        let (jb, cb) = (t / cblocks, t % cblocks);
        let j0 = jb * PX * 16;
        let load: [__mmask16; PX] = std::array::from_fn(|p| lanes(len.saturating_sub(j0 + 16 * p)));
        let store: [(__mmask16, usize); PX] = std::array::from_fn(|p| {
            let mut keep: __mmask16 = 0;
            for l in 0..16 {
                let j = j0 + 16 * p + l;
                if j < len && j % wp < wo {
                    keep |= 1 << l;
                }
            }
            let first = j0 + 16 * p + keep.trailing_zeros().min(15) as usize;
            (keep, (first / wp) * wo + first % wp)
        });
        let (wb, nco, b) = prep.block(cb);
        // SAFETY: AVX-512F is present (asserted); the block reads, of every channel, the
        // lanes j0 + 16 p + l < len shifted by kh * wp + kw <= 2 wp + 2, so below
        // (ho - 1) wp + wo + 2 wp + 2 = hp * wp: inside `x`. It writes, of channels
        // cb*8..cb*8+nco, the outputs of its kept flat indices (each the output (j / wp,
        // j % wp) with j % wp < wo, inside `y`), which no other task writes.
        unsafe {
            forward_block(&Block {
                x: x.as_ptr().add(j0),
                dims: (hp * wp, wp, cin),
                wb,
                kh: (0, 3),
                load: &[load; 3],
                y: out.at((cb * CO) * ho * wo),
                out: (ho * wo, nco),
                store: &store,
                bias: b,
                relu,
            });
        }
    });
}

/// What both forward kernels need of their weights and biases, per block of [`CO`] output
/// channels ([`prepare_forward`]).
struct Prepared<'a> {
    taps: Taps<'a>,
    channels: (usize, usize),
    /// The biases by blocks of output channels.
    biases: Vec<[f32; CO]>,
    /// The last block's weights when it has fewer than [`CO`] channels ([`partial_block`]).
    partial: Option<Vec<f32>>,
    /// Output height and width.
    out: (usize, usize),
}

impl Prepared<'_> {
    /// Block `cb`'s weights, its number of real output channels and its biases.
    fn block(&self, cb: usize) -> (BlockWeights, usize, &[f32; CO]) {
        let nco = CO.min(self.channels.1 - cb * CO);
        let wb = BlockWeights::new(self.taps, self.channels, cb, self.partial.as_deref());
        (wb, nco, &self.biases[cb])
    }
}

/// Checks the sizes of a forward pass ([`forward_into`], [`forward_flat_into`]; `y_len`
/// output values) and prepares its weights and biases by blocks of output channels.
///
/// # Panics
/// If the CPU lacks AVX-512F ([`available`]) or the sizes disagree.
fn prepare_forward<'a>(
    x: &[f32],
    weight: Taps<'a>,
    bias: Option<&[f32]>,
    (cin, cout, h, w): (usize, usize, usize, usize),
    pad: usize,
    y_len: usize,
) -> Prepared<'a> {
    assert!(available(), "avx512: the CPU lacks AVX-512F");
    let (ho, wo) = super::common::check_forward(x, weight, bias, (cin, cout, h, w), pad, y_len);
    Prepared {
        taps: weight,
        channels: (cin, cout),
        biases: block_biases::<CO>(bias, cout),
        partial: partial_block(weight, cin, cout),
        out: (ho, wo),
    }
}

/// One register block of the forward kernels ([`forward_block`]): up to 48 pixels of one
/// output row (or of the flattened rows) for `nco <= 8` channels.
#[derive(Clone, Copy)]
struct Block<'a> {
    /// The block's input origin (channel 0, tap row 0, tap column 0).
    x: *const f32,
    /// Floats per input plane, per input row, and input channels.
    dims: (usize, usize, usize),
    /// The block's weights.
    wb: BlockWeights,
    /// The tap rows that lie inside the input.
    kh: (usize, usize),
    /// Lanes read of vector `p` of tap column `kw`: `load[kw][p]`.
    load: &'a [[__mmask16; PX]; 3],
    /// Where the block's first output channel's outputs start.
    y: *mut f32,
    /// Floats per output plane, and the real output channels of the block.
    out: (usize, usize),
    /// Lanes kept of vector `p` and where they are stored: `store[p]`.
    store: &'a [(__mmask16, usize); PX],
    bias: &'a [f32; CO],
    relu: bool,
}

/// Computes and stores one register block ([`Block`]).
///
/// # Safety
/// AVX-512F; `x` is the block's input origin (channel 0, tap row 0, tap column 0) in a
/// buffer of `cin` planes of `plane` floats with rows of `w` floats: for tap rows `kh.0 ..
/// kh.1` and every channel, the lanes under `load[kw][p]` at `x + ci * plane + kh * w + kw +
/// 16 p` must lie inside the buffer; `wb` points at `cin` input channels of weights inside
/// their buffer. Vector `p` of output
/// channel `c < nco` keeps the lanes under the mask `store[p].0`, which are stored contiguously
/// from `y + c * oplane + store[p].1`: those floats must be valid for writes.
unsafe fn forward_block(b: &Block<'_>) {
    // Blocks whose loads are all whole vectors (all but the edges) load without masks: a
    // mask register per load, 9 of them per block, is more than the 7 there are, and the
    // masks were reloaded from the stack for every load.
    // SAFETY: forwarded (caller); with `FULL`, every mask is whole.
    unsafe {
        if b.load.iter().flatten().all(|&m| m == 0xffff) {
            forward_block_as::<true>(b);
        } else {
            forward_block_as::<false>(b);
        }
    }
}

/// [`forward_block`], with unmasked loads when `FULL` (all masks of `load` whole).
///
/// # Safety
/// As [`forward_block`].
#[target_feature(enable = "avx512f")]
unsafe fn forward_block_as<const FULL: bool>(b: &Block<'_>) {
    let Block {
        x,
        dims: (plane, w, cin),
        wb,
        kh,
        load,
        y,
        out: (oplane, nco),
        store,
        bias,
        relu,
    } = *b;
    let mut acc = [[_mm512_setzero_ps(); PX]; CO];
    for ci in 0..cin {
        let xc = x.wrapping_add(ci * plane);
        let wc = wb.base.wrapping_offset(ci as isize * wb.per_in);
        // The weights 8 input channels ahead: read in place, one block's weights are 8
        // strided streams (or, for the input gradient, 288 bytes every Cout * 9 floats) that
        // the hardware prefetchers do not follow; on the deep levels (256 channels, 2.4 MB of
        // weights, not cached by the time the backward pass reaches them) the input
        // gradients took 2-3x as long as with warm weights. Prefetches never fault.
        let ahead = wc.wrapping_offset(8 * wb.per_in);
        for c in 0..CO {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_offset(c as isize * wb.per_out) as *const i8);
        }
        for kh in kh.0..kh.1 {
            // The input of this row two blocks ahead: one stream per input row and channel is
            // more than the hardware prefetchers follow (maps of 32 channels x 392 px ran at a
            // third of the speed of small ones without it; one block ahead reached 400 GF/s
            // on 16 channels x 570 px, two 460). Prefetches never fault.
            for p in 0..PX {
                _mm_prefetch::<_MM_HINT_T0>(
                    xc.wrapping_add(kh * w + 16 * (2 * PX + p)) as *const i8
                );
            }
            for (kw, masks) in load.iter().enumerate() {
                let xr = xc.wrapping_add(kh * w + kw);
                let mut xv = [_mm512_setzero_ps(); PX];
                for p in 0..PX {
                    // SAFETY: the lanes under the mask are inside the buffer (caller);
                    // masked-off lanes are not read.
                    xv[p] = unsafe {
                        if FULL {
                            _mm512_loadu_ps(xr.wrapping_add(16 * p))
                        } else {
                            _mm512_maskz_loadu_ps(masks[p], xr.wrapping_add(16 * p))
                        }
                    };
                }
                let wt = wc.wrapping_offset((kh * 3 + kw) as isize * wb.per_tap);
                for (c, row) in acc.iter_mut().enumerate() {
                    // SAFETY: a weight of this block (caller).
                    let wv = _mm512_set1_ps(unsafe { *wt.offset(c as isize * wb.per_out) });
                    for p in 0..PX {
                        row[p] = _mm512_fmadd_ps(wv, xv[p], row[p]);
                    }
                }
            }
        }
    }
    for (c, row) in acc.iter().enumerate().take(nco) {
        let b = _mm512_set1_ps(bias[c]);
        for p in 0..PX {
            let mut v = _mm512_add_ps(row[p], b);
            if relu {
                v = _mm512_max_ps(v, _mm512_setzero_ps());
            }
            let (keep, at) = store[p];
            // The kept lanes, moved to the front (a prefix mask keeps them in place).
            let v = _mm512_maskz_compress_ps(keep, v);
            // SAFETY: the stored lanes are the block's outputs of channel c (caller).
            unsafe {
                _mm512_mask_storeu_ps(
                    y.wrapping_add(c * oplane + at),
                    lanes(keep.count_ones() as usize),
                    v,
                );
            }
        }
    }
}
