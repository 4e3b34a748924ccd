//! Direct 3x3 valid convolution kernels for x86-64 CPUs with AVX2 and FMA (and no AVX-512,
//! where [`super::conv_direct`] runs instead): on such a CPU (e.g. Zen 3) the U-Net's layers
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
//! - weight gradient: a block of 2 output channels x 6 (input channel, tap) pairs takes, per 8
//!   flat pixels, 2 loads of the output gradient (laid out with zeros in the dropped columns),
//!   6 loads of the input and 12 fused multiply-adds; the pixels run in chunks that stay in
//!   the L2 cache while every block of the layer passes over them.
//!
//! Layouts and results are those of [`super::conv_cpu`], which chooses these kernels.

use std::arch::x86_64::{
    __m256, __m256i, _MM_HINT_T0, _mm_prefetch, _mm256_add_ps, _mm256_broadcast_ss,
    _mm256_fmadd_ps, _mm256_hadd_ps, _mm256_loadu_ps, _mm256_loadu_si256, _mm256_maskload_ps,
    _mm256_max_ps, _mm256_permute2f128_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps,
};

use rayon::prelude::*;

use super::conv_cpu::Taps;

/// Output channels per register block of the forward kernel.
const CO: usize = 6;
/// Flat pixels per register block of the forward kernel (two 8-float vectors).
const PX: usize = 16;
/// Output channels per register block of the weight-gradient kernel.
const GCO: usize = 3;
/// (Input channel, tap) pairs per register block of the weight-gradient kernel.
const GK: usize = 4;
// The register block of the weight gradient, reduced as two groups of 8 vectors.
const _: () = assert!(GCO * GK <= 16);
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

/// The output pointer shared by the tasks (each writes its own outputs).
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint elements of the buffer, which outlives them.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The element `off` of the buffer (a method, so closures capture the whole struct).
    ///
    /// # Safety
    /// `off` must lie inside the buffer.
    unsafe fn at(self, off: usize) -> *mut f32 {
        // SAFETY: in bounds (caller).
        unsafe { self.0.add(off) }
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
/// (W+2pad-2)` values, all overwritten) plus `bias`, through a ReLU when `relu`. (Padding 2
/// with [`Taps::Flipped`] weights is the input gradient.) Padding, or a map of fewer than 16
/// flat outputs, takes a zero-bordered copy of the input.
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
    y: &mut [f32],
) {
    assert!(available(), "conv_avx2: the CPU lacks AVX2 or FMA");
    assert!(
        h >= 1 && w >= 1 && pad <= 2 && h + 2 * pad >= 3 && w + 2 * pad >= 3,
        "conv_avx2: map smaller than the kernel"
    );
    assert_eq!(x.len(), cin * h * w, "conv_avx2: input size");
    assert_eq!(
        weight.values().len(),
        cout * cin * 9,
        "conv_avx2: weight size"
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), cout, "conv_avx2: bias size");
    }
    let (ho, wo) = (h + 2 * pad - 2, w + 2 * pad - 2);
    let (hp, wp) = (ho + 2, wo + 2);
    assert_eq!(y.len(), cout * ho * wo, "conv_avx2: output size");
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
    y: &mut [f32],
) {
    let len = (ho - 1) * wp + wo;
    assert!(
        x.len() >= cin * plane && plane >= len.max(PX) + 2 * wp + 2,
        "conv_avx2: input layout"
    );
    let panel = pack_weights(weight, cin, cout);
    let biases: Vec<[f32; CO]> = (0..cout.div_ceil(CO))
        .map(|cb| {
            let mut b = [0.0f32; CO];
            if let Some(bias) = bias {
                let nco = CO.min(cout - cb * CO);
                b[..nco].copy_from_slice(&bias[cb * CO..cb * CO + nco]);
            }
            b
        })
        .collect();
    let (blocks, cblocks) = (len.div_ceil(PX), cout.div_ceil(CO));
    // Tasks of up to 8 pixel blocks for one channel block, at least 32 per thread; channel
    // blocks innermost, so neighbouring tasks share their input in the caches.
    let group = (blocks * cblocks / (32 * rayon::current_num_threads())).clamp(1, 8);
    let groups = blocks.div_ceil(group);
    let out = SharedOut(y.as_mut_ptr());
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

/// Weight gradient of one image: `dW[co, ci, kh, kw] = sum dY[co, oy, ox] X[ci, oy+kh, ox+kw]`;
/// `dy` is `Cout x (H-2) x (W-2)`; returns `Cout x Cin x 3 x 3`. The output gradient is laid
/// out over flattened rows (rows `W` apart, zeros in the two columns past each row's end).
/// A map of one chunk ([`chunk_pixels`]) runs in tasks by pairs of output channels; a larger
/// one in tasks by bands of chunks, each summing into its own partial gradient.
///
/// # Panics
/// If the CPU lacks AVX2 or FMA ([`available`]) or the sizes disagree.
pub fn weight_grad(
    x: &[f32],
    dy: &[f32],
    (cin, cout, h, w): (usize, usize, usize, usize),
) -> Vec<f32> {
    assert!(available(), "conv_avx2: the CPU lacks AVX2 or FMA");
    assert!(h >= 3 && w >= 3, "conv_avx2: map smaller than the kernel");
    assert_eq!(x.len(), cin * h * w, "conv_avx2: input size");
    let (ho, wo) = (h - 2, w - 2);
    assert_eq!(dy.len(), cout * ho * wo, "conv_avx2: gradient size");
    let k = cin * 9;
    let mut dw = vec![0.0f32; cout * k];
    if k == 0 || cout == 0 {
        return dw;
    }
    let len = (ho - 1) * w + wo;
    with_spread(dy, (ho, wo), (len, w), 0, |wide| {
        let g = GradOperands {
            x,
            dy: wide,
            plane: h * w,
            len,
            w,
            cin,
            cout,
        };
        g.sum_into(&mut dw);
    });
    dw
}

impl GradOperands<'_> {
    /// The weight gradient, into `dw` (`Cout x Cin x 9`, zeros).
    fn sum_into(&self, dw: &mut [f32]) {
        let (k, len, cout) = (self.cin * 9, self.len, self.cout);
        let g = self;
        let chunk = chunk_pixels(self.cin + cout);
        if len <= chunk {
            dw.par_chunks_mut(GCO * k)
                .enumerate()
                .for_each(|(pair, rows)| g.accumulate(pair, (0, len), rows));
            return;
        }
        let chunks = len.div_ceil(chunk);
        let per_task = chunks.div_ceil(4 * rayon::current_num_threads());
        let partials: Vec<Vec<f32>> = (0..chunks)
            .step_by(per_task)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|c0| {
                let mut part = vec![0.0f32; cout * k];
                for c in c0..(c0 + per_task).min(chunks) {
                    let range = (c * chunk, ((c + 1) * chunk).min(len));
                    for (pair, rows) in part.chunks_mut(GCO * k).enumerate() {
                        g.accumulate(pair, range, rows);
                    }
                }
                part
            })
            .collect();
        for p in partials {
            for (a, b) in dw.iter_mut().zip(p) {
                *a += b;
            }
        }
    }
}

