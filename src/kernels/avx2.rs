//! Direct 3x3 valid convolution kernels for x86-64 CPUs with AVX2 and FMA (and no AVX-512,
//! where [`super::avx512`] runs instead): on such a CPU (e.g. Zen 3) the U-Net's layers
//! with 16-64 channels spent as much time building im2col buffers and packing them for the
//! GEMM as multiplying, because their reduction is only `9 Cin` long. These kernels read the
//! image in place.
//!
//! Both work over flattened rows: with the (padded) input's rows `Wp` floats apart, output
//! pixel `(oy, ox)` at flat index `j = oy Wp + ox` is `sum x[j + kh Wp + kw] w[kh, kw]` over the
//! taps, so every tap reads the input contiguously and a register block of pixels runs across
//! row ends instead of being cut there. The two flat indices past each row's last output
//! (`ox >= Wp - 2`) are computed and dropped.
//!
//! - forward: a register block of 6 output channels x 16 flat pixels (12 accumulators, the
//!   shape of the classic 6 x 16 AVX2 GEMM kernel: 2 input vectors and a broadcast in the
//!   other registers, so nothing spills) takes, per input channel and tap, 2 unaligned loads
//!   of the input, 6 broadcasts of the weights (repacked into one panel per channel block, so
//!   they are read sequentially) and 12 fused multiply-adds;
//! - weight gradient: outer products. The output gradient is transposed into blocks of 16
//!   output channels per flat pixel (zeros in the dropped columns); a register block of 6
//!   (input channel, tap) pairs x 16 output channels takes, per flat pixel, 2 loads of one
//!   64-byte row of the gradient, 6 broadcasts of the input read in place and 12 fused multiply-adds, and
//!   adds its sums into `dW^T` by vectors. The pixels run in chunks that stay in the L2 cache
//!   while every block of the layer passes over them. (Dot products along the pixels, 3
//!   channels x 4 pairs of 8-pixel vectors, ran at 100-145 GF/s, below im2col + GEMM on most
//!   layers: 7 unaligned loads per 12 multiply-adds, and sums across lanes per chunk.)
//!
//! Layouts and results are those of [`super::conv3x3`], which chooses these kernels.

use std::arch::x86_64::{
    __m256, _MM_HINT_T0, _mm_prefetch, _mm256_add_ps, _mm256_broadcast_ss, _mm256_fmadd_ps,
    _mm256_loadu_ps, _mm256_max_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps,
};

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::common::Taps;
use super::common::{SharedOut, block_biases, spread_into};

/// Output channels per register block of the forward kernel.
const CO: usize = 6;
/// Flat pixels per register block of the forward kernel (two 8-float vectors).
const PX: usize = 16;
/// Bytes of output gradient and input that one chunk of the weight gradient keeps in the L2
/// cache (half of Zen 3's 512 KiB).
const CHUNK_BYTES: usize = 256 * 1024;

/// Whether this CPU runs the kernels of this module.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Where the kept lanes of one forward block go: either all 16 to consecutive outputs from
/// `contiguous`, or lane `l` to output `lanes[l]` (`usize::MAX`: dropped).
struct StorePlan {
    contiguous: Option<usize>,
    lanes: [usize; PX],
}

impl StorePlan {
    /// The plan of the block whose lanes are the flat indices `start ..`: lane `j` is kept when
    /// `keep_from <= j < len` and its column `j % wp` is an output column (`< wo`).
    fn new(start: usize, keep_from: usize, len: usize, (wp, wo): (usize, usize)) -> Self {
        let (mut row, mut col) = (start / wp, start % wp);
        let mut lanes = [usize::MAX; PX];
        if start >= keep_from && start + PX <= len && col + PX <= wo {
            // One row's outputs (most blocks of wide maps).
            return Self {
                contiguous: Some(row * wo + col),
                lanes,
            };
        }
        for (l, lane) in lanes.iter_mut().enumerate() {
            let j = start + l;
            if j >= keep_from && j < len && col < wo {
                *lane = row * wo + col;
            }
            col += 1;
            if col == wp {
                (row, col) = (row + 1, 0);
            }
        }
        Self {
            contiguous: None,
            lanes,
        }
    }
}

