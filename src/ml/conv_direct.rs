//! Direct 3x3 valid convolution kernels for CPUs with AVX-512: the layers with few channels
//! (the U-Net's top levels: 16 or 32 channels on maps of 390-570 px) spend more time in
//! im2col and GEMM packing than in multiplying, because their reduction is only `9 Cin` long.
//! These kernels read the image in place instead.
//!
//! - forward: a register block of 8 output channels x 48 pixels of one output row (24
//!   accumulators) takes, per input channel and tap, 3 unaligned loads of the input row, 8
//!   broadcasts of the (repacked) weights and 24 fused multiply-adds;
//! - weight gradient: a block of 3 output channels x the 9 taps of one input channel (27
//!   accumulators) takes, per 16 output pixels, 3 loads of the output gradient, 9 loads of the
//!   input and 27 fused multiply-adds; the sums are reduced across lanes once per band.
//!
//! Row tails use masked loads and stores. Layouts and results are those of
//! [`super::conv_cpu`], which chooses these kernels when the CPU has AVX-512F.

use std::arch::x86_64::{
    __m512, __mmask16, _MM_HINT_T0, _mm_prefetch, _mm512_add_ps, _mm512_fmadd_ps, _mm512_load_ps,
    _mm512_loadu_ps, _mm512_mask_storeu_ps, _mm512_maskz_compress_ps, _mm512_maskz_loadu_ps,
    _mm512_max_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_shuffle_f32x4, _mm512_shuffle_ps,
    _mm512_store_ps, _mm512_storeu_ps, _mm512_unpackhi_ps, _mm512_unpacklo_ps,
};

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::conv_cpu::Taps;

/// Output channels per register block of the forward kernel.
const CO: usize = 8;
/// 16-float vectors of one output row per register block of the forward kernel.
const PX: usize = 3;
/// Output channels per register block of the weight-gradient kernel.
const GCO: usize = 3;
/// Output maps up to this many pixels take the weight gradient in tasks by output channels.
const SMALL_PLANE: usize = 128 * 128;

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
    assert!(available(), "conv_direct: the CPU lacks AVX-512F");
    let (ho, wo) = super::conv_cpu::check_forward(x, weight, bias, (cin, cout, h, w), pad, y_len);
    Prepared {
        taps: weight,
        channels: (cin, cout),
        biases: block_biases::<CO>(bias, cout),
        partial: partial_block(weight, cin, cout),
        out: (ho, wo),
    }
}

/// The planes of `src` (`rows x cols` each) in planes of `plane` floats with their rows
/// `stride` apart, the first row's first value at `origin`, zeros elsewhere: a zero-padded
/// copy, or a map laid out for the flattened-rows kernels.
pub(crate) fn spread_rows(
    src: &[f32],
    (rows, cols): (usize, usize),
    (plane, stride): (usize, usize),
    origin: usize,
) -> Vec<f32> {
    let per = (rows * cols).max(1);
    let len = src.len() / per * plane;
    let mut dst = Vec::with_capacity(len);
    // One pass over the copy (a zeroed allocation was a second, serial one).
    spread_uninit(
        src,
        (rows, cols),
        (plane, stride),
        origin,
        &mut dst.spare_capacity_mut()[..len],
    );
    // SAFETY: `spread_uninit` wrote all `len` floats.
    unsafe { dst.set_len(len) };
    dst
}

/// [`spread_rows`] into `dst` (`plane` floats per plane of `src`), every float written: the
/// zeros too.
pub(crate) fn spread_into(
    src: &[f32],
    rows_cols: (usize, usize),
    plane_stride: (usize, usize),
    origin: usize,
    dst: &mut [f32],
) {
    // SAFETY: only floats are written through the view, so `dst` stays initialised.
    spread_uninit(src, rows_cols, plane_stride, origin, unsafe {
        super::conv_cpu::as_uninit(dst)
    });
}

