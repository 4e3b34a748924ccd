//! Direct weight gradients of the 3x3 convolution for CPUs with AVX-512: by rows (a block
//! of 3 output channels x the 9 taps of one input channel, 27 accumulators, per 16 output
//! pixels 3 loads of the output gradient, 9 of the input and 27 fused multiply-adds; the sums
//! are reduced across lanes once per band), over flattened rows, and by vectors of 16 output
//! channels on a pixel-major copy of the output gradient ([`weight_grad_channels`]).

use std::arch::x86_64::{
    __m512, _MM_HINT_T0, _mm_prefetch, _mm512_add_ps, _mm512_fmadd_ps, _mm512_load_ps,
    _mm512_loadu_ps, _mm512_maskz_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
    _mm512_shuffle_f32x4, _mm512_shuffle_ps, _mm512_store_ps, _mm512_storeu_ps, _mm512_unpackhi_ps,
    _mm512_unpacklo_ps,
};

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::avx512::{available, lanes};
use super::common::{SharedOut, spread_rows};

/// Output channels per register block of the weight-gradient kernel.
const GCO: usize = 3;

/// Output maps up to this many pixels take the weight gradient in tasks by output channels.
const SMALL_PLANE: usize = 128 * 128;

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
    assert!(available(), "avx512: the CPU lacks AVX-512F");
    super::common::check_weight_grad(x, dy, shape)
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
    assert!(cb * GCO + nco <= cout && oy0 + rows <= ho, "avx512: block");
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
/// [`super::dispatch::LOCAL_PLANE`] outputs go by parts ([`weight_grad_channels_by_parts`]).
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
    if plane > super::dispatch::LOCAL_PLANE {
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