/// The weights in effect (`Cout x Cin x 3 x 3`) as one panel per block of [`CO`] output
/// channels: `[ci][tap][c]`, zero past the last real channel. (Written by plain loops over
/// each layout: through [`Taps::at`] per weight, the packing took 3 % of a lite 252 px
/// training step.)
fn pack_weights(taps: Taps<'_>, cin: usize, cout: usize) -> Vec<f32> {
    let k = cin * 9;
    let per_block = k * CO;
    let mut panel = vec![0.0f32; cout.div_ceil(CO) * per_block];
    let fill = |(cb, block): (usize, &mut [f32])| {
        let nco = CO.min(cout - cb * CO);
        match taps {
            // W[co, ci, t] = w[(co Cin + ci) 9 + t]: row co of the block is contiguous.
            Taps::Given(w) => {
                for c in 0..nco {
                    let row = &w[(cb * CO + c) * k..(cb * CO + c + 1) * k];
                    for (v, &wv) in block[c..].iter_mut().step_by(CO).zip(row) {
                        *v = wv;
                    }
                }
            }
            // W[co, ci, t] = w[(ci Cout + co) 9 + 8 - t]: the 9 taps of (co, ci) are
            // contiguous, reversed.
            Taps::Flipped(w) => {
                for (ci, dst) in block.chunks_exact_mut(9 * CO).enumerate() {
                    for c in 0..nco {
                        let at = (ci * cout + cb * CO + c) * 9;
                        for (t, &wv) in w[at..at + 9].iter().rev().enumerate() {
                            dst[t * CO + c] = wv;
                        }
                    }
                }
            }
        }
    };
    if panel.len() >= 1 << 15 {
        panel.par_chunks_mut(per_block).enumerate().for_each(fill);
    } else {
        panel.chunks_mut(per_block).enumerate().for_each(fill);
    }
    panel
}

/// Forward pass of one image with `pad` pixels of implicit zero padding on every side: `x`
/// `Cin x H x W`, `weight` (`Cout x Cin x 3 x 3` in effect), into `y` (`Cout x (H+2pad-2) x
/// (W+2pad-2)` values, every one written: it may start uninitialised) plus `bias`, through a
/// ReLU when `relu`. (Padding 2 with [`Taps::Flipped`] weights is the input gradient.)
/// Padding, or a map of fewer than 16 flat outputs, takes a zero-bordered copy of the input.
///
/// # Panics
/// If the CPU lacks AVX2 or FMA ([`available`]) or the sizes disagree.
pub fn forward_into(
    x: &[f32],
    weight: Taps<'_>,
    bias: Option<&[f32]>,
    (cin, cout, h, w): (usize, usize, usize, usize),
    pad: usize,
    relu: bool,
    y: &mut [MaybeUninit<f32>],
) {
    assert!(available(), "avx2: the CPU lacks AVX2 or FMA");
    let (ho, wo) = super::common::check_forward(x, weight, bias, (cin, cout, h, w), pad, y.len());
    let (hp, wp) = (ho + 2, wo + 2);
    if cout == 0 {
        return;
    }
    // Flat outputs: the last one is (ho - 1, wo - 1). A block of 16 reads from its first flat
    // index up to 15 + 2 wp + 2 further: inside the (padded) planes of hp * wp floats when the
    // block ends at `len`, so the last block starts at len - 16 (and keeps only its lanes past
    // the previous block's); maps of fewer than 16 get planes with 16 floats to spare.
    let len = (ho - 1) * wp + wo;
    let slack = if len < PX { PX } else { 0 };
    if pad == 0 && slack == 0 {
        forward_flat(x, weight, bias, (cin, cout, h * w, wp), (ho, wo), relu, y);
    } else {
        let plane = hp * wp + slack;
        with_spread(x, (h, w), (plane, wp), pad * wp + pad, |x| {
            forward_flat(x, weight, bias, (cin, cout, plane, wp), (ho, wo), relu, y)
        });
    }
}