/// [`spread_into`] into memory that may start uninitialised.
fn spread_uninit(
    src: &[f32],
    (rows, cols): (usize, usize),
    (plane, stride): (usize, usize),
    origin: usize,
    dst: &mut [MaybeUninit<f32>],
) {
    let per = (rows * cols).max(1);
    let zero = |s: &mut [MaybeUninit<f32>]| s.fill(MaybeUninit::new(0.0));
    let spread = |(from, to): (&[f32], &mut [MaybeUninit<f32>])| {
        let mut at = 0;
        for (r, row) in from.chunks_exact(cols).enumerate() {
            let start = origin + r * stride;
            zero(&mut to[at..start]);
            super::conv_cpu::write_copy(&mut to[start..start + cols], row);
            at = start + cols;
        }
        zero(&mut to[at..]);
    };
    // In parallel when large (a serial copy here held the other thread up).
    if dst.len() >= 1 << 16 {
        src.par_chunks_exact(per)
            .zip(dst.par_chunks_exact_mut(plane))
            .for_each(spread);
    } else {
        src.chunks_exact(per)
            .zip(dst.chunks_exact_mut(plane))
            .for_each(spread);
    }
}

/// The biases of each block of `N` output channels (zero past `cout`, or without a bias).
pub(crate) fn block_biases<const N: usize>(bias: Option<&[f32]>, cout: usize) -> Vec<[f32; N]> {
    (0..cout.div_ceil(N))
        .map(|cb| {
            let mut b = [0.0f32; N];
            if let Some(bias) = bias {
                let nco = N.min(cout - cb * N);
                b[..nco].copy_from_slice(&bias[cb * N..cb * N + nco]);
            }
            b
        })
        .collect()
}

/// The output pointer shared by the tasks of a kernel (each writes its own elements: rows here,
/// blocks of outputs in [`super::conv_avx2`]).
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(pub(crate) *mut f32);
// SAFETY: tasks write disjoint elements of the buffer, which outlives them.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The element `off` of the buffer (a method, so closures capture the whole struct).
    ///
    /// # Safety
    /// `off` must lie inside the buffer.
    pub(crate) unsafe fn at(self, off: usize) -> *mut f32 {
        // SAFETY: in bounds (caller).
        unsafe { self.0.add(off) }
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

/// Weight gradient of one image: `dW[co, ci, kh, kw] = sum dY[co, oy, ox] X[ci, oy+kh, ox+kw]`;
/// `dy` is `Cout x (H-2) x (W-2)`; returns `Cout x Cin x 3 x 3`.
///
/// # Panics
/// If the CPU lacks AVX-512F ([`available`]) or the sizes disagree.
pub fn weight_grad(
    x: &[f32],
    dy: &[f32],
    (cin, cout, h, w): (usize, usize, usize, usize),
) -> Vec<f32> {
    let (ho, wo) = check_weight_grad(x, dy, (cin, cout, h, w));
    let blocks = cout.div_ceil(GCO);
    let shape = (cin, cout, h, w);
    let mut dw = vec![0.0f32; cout * cin * 9];
    if ho * wo <= SMALL_PLANE && blocks >= 2 * rayon::current_num_threads() {
        // A small map: tasks by blocks of output channels, each summing over the whole map
        // (bands of a few rows would each write and add up a whole partial gradient).
        dw.par_chunks_mut(GCO * cin * 9)
            .enumerate()
            .for_each(|(cb, out)| channel_block(x, dy, shape, cb, (0, ho), out));
        return dw;
    }
    // Bands of output rows per task: at least 4 tasks per thread for load balance.
    let tasks = 4 * rayon::current_num_threads();
    let band = ho.div_ceil(tasks).max(1);
    let partials: Vec<Vec<f32>> = (0..ho)
        .step_by(band)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|oy0| {
            let mut part = vec![0.0f32; cout * cin * 9];
            for (cb, out) in part.chunks_mut(GCO * cin * 9).enumerate() {
                channel_block(x, dy, shape, cb, (oy0, band.min(ho - oy0)), out);
            }
            part
        })
        .collect();
    for p in partials {
        for (a, b) in dw.iter_mut().zip(p) {
            *a += b;
        }
    }
    dw
}