/// The operands of a weight gradient over flattened rows ([`weight_grad`]).
struct GradOperands<'a> {
    /// `Cin` planes of `plane` floats, rows `w` apart.
    x: &'a [f32],
    /// `Cout` planes of `len` flat pixels.
    dy: &'a [f32],
    plane: usize,
    len: usize,
    w: usize,
    cin: usize,
    cout: usize,
}

impl GradOperands<'_> {
    /// Adds the sums over flat pixels `range` of output channels `2 pair ..` (as many as
    /// `rows`, their `n x Cin x 9` gradients, holds) into `rows`.
    fn accumulate(&self, pair: usize, (j0, j1): (usize, usize), rows: &mut [f32]) {
        let k = self.cin * 9;
        let nco = rows.len() / k;
        assert!(
            pair * GCO + nco <= self.cout && j0 < j1 && j1 <= self.len,
            "conv_avx2: gradient block"
        );
        // A missing second channel repeats the first (computed, not added).
        let dy: [*const f32; GCO] = std::array::from_fn(|c| {
            let co = pair * GCO + c.min(nco - 1);
            self.dy[co * self.len + j0..].as_ptr()
        });
        for k0 in (0..k).step_by(GK) {
            let nk = GK.min(k - k0);
            // Pairs past the last repeat it (computed, not added).
            let xs: [*const f32; GK] = std::array::from_fn(|i| {
                let kk = k0 + i.min(nk - 1);
                let (ci, t) = (kk / 9, kk % 9);
                let at = ci * self.plane + (t / 3) * self.w + t % 3 + j0;
                self.x[at..].as_ptr()
            });
            // SAFETY: AVX2 and FMA are present (asserted by `weight_grad`). Each `dy` pointer
            // starts j0 floats into a plane of `len` and the sums read j1 - j0 <= len - j0
            // floats; each `xs` pointer starts at a tap's shift (<= 2 w + 2) plus j0 in an
            // input plane, and j1 - 1 + 2 w + 2 <= (h - 3) w + w - 2 - 1 + 2 w + 2 < h w.
            let sums = unsafe { grad_block(dy, xs, j1 - j0) };
            for (c, row) in rows.chunks_exact_mut(k).enumerate() {
                for (i, v) in row[k0..k0 + nk].iter_mut().enumerate() {
                    *v += sums[c * GK + i];
                }
            }
        }
    }
}