/// [`forward_into`] on an input laid out for it: `cin` planes of `plane` floats with rows `wp`
/// apart, of which every block of 16 flat outputs (the last one ending at the last output,
/// or, on maps of fewer than 16, starting at 0) reads inside its plane.
fn forward_flat(
    x: &[f32],
    weight: Taps<'_>,
    bias: Option<&[f32]>,
    (cin, cout, plane, wp): (usize, usize, usize, usize),
    (ho, wo): (usize, usize),
    relu: bool,
    y: &mut [MaybeUninit<f32>],
) {
    let len = (ho - 1) * wp + wo;
    assert!(
        x.len() >= cin * plane && plane >= len.max(PX) + 2 * wp + 2,
        "avx2: input layout"
    );
    let panel = pack_weights(weight, cin, cout);
    let biases = block_biases::<CO>(bias, cout);
    let (blocks, cblocks) = (len.div_ceil(PX), cout.div_ceil(CO));
    // Tasks of up to 8 pixel blocks for one channel block, at least 32 per thread; channel
    // blocks innermost, so neighbouring tasks share their input in the caches.
    let group = (blocks * cblocks / (32 * rayon::current_num_threads())).clamp(1, 8);
    let groups = blocks.div_ceil(group);
    let out = SharedOut(y.as_mut_ptr().cast::<f32>());
    (0..groups * cblocks).into_par_iter().for_each(|t| {
        let (g, cb) = (t / cblocks, t % cblocks);
        let nco = CO.min(cout - cb * CO);
        let wb = &panel[cb * cin * 9 * CO..(cb + 1) * cin * 9 * CO];
        for b in g * group..((g + 1) * group).min(blocks) {
            let keep_from = b * PX;
            let start = keep_from.min(len.saturating_sub(PX));
            let plan = StorePlan::new(start, keep_from, len, (wp, wo));
            // SAFETY: AVX2 and FMA are present (asserted by `forward_into`). The block reads,
            // of every channel, flat indices start .. start + 16 shifted by at most 2 wp + 2,
            // where start + 16 <= max(len, 16): inside the planes of `x` (asserted). The panel
            // holds cin * 9 * CO weights. It writes, of channels cb*6 .. cb*6+nco, the outputs
            // its plan keeps (each an index < ho * wo of its own flat index), which no other
            // task writes.
            unsafe {
                forward_block(
                    x.as_ptr().add(start),
                    (plane, wp, cin),
                    wb.as_ptr(),
                    out.at(cb * CO * ho * wo),
                    (ho * wo, nco),
                    &biases[cb],
                    relu,
                    &plan,
                );
            }
        }
    });
}

/// One register block of the forward pass: 16 flat pixels from `x` for up to [`CO`] output
/// channels.
///
/// # Safety
/// AVX2 and FMA; `x` is the block's first flat index in channel 0 of `cin` planes of `plane`
/// floats with rows `wp` apart, and its 16 lanes shifted by up to `2 wp + 2` lie inside every
/// plane; `panel` holds `cin * 9 * CO` floats; for `c < nco` the outputs
/// `y + c * oplane + plan.lanes[l]` of the kept lanes are valid for writes.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_block(
    x: *const f32,
    (plane, wp, cin): (usize, usize, usize),
    panel: *const f32,
    y: *mut f32,
    (oplane, nco): (usize, usize),
    bias: &[f32; CO],
    relu: bool,
    plan: &StorePlan,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; CO];
    for ci in 0..cin {
        let xc = x.wrapping_add(ci * plane);
        let wc = panel.wrapping_add(ci * 9 * CO);
        for kh in 0..3 {
            let xr = xc.wrapping_add(kh * wp);
            // This row two blocks ahead: 3 rows per input channel are more streams than the
            // hardware prefetchers follow. Prefetches never fault.
            _mm_prefetch::<_MM_HINT_T0>(xr.wrapping_add(2 * PX + 2) as *const i8);
            for kw in 0..3 {
                // SAFETY: lanes of this block's row inside the plane (caller).
                let (x0, x1) =
                    unsafe { (_mm256_loadu_ps(xr.add(kw)), _mm256_loadu_ps(xr.add(kw + 8))) };
                let wt = wc.wrapping_add((kh * 3 + kw) * CO);
                for (c, a) in acc.iter_mut().enumerate() {
                    // SAFETY: a weight of the panel (caller).
                    let wv = _mm256_broadcast_ss(unsafe { &*wt.add(c) });
                    a[0] = _mm256_fmadd_ps(wv, x0, a[0]);
                    a[1] = _mm256_fmadd_ps(wv, x1, a[1]);
                }
            }
        }
    }
    let zero = _mm256_setzero_ps();
    let finish = |v: __m256, b: f32| {
        let r = _mm256_add_ps(v, _mm256_set1_ps(b));
        if relu { _mm256_max_ps(r, zero) } else { r }
    };
    if let (Some(at), CO) = (plan.contiguous, nco) {
        // A full block: straight from the registers (a constant loop).
        for (c, a) in acc.iter().enumerate() {
            let yc = y.wrapping_add(c * oplane + at);
            // SAFETY: 16 kept outputs of channel c from `at` (caller).
            unsafe {
                _mm256_storeu_ps(yc, finish(a[0], bias[c]));
                _mm256_storeu_ps(yc.add(8), finish(a[1], bias[c]));
            }
        }
        return;
    }
    // Else through memory, also with a constant loop: indexing the accumulators by the
    // run-time `nco` could make the compiler keep them in memory inside the loop above.
    let mut sums = [[0.0f32; PX]; CO];
    for ((s, a), &b) in sums.iter_mut().zip(&acc).zip(bias) {
        // SAFETY: 16 floats of `s`.
        unsafe {
            _mm256_storeu_ps(s.as_mut_ptr(), finish(a[0], b));
            _mm256_storeu_ps(s.as_mut_ptr().add(8), finish(a[1], b));
        }
    }
    for (c, s) in sums.iter().enumerate().take(nco) {
        let yc = y.wrapping_add(c * oplane);
        match plan.contiguous {
            // SAFETY: 16 kept outputs from `at` (caller).
            Some(at) => unsafe { std::ptr::copy_nonoverlapping(s.as_ptr(), yc.add(at), PX) },
            None => {
                for (v, &at) in s.iter().zip(&plan.lanes) {
                    if at != usize::MAX {
                        // SAFETY: a kept output (caller).
                        unsafe { *yc.add(at) = *v };
                    }
                }
            }
        }
    }
}