/// [`weight_grad`] for narrow maps, over flattened rows as [`forward_flat_into`]: the output
/// gradient is laid out with rows `W` floats apart (zeros in the two columns past each row's
/// end), so that every vector of 16 pixels is full instead of each row ending in a partial one,
/// and the sums run over one flat row per channel pair. Tasks by blocks of output channels.
///
/// # Panics
/// If the CPU lacks AVX-512F ([`available`]) or the sizes disagree.
pub fn weight_grad_flat(
    x: &[f32],
    dy: &[f32],
    (cin, cout, h, w): (usize, usize, usize, usize),
) -> Vec<f32> {
    let (ho, wo) = check_weight_grad(x, dy, (cin, cout, h, w));
    let len = (ho - 1) * w + wo;
    let wide = spread_rows(dy, (ho, wo), (len, w), 0);
    let mut dw = vec![0.0f32; cout * cin * 9];
    // Tasks by blocks of output channels and chunks of input channels, at least 8 per
    // thread: by output channels alone, 16 or 32 of them made 6 or 11 tasks, and two threads
    // ran these layers only 1.4-1.5x as fast as one.
    let blocks = cout.div_ceil(GCO);
    let chunks = (8 * rayon::current_num_threads())
        .div_ceil(blocks)
        .clamp(1, cin);
    let per = cin.div_ceil(chunks);
    let out = SharedOut(dw.as_mut_ptr());
    // Output-channel blocks outermost: neighbouring tasks share their gradient rows.
    (0..blocks * chunks).into_par_iter().for_each(|t| {
        let (cb, k) = (t / chunks, t % chunks);
        let nco = GCO.min(cout - cb * GCO);
        for ci in k * per..((k + 1) * per).min(cin) {
            // SAFETY: AVX-512F is present (asserted); the block reads flat indices 0..len of
            // gradient channels cb*3..cb*3+nco (inside `wide`) and, of input channel ci,
            // those indices shifted by kh * w + kw <= 2 w + 2, below (ho - 1) w + wo + 2 w +
            // 2 = h w: inside the plane.
            let sums = unsafe {
                grad_block_n(
                    nco,
                    wide.as_ptr().add(cb * GCO * len),
                    len,
                    len,
                    x.as_ptr().add(ci * h * w),
                    w,
                    1,
                )
            };
            for (c, taps) in sums.iter().enumerate().take(nco) {
                // SAFETY: the 9 weights of (cb * 3 + c, ci) lie inside `dw`; each task
                // writes those of its own output and input channels.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        taps.as_ptr(),
                        out.at(((cb * GCO + c) * cin + ci) * 9),
                        9,
                    );
                }
            }
        }
    });
    dw
}

/// Checks the sizes of a weight gradient ([`weight_grad`], [`weight_grad_flat`]) and returns
/// the output's height and width.
///
/// # Panics
/// If the CPU lacks AVX-512F ([`available`]) or the sizes disagree.
fn check_weight_grad(x: &[f32], dy: &[f32], shape: (usize, usize, usize, usize)) -> (usize, usize) {
    assert!(available(), "conv_direct: the CPU lacks AVX-512F");
    super::conv_cpu::check_weight_grad(x, dy, shape)
}

/// The weight gradient of output-channel block `cb` (channels `3 cb ..`, as many as `out`
/// holds: `out` is their `n x Cin x 9` values) summed over output rows `oy0 .. oy0 + rows`.
fn channel_block(
    x: &[f32],
    dy: &[f32],
    (cin, cout, h, w): (usize, usize, usize, usize),
    cb: usize,
    (oy0, rows): (usize, usize),
    out: &mut [f32],
) {
    let (ho, wo) = (h - 2, w - 2);
    let nco = out.len() / (cin * 9);
    assert!(
        cb * GCO + nco <= cout && oy0 + rows <= ho,
        "conv_direct: block"
    );
    for ci in 0..cin {
        // SAFETY: AVX-512F is present (checked by `weight_grad`); the block reads
        // output-gradient rows oy0..oy0+rows of channels cb*3..cb*3+nco (wo each) and input
        // rows oy0..oy0+rows+2 of channel ci (columns < wo + 2 = w): inside both (asserted).
        let sums = unsafe {
            grad_block_n(
                nco,
                dy.as_ptr().add(cb * GCO * ho * wo + oy0 * wo),
                ho * wo,
                wo,
                x.as_ptr().add(ci * h * w + oy0 * w),
                w,
                rows,
            )
        };
        for (c, taps) in sums.iter().enumerate().take(nco) {
            out[(c * cin + ci) * 9..(c * cin + ci + 1) * 9].copy_from_slice(taps);
        }
    }
}