/// Sums over `n` floats of `dy[c] * xs[i]` for the [`GCO`] x [`GK`] pairs, as `c * GK + i`.
///
/// # Safety
/// AVX2 and FMA; every pointer is valid for reads of `n` floats.
#[target_feature(enable = "avx2,fma")]
unsafe fn grad_block(dy: [*const f32; GCO], xs: [*const f32; GK], n: usize) -> [f32; GCO * GK] {
    let mut acc = [[_mm256_setzero_ps(); GK]; GCO];
    let full = n / 8;
    for v in 0..full {
        // SAFETY: 8 floats at 8 v < n (caller).
        let d: [__m256; GCO] =
            std::array::from_fn(|c| unsafe { _mm256_loadu_ps(dy[c].add(8 * v)) });
        for i in 0..GK {
            // SAFETY: as above.
            let xv = unsafe { _mm256_loadu_ps(xs[i].add(8 * v)) };
            for c in 0..GCO {
                acc[c][i] = _mm256_fmadd_ps(d[c], xv, acc[c][i]);
            }
        }
    }
    let rest = n - 8 * full;
    if rest > 0 {
        let idx: [i32; 8] = std::array::from_fn(|l| if l < rest { -1 } else { 0 });
        // SAFETY: 8 i32 values.
        let m: __m256i = unsafe { _mm256_loadu_si256(idx.as_ptr().cast()) };
        // SAFETY: the lanes under the mask are the floats 8 full .. n (caller); masked-off
        // lanes are not read.
        let d: [__m256; GCO] =
            std::array::from_fn(|c| unsafe { _mm256_maskload_ps(dy[c].add(8 * full), m) });
        for i in 0..GK {
            // SAFETY: as above.
            let xv = unsafe { _mm256_maskload_ps(xs[i].add(8 * full), m) };
            for c in 0..GCO {
                acc[c][i] = _mm256_fmadd_ps(d[c], xv, acc[c][i]);
            }
        }
    }
    let zero = _mm256_setzero_ps();
    let flat: [__m256; 16] = std::array::from_fn(|n| {
        if n < GCO * GK {
            acc[n / GK][n % GK]
        } else {
            zero
        }
    });
    let first = lane_sums(std::array::from_fn(|n| flat[n]));
    let last = lane_sums(std::array::from_fn(|n| flat[8 + n]));
    let mut out = [0.0f32; 16];
    // SAFETY: 16 floats.
    unsafe {
        _mm256_storeu_ps(out.as_mut_ptr(), first);
        _mm256_storeu_ps(out.as_mut_ptr().add(8), last);
    }
    std::array::from_fn(|i| out[i])
}

/// Lane `i` of the result is the sum of the 8 lanes of `v[i]`.
#[target_feature(enable = "avx2,fma")]
fn lane_sums(v: [__m256; 8]) -> __m256 {
    let a01 = _mm256_hadd_ps(v[0], v[1]);
    let a23 = _mm256_hadd_ps(v[2], v[3]);
    let a45 = _mm256_hadd_ps(v[4], v[5]);
    let a67 = _mm256_hadd_ps(v[6], v[7]);
    // Lanes [s0 s1 s2 s3 | s0' s1' s2' s3']: the sums of each vector's halves.
    let b0 = _mm256_hadd_ps(a01, a23);
    let b1 = _mm256_hadd_ps(a45, a67);
    let lo = _mm256_permute2f128_ps::<0x20>(b0, b1);
    let hi = _mm256_permute2f128_ps::<0x31>(b0, b1);
    _mm256_add_ps(lo, hi)
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
        "conv_avx2: layout"
    );
    let mut buf = SPARE
        .lock()
        .map(|mut kept| std::mem::take(&mut *kept))
        .unwrap_or_default();
    if buf.len() < len {
        buf = super::conv_cpu::filled_in_parallel(len, 0.0);
    }
    let spread = |(from, to): (&[f32], &mut [f32])| {
        let mut at = 0;
        for (r, row) in from.chunks_exact(cols).enumerate() {
            let start = origin + r * stride;
            to[at..start].fill(0.0);
            to[start..start + cols].copy_from_slice(row);
            at = start + cols;
        }
        to[at..].fill(0.0);
    };
    if len >= 1 << 16 {
        src.par_chunks_exact(per)
            .zip(buf[..len].par_chunks_exact_mut(plane))
            .for_each(spread);
    } else {
        src.chunks_exact(per)
            .zip(buf[..len].chunks_exact_mut(plane))
            .for_each(spread);
    }
    let r = f(&buf[..len]);
    if let Ok(mut kept) = SPARE.lock()
        && kept.len() < buf.len()
    {
        *kept = buf;
    }
    r
}