/// Flat pixels per chunk of the weight gradient of a layer with `channels` input and output
/// channels in all: their chunks of [`CHUNK_BYTES`] stay in the L2 cache while every block
/// passes over them (a multiple of 8, 512 to 4096).
fn chunk_pixels(channels: usize) -> usize {
    (CHUNK_BYTES / (4 * channels.max(1))).clamp(512, 4096) / 8 * 8
}

/// A buffer kept between passes for the laid-out copies of [`with_spread`]: a fresh one of
/// tens of MB each pass cost its page faults and the kernel's zeroing of every page, up to a
/// third of the time of the input gradients of the top levels.
static SPARE: std::sync::Mutex<Vec<f32>> = std::sync::Mutex::new(Vec::new());

/// Runs `f` on the planes of `src` (`rows x cols` each) laid out in planes of `plane` floats
/// with their rows `stride` apart, the first row's first value at `origin`, zeros elsewhere
/// (a zero-padded copy, or a map laid out over flattened rows). The copy is made in the kept
/// buffer ([`SPARE`]) when no other pass holds it, else in a fresh one.
fn with_spread<R>(
    src: &[f32],
    (rows, cols): (usize, usize),
    (plane, stride): (usize, usize),
    origin: usize,
    f: impl FnOnce(&[f32]) -> R,
) -> R {
    let per = (rows * cols).max(1);
    let len = src.len() / per * plane;
    assert!(
        cols <= stride && origin + (rows.max(1) - 1) * stride + cols <= plane,
        "avx2: layout"
    );
    with_spare(
        len,
        |buf| spread_into(src, (rows, cols), (plane, stride), origin, buf),
        f,
    )
}

/// Runs `f` on `len` floats that `fill` has written (every one of them), in the kept buffer
/// ([`SPARE`]) when no other pass holds it, else in a fresh one.
fn with_spare<R>(len: usize, fill: impl FnOnce(&mut [f32]), f: impl FnOnce(&[f32]) -> R) -> R {
    let mut buf = SPARE
        .lock()
        .map(|mut kept| std::mem::take(&mut *kept))
        .unwrap_or_default();
    if buf.len() < len {
        buf = super::common::filled_in_parallel(len, 0.0);
    }
    fill(&mut buf[..len]);
    let r = f(&buf[..len]);
    if let Ok(mut kept) = SPARE.lock()
        && kept.len() < buf.len()
    {
        *kept = buf;
    }
    r
}

/// Output channels per register block of [`weight_grad`] (two 8-float vectors).
const OCO: usize = 16;
/// (Input channel, tap) pairs per register block of [`weight_grad`].
const OK: usize = 6;