/// [`grad_block`] for `nco` (1 to [`GCO`]) channels.
///
/// # Safety
/// As [`grad_block`].
unsafe fn grad_block_n(
    nco: usize,
    dy: *const f32,
    oplane: usize,
    wo: usize,
    x: *const f32,
    w: usize,
    rows: usize,
) -> [[f32; 9]; GCO] {
    let mut out = [[0.0f32; 9]; GCO];
    // SAFETY: forwarded (caller).
    unsafe {
        match nco {
            3 => out.copy_from_slice(&grad_block::<3>(dy, oplane, wo, x, w, rows)),
            2 => out[..2].copy_from_slice(&grad_block::<2>(dy, oplane, wo, x, w, rows)),
            _ => out[..1].copy_from_slice(&grad_block::<1>(dy, oplane, wo, x, w, rows)),
        }
    }
    out
}

/// Sums over `rows` output rows of `dY[c] * X[tap]` for `N` channels and the 9 taps.
///
/// # Safety
/// AVX-512F; `dy` points at the first row of the first channel, valid for `N` planes of
/// `oplane` floats with `rows` rows of `wo`; `x` at the first input row, valid for
/// `rows + 2` rows of `w = wo + 2` floats.
#[target_feature(enable = "avx512f")]
unsafe fn grad_block<const N: usize>(
    dy: *const f32,
    oplane: usize,
    wo: usize,
    x: *const f32,
    w: usize,
    rows: usize,
) -> [[f32; 9]; N] {
    let mut acc = [[_mm512_setzero_ps(); 9]; N];
    for r in 0..rows {
        let (dyr, xr) = (dy.wrapping_add(r * wo), x.wrapping_add(r * w));
        let mut ox = 0;
        while ox < wo {
            let m = lanes(wo - ox);
            // (Loops, not closures: a closure would not inherit the target feature.)
            let mut g = [_mm512_setzero_ps(); N];
            for (c, gv) in g.iter_mut().enumerate() {
                let at = dyr.wrapping_add(c * oplane + ox);
                // Four vectors ahead (see the forward kernel: many streams).
                _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(64) as *const i8);
                // SAFETY: masked lanes inside row r of channel c (caller).
                *gv = unsafe { _mm512_maskz_loadu_ps(m, at) };
            }
            for kh in 0..3 {
                _mm_prefetch::<_MM_HINT_T0>(xr.wrapping_add(kh * w + ox + 64) as *const i8);
            }
            for kh in 0..3 {
                for kw in 0..3 {
                    // SAFETY: columns ox + kw .. < wo + 2 = w of input row r + kh (caller).
                    let xv = unsafe { _mm512_maskz_loadu_ps(m, xr.wrapping_add(kh * w + ox + kw)) };
                    for c in 0..N {
                        acc[c][kh * 3 + kw] = _mm512_fmadd_ps(g[c], xv, acc[c][kh * 3 + kw]);
                    }
                }
            }
            ox += 16;
        }
    }
    // Reduced through memory: `_mm512_reduce_add_ps` uses 128/256-bit instructions that
    // without AVX-512VL reach only registers 0-15, which made the compiler keep the
    // accumulators there and spill a third of them in the loop above.
    let mut out = [[0.0f32; 9]; N];
    let mut lanes16 = [0.0f32; 16];
    for (o, a) in out.iter_mut().zip(&acc) {
        for (v, lane) in o.iter_mut().zip(a) {
            // SAFETY: `lanes16` holds 16 floats.
            unsafe { _mm512_storeu_ps(lanes16.as_mut_ptr(), *lane) };
            *v = lanes16.iter().sum();
        }
    }
    out
}

/// Output channels per block of [`weight_grad_channels`]: two vectors.
const WCO: usize = 32;
/// Output pixels per band of [`weight_grad_channels`]: a band's output gradient (32
/// channels, 128 bytes a pixel) stays in the L1 cache while every input channel of a task
/// passes over it.
const WBAND: usize = 256;

/// One cache line of floats: the output gradient of [`weight_grad_channels`] is a buffer of
/// them, so that its vectors of 16 channels are aligned (an unaligned 64-byte load spans two
/// lines).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// [`weight_grad`] with the output channels in the vectors instead of the pixels: for each
/// output pixel `p` and input channel `ci`, the 9 input values `X[ci, p + tap]` are broadcast
/// and multiplied into the gradients of 32 output channels (`dY[.., p]`, two vectors of a
/// pixel-major copy of `dY`): a register block of 9 taps x 32 channels (18 accumulators)
/// takes, per pixel, 2 aligned loads, 9 broadcasts and 18 fused multiply-adds, and its sums
/// need no reduction across lanes. The pixel-vectorised kernels load the input unaligned (9
/// loads across two cache lines per 27 products) and reduce 27 vectors across lanes per band
/// and channel pair, which on the deep levels' small maps cost about as much as the products.
/// Tasks by blocks of 32 output channels and chunks of input channels; within a task, bands
/// of [`WBAND`] pixels outside and input channels inside. Maps of more than
/// [`super::conv_cpu::LOCAL_PLANE`] outputs go by parts ([`weight_grad_channels_by_parts`]).
///
/// # Panics
/// If the CPU lacks AVX-512F ([`available`]) or the sizes disagree.
pub fn weight_grad_channels(
    x: &[f32],
    dy: &[f32],
    (cin, cout, h, w): (usize, usize, usize, usize),
) -> Vec<f32> {
    let (ho, wo) = check_weight_grad(x, dy, (cin, cout, h, w));
    let plane = ho * wo;
    if plane > super::conv_cpu::LOCAL_PLANE {
        return weight_grad_channels_by_parts(x, dy, (cin, cout, h, w));
    }
    // dY pixel-major: pixel p's channels in `lines` consecutive lines (zero past `cout`).
    let lines = cout.div_ceil(16);
    let dyt = pixel_major(dy, cout, plane);
    let blocks = cout.div_ceil(WCO);
    // At least 8 tasks per thread (as `weight_grad_flat`).
    let chunks = (8 * rayon::current_num_threads())
        .div_ceil(blocks)
        .clamp(1, cin);
    let per = cin.div_ceil(chunks);
    // Every weight is written by one task (below), so not zeroed first.
    let mut dw: Vec<f32> = Vec::with_capacity(cout * cin * 9);
    let out = SharedOut(dw.as_mut_ptr());
    // Output-channel blocks outermost: neighbouring tasks share their output gradient.
    (0..blocks * chunks).into_par_iter().for_each(|t| {
        let (cb, k) = (t / chunks, t % chunks);
        let cis = k * per..((k + 1) * per).min(cin);
        // The block's sums by input channel, tap and channel: [ci][tap][32].
        let mut sums = vec![[0.0f32; WCO]; cis.len() * 9];
        let v = (lines - 2 * cb).min(2);
        for p0 in (0..plane).step_by(WBAND) {
            let band = (p0, (p0 + WBAND).min(plane));
            let g = dyt[p0 * lines + 2 * cb..].as_ptr().cast::<f32>();
            for (i, ci) in cis.clone().enumerate() {
                // SAFETY: AVX-512F is present (asserted); the kernel reads, of pixels
                // band.0..band.1 (each (oy, ox) with oy < ho, ox < wo), the lines 2 cb ..
                // 2 cb + v (<= lines) of `dyt` (pixels * lines lines), and the input of
                // channel ci at rows oy..oy+3, columns ox..ox+3 (< h, w).
                unsafe {
                    channel_sums_n(
                        v,
                        g,
                        lines,
                        &x[ci * h * w..],
                        (wo, w),
                        band,
                        &mut sums[i * 9..],
                    );
                }
            }
        }
        let nco = WCO.min(cout - cb * WCO);
        for (ci, taps) in cis.zip(sums.chunks_exact(9)) {
            for c in 0..nco {
                for (tap, by_channel) in taps.iter().enumerate() {
                    // SAFETY: weight (cb * 32 + c, ci, tap) of `dw`; each task writes those
                    // of its own output and input channels.
                    unsafe {
                        out.at(((cb * WCO + c) * cin + ci) * 9 + tap)
                            .write(by_channel[c])
                    };
                }
            }
        }
    });
    // SAFETY: the tasks wrote weights (co, ci, tap) for every output channel (blocks of 32
    // up to `cout`), input channel (chunks up to `cin`) and tap.
    unsafe { dw.set_len(cout * cin * 9) };
    dw
}