/// Weight gradient of one image: `dW[co, ci, kh, kw] = sum dY[co, oy, ox] X[ci, oy+kh, ox+kw]`;
/// `dy` is `Cout x (H-2) x (W-2)`; returns `Cout x Cin x 3 x 3`. Outer products over flattened
/// rows (see the module): the gradient transposed to `[block][j][16]` (zeros in the dropped
/// columns and past the last channel), then, for a map of one chunk ([`chunk_pixels`]), tasks
/// by channel block and range of pairs; for a larger one, tasks by band of chunks and channel
/// block, each summing into its own partial `dW^T`.
///
/// # Panics
/// If the CPU lacks AVX2 or FMA ([`available`]) or the sizes disagree.
pub fn weight_grad(
    x: &[f32],
    dy: &[f32],
    (cin, cout, h, w): (usize, usize, usize, usize),
) -> Vec<f32> {
    assert!(available(), "avx2: the CPU lacks AVX2 or FMA");
    let (ho, wo) = super::common::check_weight_grad(x, dy, (cin, cout, h, w));
    let k = cin * 9;
    if k == 0 || cout == 0 {
        return vec![0.0f32; cout * k];
    }
    let len = (ho - 1) * w + wo;
    let cblocks = cout.div_ceil(OCO);
    let transpose = |buf: &mut [f32]| {
        // Task per block of channels and output row: its 16 x wo values, and the zeros of
        // its two dropped columns (and of missing channels).
        buf.par_chunks_mut(len * OCO)
            .enumerate()
            .for_each(|(cb, blk)| {
                let nco = OCO.min(cout - cb * OCO);
                blk.par_chunks_mut(w * OCO)
                    .enumerate()
                    .for_each(|(oy, row)| {
                        let src: [&[f32]; OCO] = std::array::from_fn(|c| {
                            let co = cb * OCO + c.min(nco - 1);
                            &dy[(co * ho + oy) * wo..][..wo]
                        });
                        // Pixel by pixel: each writes one 64-byte row.
                        for (ox, px) in row.chunks_exact_mut(OCO).take(wo).enumerate() {
                            for (v, s) in px.iter_mut().zip(&src) {
                                *v = s[ox];
                            }
                            px[nco..].fill(0.0);
                        }
                        row[wo * OCO..].fill(0.0);
                    });
            });
    };
    let mut dwt = vec![0.0f32; cblocks * k * OCO];
    with_spare(cblocks * len * OCO, transpose, |dyt| {
        let g = OuterOperands {
            x,
            dyt,
            plane: h * w,
            len,
            w,
            k,
        };
        let chunk = chunk_pixels(cin + cblocks * OCO);
        if len <= chunk {
            // Tasks by channel block and range of pairs, each writing its own part of dW^T.
            let per = (OK * 4).min(k.div_ceil(OK) * OK);
            dwt.par_chunks_mut(k * OCO)
                .enumerate()
                .for_each(|(cb, blk)| {
                    blk.par_chunks_mut(per * OCO)
                        .enumerate()
                        .for_each(|(r, part)| {
                            let k0 = r * per;
                            g.accumulate(cb, (k0, k0 + part.len() / OCO), (0, len), part);
                        });
                });
            return;
        }
        // Tasks by band of chunks and channel block, at least 4 per thread, each summing
        // into its own partial dW^T of the block (by bands alone, a map of 2-3 chunks made
        // as many unequal tasks).
        let chunks = len.div_ceil(chunk);
        let bands = (4 * rayon::current_num_threads())
            .div_ceil(cblocks)
            .clamp(1, chunks);
        let per_band = chunks.div_ceil(bands);
        let partials: Vec<(usize, Vec<f32>)> = (0..chunks.div_ceil(per_band) * cblocks)
            .into_par_iter()
            .map(|t| {
                let (band, cb) = (t / cblocks, t % cblocks);
                let mut part = vec![0.0f32; k * OCO];
                for c in band * per_band..((band + 1) * per_band).min(chunks) {
                    let range = (c * chunk, ((c + 1) * chunk).min(len));
                    g.accumulate(cb, (0, k), range, &mut part);
                }
                (cb, part)
            })
            .collect();
        for (cb, p) in partials {
            for (a, b) in dwt[cb * k * OCO..(cb + 1) * k * OCO].iter_mut().zip(p) {
                *a += b;
            }
        }
    });
    // dW[co, kk] = dW^T[co / 16][kk][co % 16].
    let mut dw = vec![0.0f32; cout * k];
    dw.par_chunks_mut(k).enumerate().for_each(|(co, row)| {
        let blk = &dwt[(co / OCO) * k * OCO..][..k * OCO];
        for (v, &t) in row.iter_mut().zip(blk[co % OCO..].iter().step_by(OCO)) {
            *v = t;
        }
    });
    dw
}