/// [`weight_grad_channels`] on a large map: tasks by blocks of 32 output channels and parts of
/// the map (contiguous pixels), each transposing one band of [`WBAND`] pixels at a time into
/// an L1-sized buffer and passing every input channel over it; the parts' sums are added up
/// at the end. Called by [`weight_grad_channels`] after its checks (sizes, AVX-512F).
fn weight_grad_channels_by_parts(
    x: &[f32],
    dy: &[f32],
    (cin, cout, h, w): (usize, usize, usize, usize),
) -> Vec<f32> {
    let (ho, wo) = (h - 2, w - 2);
    let plane = ho * wo;
    let blocks = cout.div_ceil(WCO);
    // At least 4 tasks per thread, at least a band each.
    let parts = (4 * rayon::current_num_threads())
        .div_ceil(blocks)
        .clamp(1, plane.div_ceil(WBAND));
    let per = plane.div_ceil(parts);
    let partials: Vec<Vec<[f32; WCO]>> = (0..blocks * parts)
        .into_par_iter()
        .map(|t| {
            let (cb, k) = (t / parts, t % parts);
            let nco = WCO.min(cout - cb * WCO);
            let lines = nco.div_ceil(16);
            // Written by the transposition before the kernel reads it.
            let mut band = vec![MaybeUninit::<Line>::uninit(); WBAND * lines];
            // By input channel, tap and channel: [ci][tap][32].
            let mut sums = vec![[0.0f32; WCO]; cin * 9];
            for p0 in (k * per..((k + 1) * per).min(plane)).step_by(WBAND) {
                let p1 = (p0 + WBAND).min((k + 1) * per).min(plane);
                transpose_pixels(dy, plane, (cb * WCO, nco), (p0, p1 - p0), &mut band);
                let g = band.as_ptr().cast::<f32>();
                for ci in 0..cin {
                    // SAFETY: AVX-512F is present; the kernel reads `lines` lines of each of
                    // the band's p1 - p0 pixels (written above) and, of input channel ci, rows
                    // oy..oy+3 and columns ox..ox+3 of each pixel (oy, ox) of the band.
                    unsafe {
                        channel_sums_n(
                            lines,
                            g,
                            lines,
                            &x[ci * h * w..],
                            (wo, w),
                            (p0, p1),
                            &mut sums[ci * 9..],
                        );
                    }
                }
            }
            sums
        })
        .collect();
    let mut dw = Vec::with_capacity(cout * cin * 9);
    dw.spare_capacity_mut()[..cout * cin * 9]
        .par_chunks_mut(cin * 9)
        .enumerate()
        .for_each(|(co, out)| {
            let (cb, c) = (co / WCO, co % WCO);
            for (i, o) in out.iter_mut().enumerate() {
                let sum = partials[cb * parts..(cb + 1) * parts]
                    .iter()
                    .fold(0.0f32, |s, part| s + part[i][c]);
                o.write(sum);
            }
        });
    // SAFETY: every weight was written above.
    unsafe { dw.set_len(cout * cin * 9) };
    dw
}