/// The operands of [`weight_grad`].
struct OuterOperands<'a> {
    /// `Cin` planes of `plane` floats, rows `w` apart.
    x: &'a [f32],
    /// The transposed output gradient, `[block][j][16]` for flat pixels `j < len`.
    dyt: &'a [f32],
    plane: usize,
    len: usize,
    w: usize,
    /// `9 Cin`.
    k: usize,
}

impl OuterOperands<'_> {
    /// Adds the sums over flat pixels `j0 .. j1` for channel block `cb` and pairs `k0 .. k1`
    /// into `out` (`(k1 - k0) x 16`).
    fn accumulate(
        &self,
        cb: usize,
        (k0, k1): (usize, usize),
        (j0, j1): (usize, usize),
        out: &mut [f32],
    ) {
        assert!(
            k0 < k1 && k1 <= self.k && j0 < j1 && j1 <= self.len && out.len() == (k1 - k0) * OCO,
            "avx2: gradient block"
        );
        let d = &self.dyt[(cb * self.len + j0) * OCO..(cb * self.len + j1) * OCO];
        for (g, sums) in out.chunks_mut(OK * OCO).enumerate() {
            let first = k0 + g * OK;
            let nk = sums.len() / OCO;
            // Pairs past the last repeat it (computed, not added).
            let xs: [*const f32; OK] = std::array::from_fn(|i| {
                let kk = first + i.min(nk - 1);
                let (ci, t) = (kk / 9, kk % 9);
                self.x[ci * self.plane + (t / 3) * self.w + t % 3 + j0..].as_ptr()
            });
            // SAFETY: AVX2 and FMA are present (asserted by `weight_grad`). `d` holds
            // (j1 - j0) x 16 floats; each `xs` pointer starts at a tap's shift (<= 2 w + 2)
            // plus j0 in an input plane and j1 - 1 + 2 w + 2 < h w (the last flat pixel is
            // (h - 3) w + w - 3), so it is valid for j1 - j0 floats; `sums` holds nk x 16.
            unsafe { outer_block(d.as_ptr(), xs, j1 - j0, sums.as_mut_ptr(), nk) };
        }
    }
}

/// Adds, for `i < nk`, the sums over `n` flat pixels of `xs[i][j] * dyt[j][0..16]` into
/// `out[i][0..16]`.
///
/// # Safety
/// AVX2 and FMA; `dyt` is valid for `n x 16` floats, every `xs[i]` for `n`, `out` for
/// `nk <= 6` rows of 16.
#[target_feature(enable = "avx2,fma")]
unsafe fn outer_block(dyt: *const f32, xs: [*const f32; OK], n: usize, out: *mut f32, nk: usize) {
    let mut acc = [[_mm256_setzero_ps(); 2]; OK];
    for j in 0..n {
        // SAFETY: row j of `dyt` and element j of each `xs` (caller).
        let (d0, d1) = unsafe {
            (
                _mm256_loadu_ps(dyt.add(j * OCO)),
                _mm256_loadu_ps(dyt.add(j * OCO + 8)),
            )
        };
        for (i, a) in acc.iter_mut().enumerate() {
            // SAFETY: as above.
            let xv = _mm256_broadcast_ss(unsafe { &*xs[i].add(j) });
            a[0] = _mm256_fmadd_ps(xv, d0, a[0]);
            a[1] = _mm256_fmadd_ps(xv, d1, a[1]);
        }
    }
    for (i, a) in acc.iter().enumerate() {
        if i < nk {
            let o = out.wrapping_add(i * OCO);
            // SAFETY: row i < nk of `out` (caller).
            unsafe {
                _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), a[0]));
                _mm256_storeu_ps(o.add(8), _mm256_add_ps(_mm256_loadu_ps(o.add(8)), a[1]));
            }
        }
    }
}