/// [`channel_sums`] for `v` (1 or 2) vectors of channels.
///
/// # Safety
/// As [`channel_sums`] (`x` is the input plane; `sums` holds at least 9 rows).
unsafe fn channel_sums_n(
    v: usize,
    g: *const f32,
    lines: usize,
    x: &[f32],
    shape: (usize, usize),
    band: (usize, usize),
    sums: &mut [[f32; WCO]],
) {
    let sums = &mut sums[..9];
    // SAFETY: forwarded (caller).
    unsafe {
        if v >= 2 {
            channel_sums::<2>(g, lines, x.as_ptr(), shape, band, sums);
        } else {
            channel_sums::<1>(g, lines, x.as_ptr(), shape, band, sums);
        }
    }
}

/// `dy` (`channels x pixels`) pixel-major: pixel `p`'s channel `c` at float `p * 16 L + c`
/// of the lines (`L = channels / 16` rounded up), zero past `channels`. Tiles of 16 channels
/// x 16 pixels are transposed in registers; in parallel by chunks of pixels.
fn pixel_major(dy: &[f32], channels: usize, pixels: usize) -> Vec<Line> {
    const CHUNK: usize = 64;
    let lines = channels.div_ceil(16);
    let mut t: Vec<Line> = Vec::with_capacity(pixels * lines);
    t.spare_capacity_mut()[..pixels * lines]
        .par_chunks_mut(CHUNK * lines)
        .enumerate()
        .for_each(|(k, rows)| {
            let n = rows.len() / lines;
            transpose_pixels(dy, pixels, (0, channels), (k * CHUNK, n), rows);
        });
    // SAFETY: every line of the first pixels * lines was written above.
    unsafe { t.set_len(pixels * lines) };
    t
}

/// Channels `c0 .. c0 + nc` of pixels `p0 .. p0 + n` of `dy` (`pixels` floats a channel),
/// pixel-major into `dst`: pixel `q`'s channels in lines `q L .. q L + L` (`L = nc / 16`
/// rounded up), zero past `nc`; by tiles of 16 channels x 16 pixels transposed in registers.
///
/// # Panics
/// If the CPU lacks AVX-512F, or `dy` or `dst` are too short.
fn transpose_pixels(
    dy: &[f32],
    pixels: usize,
    (c0, nc): (usize, usize),
    (p0, n): (usize, usize),
    dst: &mut [MaybeUninit<Line>],
) {
    let lines = nc.div_ceil(16);
    assert!(
        available() && (c0 + nc) * pixels <= dy.len() && p0 + n <= pixels && n * lines <= dst.len(),
        "transpose_pixels: sizes"
    );
    for l in 0..lines {
        for q in (0..n).step_by(16) {
            // SAFETY: AVX-512F is present (asserted); the tile reads channels c0 + 16 l ..
            // (< c0 + nc) at pixels p0 + q .. (< p0 + n <= pixels) of `dy` and writes line l
            // of pixels q .. (< n) of `dst`: inside both (asserted).
            unsafe {
                transpose_tile(
                    dy.as_ptr().add((c0 + 16 * l) * pixels + p0 + q),
                    pixels,
                    (16.min(nc - 16 * l), 16.min(n - q)),
                    dst.as_mut_ptr().add(q * lines + l),
                    lines,
                );
            }
        }
    }
}

/// Writes line `q * lines` from `dst` for each pixel `q < np`: the values of channels
/// `0 .. nc` of that pixel (zero past `nc`), the channels' rows `stride` floats apart from
/// `src`.
///
/// # Safety
/// AVX-512F; `src + c * stride + q` readable for `c < nc <= 16`, `q < np <= 16`; the lines
/// written lie inside `dst`'s buffer.
#[target_feature(enable = "avx512f")]
unsafe fn transpose_tile(
    src: *const f32,
    stride: usize,
    (nc, np): (usize, usize),
    dst: *mut MaybeUninit<Line>,
    lines: usize,
) {
    let m = lanes(np);
    let mut r = [_mm512_setzero_ps(); 16];
    for (c, r) in r.iter_mut().enumerate().take(nc) {
        // SAFETY: the first np floats of channel c's row (caller).
        *r = unsafe { _mm512_maskz_loadu_ps(m, src.add(c * stride)) };
    }
    let r = transpose16(r);
    for (q, v) in r.iter().enumerate().take(np) {
        // SAFETY: pixel q's line (caller); lines are 64-byte aligned.
        unsafe { _mm512_store_ps(dst.add(q * lines).cast::<f32>(), *v) };
    }
}

/// The transpose of 16 rows of 16 floats: row `c` of the result holds element `c` of every
/// row (unpacks of pairs, then shuffles of 32-bit, and twice of 128-bit, elements).
#[target_feature(enable = "avx512f")]
fn transpose16(mut r: [__m512; 16]) -> [__m512; 16] {
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // r[4 g + j], 128-bit lane L: column 4 L + j of rows 4 g .. 4 g + 4.
    for g in 0..4 {
        r[4 * g] = _mm512_shuffle_ps::<0x44>(t[4 * g], t[4 * g + 2]);
        r[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(t[4 * g], t[4 * g + 2]);
        r[4 * g + 2] = _mm512_shuffle_ps::<0x44>(t[4 * g + 1], t[4 * g + 3]);
        r[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(t[4 * g + 1], t[4 * g + 3]);
    }
    for h in 0..2 {
        for j in 0..4 {
            let (a, b) = (r[8 * h + j], r[8 * h + 4 + j]);
            t[8 * h + j] = _mm512_shuffle_f32x4::<0x88>(a, b);
            t[8 * h + 4 + j] = _mm512_shuffle_f32x4::<0xDD>(a, b);
        }
    }
    for j in 0..8 {
        r[j] = _mm512_shuffle_f32x4::<0x88>(t[j], t[8 + j]);
        r[8 + j] = _mm512_shuffle_f32x4::<0xDD>(t[j], t[8 + j]);
    }
    r
}

/// Adds to `sums[tap][c]` the products `dY[c, p] * X[p + tap]` over the output pixels `p` of
/// `band` (flat indices `oy wo + ox`) for `16 V` channels.
///
/// # Safety
/// AVX-512F; `g` points at the first line of the block of pixel `band.0` in a buffer of
/// `lines` lines a pixel, aligned to 64 bytes, valid for `V` lines of every pixel of the
/// band; `x` at the input plane (rows of `w` floats), valid for rows `oy .. oy + 3` and
/// columns `ox .. ox + 3` of every pixel `(oy, ox)` of the band.
#[target_feature(enable = "avx512f")]
unsafe fn channel_sums<const V: usize>(
    g: *const f32,
    lines: usize,
    x: *const f32,
    (wo, w): (usize, usize),
    (p0, p1): (usize, usize),
    sums: &mut [[f32; WCO]],
) {
    let mut acc = [[_mm512_setzero_ps(); V]; 9];
    let (mut p, mut oy, mut ox) = (p0, p0 / wo, p0 % wo);
    while p < p1 {
        let n = (wo - ox).min(p1 - p);
        let xr = x.wrapping_add(oy * w + ox);
        let gr = g.wrapping_add((p - p0) * 16 * lines);
        for i in 0..n {
            let mut gv = [_mm512_setzero_ps(); V];
            for (v, gv) in gv.iter_mut().enumerate() {
                // SAFETY: line v of pixel p + i, aligned (caller).
                *gv = unsafe { _mm512_load_ps(gr.wrapping_add(i * 16 * lines + 16 * v)) };
            }
            for kh in 0..3 {
                for kw in 0..3 {
                    // SAFETY: input (oy + kh, ox + i + kw) (caller).
                    let xv = _mm512_set1_ps(unsafe { *xr.wrapping_add(kh * w + i + kw) });
                    for v in 0..V {
                        acc[kh * 3 + kw][v] = _mm512_fmadd_ps(xv, gv[v], acc[kh * 3 + kw][v]);
                    }
                }
            }
        }
        p += n;
        oy += 1;
        ox = 0;
    }
    for (tap, a) in acc.iter().enumerate() {
        for (v, a) in a.iter().enumerate() {
            let s = sums[tap][16 * v..].as_mut_ptr();
            // SAFETY: 16 floats of `sums[tap]` (16 V <= 32).
            unsafe { _mm512_storeu_ps(s, _mm512_add_ps(_mm512_loadu_ps(s), *a)) };
        }
    }
}

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
    assert!(available(), "conv_direct: the CPU lacks AVX-512F");
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
