//! CPU kernels of the 3x3 valid convolution (stride 1, no dilation, no groups) and its two
//! gradients, as blocked im2col + GEMM; on CPUs with AVX-512F the direct kernels of
//! [`super::conv_direct`] run the shapes where they were measured faster (see `Kernel`).
//! The U-Net spends most of its time here.
//!
//! Layouts are NCHW, row-major. The weight `[Cout, Cin, 3, 3]` is read as a `Cout x 9 Cin`
//! matrix whose column `k = ci * 9 + kh * 3 + kw` matches the row `k` of the im2col buffer.
//! The im2col buffer is built for a band of output rows at a time (a few MB), so memory stays
//! bounded and bands run in parallel.
//!
//! - forward: `Y = W . col(X) + b`;
//! - weight gradient: `dW = sum over bands dY_band . col_band(X)^T`;
//! - input gradient: the convolution of `dY` zero-padded by 2 ("full") with the weights
//!   transposed (`Cin <-> Cout`) and flipped — the same forward kernel, whose im2col writes the
//!   padding zeros itself instead of copying `dY` into a padded buffer.
//!
//! Bands write their rows of the output directly (each band owns a disjoint set of output
//! rows), so no per-band result is copied afterwards.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Target size of one im2col band, in floats (4 MiB).
const BAND_FLOATS: usize = 1 << 20;
/// Smallest band, in output pixels, unless the map is smaller.
const MIN_BAND_PIXELS: usize = 1024;
/// Output maps up to this many pixels take the weight gradient in one piece.
const SMALL_PLANE: usize = 64 * 64;
/// Output maps up to this many pixels take the weight gradient as `dY . col^T` (see there).
const TINY_PLANE: usize = 32 * 32;
/// Output maps up to this many pixels (the deep levels' 8-10 px, 128-256 channels) take both
/// gradients as unpacked products ([`super::conv_direct::gemm_rows`]): per layer
/// (`cargo bench --bench conv_layers -- 252`) the input gradient 200-250 -> 290-320 GF/s, the
/// weight gradient 220-330 -> 235-340; on 12-26 px maps they were slower than the direct and
/// GEMM kernels.
const UNPACKED_PLANE: usize = 10 * 10;

/// Threads of a GEMM: all of them when it is the only one running (one band), else one.
fn gemm_threads(bands: usize) -> gemm::Parallelism {
    if bands <= 1 {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    }
}

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

/// A shape together with implicit zero padding on every side.
#[derive(Clone, Copy, Debug)]
struct Padded {
    s: ConvShape,
    pad: usize,
}

impl Padded {
    fn ho(&self) -> usize {
        self.s.h + 2 * self.pad - 2
    }
    fn wo(&self) -> usize {
        self.s.w + 2 * self.pad - 2
    }
    fn k(&self) -> usize {
        self.s.cin * 9
    }
    fn band_rows(&self) -> usize {
        let per_row = self.k() * self.wo();
        let rows = (BAND_FLOATS / per_row.max(1)).max(1);
        // At least 4 bands per thread when the image allows it, for load balance; but no
        // band under MIN_BAND_PIXELS: a GEMM over a few pixels is all packing (the deep levels
        // of a 252 px tile ran at 100-180 GF/s in bands of one 8 px row).
        let want = 4 * rayon::current_num_threads();
        let least = MIN_BAND_PIXELS.div_ceil(self.wo().max(1));
        rows.min(self.ho().div_ceil(want).max(least).max(1))
    }
    fn bands(&self) -> Vec<(usize, usize)> {
        let r = self.band_rows();
        (0..self.ho())
            .step_by(r)
            .map(|oy0| (oy0, r.min(self.ho() - oy0)))
            .collect()
    }
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
unsafe fn sgemm_raw(
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
fn im2col_band(x: &[f32], p: &Padded, oy0: usize, rows: usize, col: &mut [f32]) {
    let s = &p.s;
    let n = rows * p.wo();
    for (ci, dst) in col.chunks_exact_mut(9 * n).take(s.cin).enumerate() {
        im2col_channel(&x[ci * s.h * s.w..(ci + 1) * s.h * s.w], p, oy0, rows, dst);
    }
}

/// [`im2col_band`] of one input channel (`plane`) into its 9 rows of the buffer.
fn im2col_channel(plane: &[f32], p: &Padded, oy0: usize, rows: usize, col: &mut [f32]) {
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
fn im2col_pixel_rows(x: &[f32], s: &ConvShape, oy: usize, rows: &mut [f32]) {
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

/// Whether the CPU runs [`super::conv_direct::gemm_rows`].
fn unpacked_products() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::conv_direct::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `len` zeros, written in parallel chunks (a large buffer zeroed on one thread held the
/// other up).
fn zeros(len: usize) -> Vec<f32> {
    filled_in_parallel(len, 0.0)
}

/// `len` copies of `value`, written in parallel chunks when there are many.
pub fn filled_in_parallel<T: Copy + Send + Sync>(len: usize, value: T) -> Vec<T> {
    const CHUNK: usize = 1 << 14;
    if len < 4 * CHUNK {
        return vec![value; len];
    }
    let mut v = Vec::with_capacity(len);
    fill_in_parallel(&mut v.spare_capacity_mut()[..len], value);
    // SAFETY: the first `len` elements were all written just above.
    unsafe { v.set_len(len) };
    v
}

/// Writes `value` to every element of `s` (which may start uninitialised), in parallel chunks.
fn fill_in_parallel<T: Copy + Send + Sync>(s: &mut [MaybeUninit<T>], value: T) {
    s.par_chunks_mut(1 << 14)
        .for_each(|c| c.fill(MaybeUninit::new(value)));
}

thread_local! {
    /// Unfolded patches of the band a thread works on, kept between calls: a band's buffer
    /// is at most a few MB and is overwritten completely by `im2col_band`, so allocating and
    /// zeroing a fresh one for every band of every layer would only cost time.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on a scratch buffer of `len` floats with unspecified contents (the thread's
/// buffer, or a fresh one when it is in use further up this thread's stack: rayon can run
/// another band on a thread that waits inside a GEMM).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0.0f32; len]),
    })
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

/// The output buffer shared by the bands of one convolution. Each band writes only its own
/// rows of every output channel, so the writes of different bands never overlap.
struct BandOutput {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: bands write disjoint regions (see `segments`), and the buffer outlives the
// parallel loop that uses it.
unsafe impl Sync for BandOutput {}

impl BandOutput {
    /// Start of the buffer (a method, so closures capture the whole `Sync` struct).
    fn base(&self) -> (*mut f32, usize) {
        (self.ptr, self.len)
    }

    /// The band's segment of every output channel: `cout` disjoint slices of `n` values at
    /// `co * plane + start`.
    ///
    /// # Safety
    /// No other live reference may cover these segments (bands must be disjoint).
    unsafe fn segments<'a>(
        ptr: *mut f32,
        len: usize,
        cout: usize,
        plane: usize,
        start: usize,
        n: usize,
    ) -> Vec<&'a mut [f32]> {
        (0..cout)
            .map(|co| {
                let off = co * plane + start;
                assert!(off + n <= len, "band segment out of bounds");
                // SAFETY: in bounds (checked), and disjoint from every other band's segments.
                unsafe { std::slice::from_raw_parts_mut(ptr.add(off), n) }
            })
            .collect()
    }
}

/// Convolution with implicit zero padding; returns `Cout x Ho x Wo`.
fn conv3x3_padded(
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

fn relu_in_place(segments: &mut [&mut [f32]]) {
    for seg in segments.iter_mut() {
        for v in seg.iter_mut() {
            *v = v.max(0.0);
        }
    }
}

/// Whether the direct AVX-512 kernel by rows of [`super::conv_direct`] runs the forward pass
/// of a convolution of this shape (also the input gradient, as the forward pass of its
/// transposed shape) on a CPU that has it: the reduction is short or the rows are long. Measured
/// per layer of both presets (`cargo bench --bench conv_layers`, and the paper net's layers):
/// up to 64 input channels the direct kernels ran at 390-490 GF/s against 200-350 for
/// im2col + GEMM; with 128-256 channels they win on maps at least 128 px wide (380-490 GF/s
/// against 300-430) and lose on narrower ones; from 512 channels GEMM wins.
fn direct(s: &ConvShape) -> bool {
    s.cin <= 64 || (s.cin <= 256 && s.w >= 130)
}

/// Whether the flattened-rows kernel runs a convolution of this shape (padded by `pad`): rows
/// up to 128 px (padded), where the row kernel's blocks of 48 pixels are partly empty at each
/// row's end and im2col + GEMM has too few pixels to amortise its packing, with up to 512
/// input channels (with 1024 the weights of each pixel block no longer stay in the caches).
/// Measured per layer of both presets (`cargo bench --bench conv_layers [-- 252 | paper]`):
/// lite 572 px, maps 56-104 px, forward 350-370 -> 430-470 GF/s; lite 252 px, maps 16-60 px,
/// 150-290 -> 300-450 GF/s; the paper net's 512 channels on 54-104 px 400 -> 480-500 GF/s.
/// Wider rows stay with the row kernel (the flat one lost up to 20 % on 16 channels x 570 px
/// there, its padded copy the most on input gradients).
fn narrow(s: &ConvShape, pad: usize) -> bool {
    s.w + 2 * pad <= 128 && s.cin <= 512
}

/// Whether Winograd's F(2x2, 3x3) ([`super::conv_winograd`]) runs the forward pass of a
/// convolution of this shape padded by `pad` (also the input gradient, as the forward pass of
/// its transposed shape) on a CPU with AVX-512: 16 or more input channels, outputs at least
/// 56 px wide, and at most 128 x 128 channel pairs (their transformed weights, 1 MB, stay in
/// the L2 cache while every group of tiles reads them). Measured per layer against the direct
/// kernels (Xeon, 2 threads, best of 40 alternated runs): 16 -> 16 channels on 250 px 1.34 ->
/// 1.00 ms, 16 -> 32 on 124 px 0.69 -> 0.46, 32 -> 32 on 122 px 1.25 -> 0.98, 16 -> 16 on 570
/// px 6.1 -> 5.0, 32 -> 32 on 282 px 5.3 -> 4.1, 64 -> 64 on 138 px 5.3 -> 4.2, 128 -> 128 on
/// 66 px 5.5 -> 4.4; even on 70-72 px with 16 output channels and on 58 px, and 1.4-4x slower
/// on the deep levels' 24-40 px maps (few tile rows to share out, and the weights'
/// transformation no longer amortised). The paper net's layers (`conv_layers -- paper`, one
/// run each): 64 -> 64 channels on 570 px 141.6 -> 87.5 ms, on 390 px 74.8 -> 46.7, 128 -> 128
/// on 282 px 115.3 -> 101.9, 128 -> 64 on 392 px 126.8 -> 103.8; with 256 channels or more
/// slower (256 -> 256 on 138 px 115.1 -> 141.5, 512 -> 512 on 66 px 81.5 -> 132.4: every
/// group of 32 tiles reads all of their transformed weights, 4-16 MB).
fn winograd(s: &ConvShape, pad: usize) -> bool {
    s.cin >= 16 && s.cin * s.cout <= 128 * 128 && s.w + 2 * pad >= 58
}

/// Whether the direct kernel computes the weight gradient of this shape: few channels, or a
/// map of at least 30 x 30 output pixels (there it beat GEMM by 1.1-2.3x on every layer of
/// both presets, e.g. the paper net's 512 -> 512 channels on 64 px: 92 -> 40 ms); on smaller
/// maps the GEMM of [`conv3x3_weight_grad`]'s tiny-map form is faster.
fn direct_weight_grad(s: &ConvShape) -> bool {
    let small_channels = s.cin <= 32 || (s.cin <= 64 && s.cout <= 64);
    small_channels || s.ho() * s.wo() >= 30 * 30
}

/// Forward pass for one image: `x` is `Cin x H x W`, `weight` `Cout x Cin x 3 x 3`, `bias`
/// `Cout` (optional); returns `Cout x (H-2) x (W-2)`, through a ReLU when `relu`.
pub fn conv3x3_forward(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    relu: bool,
) -> Vec<f32> {
    let mut y = vec![0.0f32; s.cout * s.ho() * s.wo()];
    conv3x3_forward_into(x, weight, bias, s, relu, &mut y);
    y
}

/// [`conv3x3_forward`] into `y` (`Cout x (H-2) x (W-2)` values, all overwritten).
pub fn conv3x3_forward_into(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    relu: bool,
    y: &mut [f32],
) {
    // SAFETY: the kernels write only initialised floats.
    forward_with(x, weight, bias, s, relu, Path::Fastest, unsafe {
        as_uninit(y)
    })
}

/// [`conv3x3_forward_into`] into memory that need not be initialised: every value is written
/// (the caller need not zero an output that the kernel overwrites).
pub fn conv3x3_forward_uninit(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    relu: bool,
    y: &mut [MaybeUninit<f32>],
) {
    forward_with(x, weight, bias, s, relu, Path::Fastest, y)
}

/// `y` as floats that a kernel may leave uninitialised, for the kernels that write outputs
/// without reading them.
///
/// # Safety
/// Only initialised floats may be written through the result (`y` stays initialised).
pub(crate) unsafe fn as_uninit(y: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: same layout; writes keep `y` initialised (caller).
    unsafe { &mut *(std::ptr::from_mut(y) as *mut [MaybeUninit<f32>]) }
}

/// `y` filled with zeros, as initialised floats (in parallel when large).
pub(crate) fn zeroed(y: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    fill_in_parallel(y, 0.0);
    // SAFETY: every float was written above; same layout.
    unsafe { &mut *(std::ptr::from_mut(y) as *mut [f32]) }
}

/// Checks the sizes of a forward pass of the direct kernels (`x`, the weights in effect and
/// `bias` of a convolution of `Cin x H x W` to `Cout` channels with `pad` pixels of implicit
/// zero padding, into `y_len` outputs) and returns the output's height and width.
///
/// # Panics
/// If a size disagrees, or the padded map is smaller than the kernel or padded by more than 2.
pub(crate) fn check_forward(
    x: &[f32],
    weight: Taps<'_>,
    bias: Option<&[f32]>,
    (cin, cout, h, w): (usize, usize, usize, usize),
    pad: usize,
    y_len: usize,
) -> (usize, usize) {
    assert!(
        h >= 1 && w >= 1 && pad <= 2 && h + 2 * pad >= 3 && w + 2 * pad >= 3,
        "conv3x3: map smaller than the kernel, or padding"
    );
    assert_eq!(x.len(), cin * h * w, "conv3x3: input size");
    assert_eq!(
        weight.values().len(),
        cout * cin * 9,
        "conv3x3: weight size"
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), cout, "conv3x3: bias size");
    }
    let (ho, wo) = (h + 2 * pad - 2, w + 2 * pad - 2);
    assert_eq!(y_len, cout * ho * wo, "conv3x3: output size");
    (ho, wo)
}

/// Checks the sizes of a weight gradient of the direct kernels (`x` is `Cin x H x W`, `dy`
/// `Cout x (H-2) x (W-2)`) and returns the output's height and width.
///
/// # Panics
/// If a size disagrees or the map is smaller than the kernel.
pub(crate) fn check_weight_grad(
    x: &[f32],
    dy: &[f32],
    (cin, cout, h, w): (usize, usize, usize, usize),
) -> (usize, usize) {
    assert!(h >= 3 && w >= 3, "conv3x3: map smaller than the kernel");
    assert_eq!(x.len(), cin * h * w, "conv3x3: input size");
    let (ho, wo) = (h - 2, w - 2);
    assert_eq!(dy.len(), cout * ho * wo, "conv3x3: gradient size");
    (ho, wo)
}

/// The weights of a forward kernel.
#[derive(Clone, Copy, Debug)]
pub enum Taps<'a> {
    /// `Cout x Cin x 3 x 3`: a convolution.
    Given(&'a [f32]),
    /// The weights of the convolution whose input gradient this pass is: `Cin x Cout x 3 x 3`
    /// in this pass's terms (its input channels are that one's outputs), applied transposed
    /// and flipped, `W'[co, ci, kh, kw] = W[ci, co, 2 - kh, 2 - kw]`.
    Flipped(&'a [f32]),
}

impl<'a> Taps<'a> {
    /// The weights as stored.
    pub fn values(self) -> &'a [f32] {
        match self {
            Self::Given(w) | Self::Flipped(w) => w,
        }
    }

    /// The weight in effect for output channel `co`, input channel `ci` and tap `t = 3 kh +
    /// kw` of a pass with `cin` input and `cout` output channels.
    pub fn at(self, (cin, cout): (usize, usize), co: usize, ci: usize, t: usize) -> f32 {
        match self {
            Self::Given(w) => w[(co * cin + ci) * 9 + t],
            Self::Flipped(w) => w[(ci * cout + co) * 9 + 8 - t],
        }
    }

    /// The weights `Cout x Cin x 3 x 3` in effect, for a pass with `cout` output channels
    /// (copied when flipped).
    fn effective(self, cout: usize) -> std::borrow::Cow<'a, [f32]> {
        match self {
            Self::Given(w) => std::borrow::Cow::Borrowed(w),
            Self::Flipped(w) => {
                let cin = w.len() / 9 / cout.max(1);
                let mut wt = vec![0.0f32; w.len()];
                for (co, out) in wt.chunks_exact_mut(cin * 9).enumerate() {
                    for (ci, taps) in out.chunks_exact_mut(9).enumerate() {
                        for (t, v) in taps.iter_mut().enumerate() {
                            *v = self.at((cin, cout), co, ci, t);
                        }
                    }
                }
                std::borrow::Cow::Owned(wt)
            }
        }
    }
}

/// Which kernels compute a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// The direct kernels where the CPU has them and they are faster for the shape.
    Fastest,
    /// Always im2col + GEMM (tests compare the kernels).
    #[cfg_attr(not(test), allow(dead_code))]
    Gemm,
    /// The direct AVX-512 kernel by output rows where the CPU has it, else GEMM.
    #[cfg_attr(not(test), allow(dead_code))]
    Rows,
    /// The direct AVX-512 kernel over flattened rows where the CPU has it, else GEMM.
    #[cfg_attr(not(test), allow(dead_code))]
    Flat,
    /// The direct AVX2 kernels where the CPU has them, else GEMM.
    #[cfg_attr(not(test), allow(dead_code))]
    Avx2,
    /// The weight gradient by vectors of output channels where the CPU has AVX-512 (the
    /// passes by rows), else GEMM.
    #[cfg_attr(not(test), allow(dead_code))]
    Channels,
    /// Winograd's F(2x2, 3x3) for the forward pass and the input gradient where the CPU has
    /// AVX-512, else GEMM (the weight gradient: GEMM).
    #[cfg_attr(not(test), allow(dead_code))]
    Winograd,
}

/// The kernel that computes a convolution (or, padded, an input gradient).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// im2col + GEMM.
    Gemm,
    /// The direct kernel by output rows ([`super::conv_direct::forward_into`]).
    Rows,
    /// The direct kernel over flattened rows ([`super::conv_direct::forward_flat_into`]).
    Flat,
    /// The direct AVX2 kernels ([`super::conv_avx2`]).
    Avx2,
    /// The weight gradient by vectors of output channels
    /// ([`super::conv_direct::weight_grad_channels`]).
    Channels,
    /// Winograd's F(2x2, 3x3) ([`super::conv_winograd::forward_into`]).
    Winograd,
}

/// The direct kernels a CPU has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    /// AVX-512F: [`super::conv_direct`].
    Avx512,
    /// AVX2 and FMA: [`super::conv_avx2`].
    Avx2,
    /// None: im2col + GEMM only.
    Neither,
}

impl Isa {
    /// The direct kernels of this CPU (the AVX-512 ones where both exist).
    fn here() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if super::conv_direct::available() && !avx2_forced() {
                return Self::Avx512;
            }
            if super::conv_avx2::available() {
                return Self::Avx2;
            }
        }
        Self::Neither
    }
}

/// The kernel set that `UNET_STUDIO_CONV` asks for, to measure one against another in the same
/// run (`cargo bench --bench conv_layers`, `unet-studio bench`): `gemm` im2col + GEMM
/// everywhere, `avx2` the AVX2 kernels (and their choice per shape) on a CPU that also has
/// AVX-512, `direct` the direct kernels where Winograd's would run; anything else (or unset)
/// the fastest this CPU has.
fn conv_override() -> &'static str {
    static CHOICE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CHOICE.get_or_init(|| std::env::var("UNET_STUDIO_CONV").unwrap_or_default())
}

/// Whether `UNET_STUDIO_CONV=gemm` forces im2col + GEMM ([`conv_override`]).
fn gemm_forced() -> bool {
    conv_override() == "gemm"
}

/// Whether `UNET_STUDIO_CONV=avx2` forces the AVX2 kernels ([`conv_override`]).
fn avx2_forced() -> bool {
    conv_override() == "avx2"
}

/// Whether `UNET_STUDIO_CONV=direct` leaves Winograd's kernel out ([`conv_override`]): the
/// direct kernels where they were chosen before it.
fn winograd_excluded() -> bool {
    conv_override() == "direct"
}

/// The kernel that `path` names, or for [`Path::Fastest`] the one `fastest` picks for the
/// shape on this CPU's direct kernels; im2col + GEMM where the CPU lacks the kernel named.
fn chosen(path: Path, fastest: impl FnOnce(Isa) -> Kernel) -> Kernel {
    let isa = Isa::here();
    match (path, isa) {
        (Path::Rows, Isa::Avx512) => Kernel::Rows,
        (Path::Flat, Isa::Avx512) => Kernel::Flat,
        (Path::Avx2, Isa::Avx512 | Isa::Avx2) => Kernel::Avx2,
        (Path::Channels, Isa::Avx512) => Kernel::Channels,
        (Path::Winograd, Isa::Avx512) => Kernel::Winograd,
        (Path::Fastest, Isa::Avx512 | Isa::Avx2) if !gemm_forced() => fastest(isa),
        _ => Kernel::Gemm,
    }
}

/// The fastest kernel for a convolution of shape `s` padded by `pad` (see [`narrow`] and
/// [`direct`]; with AVX2, [`direct_avx2`]).
fn fastest_forward(s: &ConvShape, pad: usize, isa: Isa) -> Kernel {
    if isa == Isa::Avx2 {
        return if direct_avx2(s, pad) {
            Kernel::Avx2
        } else {
            Kernel::Gemm
        };
    }
    if winograd(s, pad) && !winograd_excluded() {
        Kernel::Winograd
    } else if narrow(s, pad) {
        Kernel::Flat
    } else if direct(s) {
        Kernel::Rows
    } else {
        Kernel::Gemm
    }
}

/// The fastest kernel for the weight gradient of a convolution of shape `s`: over flattened
/// rows on narrow maps of at least 20 x 20 outputs (lite 252 px: 22-28 px maps 180-230 ->
/// 260-330 GF/s; lite 572 px: 54-104 px maps 370-440 -> 410-450), the row kernel or GEMM as
/// [`direct_weight_grad`] says otherwise (on maps of 10-16 px the flat kernel's 27 sums per
/// channel pair, reduced across lanes, cost more than its multiplications). With AVX2,
/// [`direct_avx2_weight_grad`].
fn fastest_weight_grad(s: &ConvShape, isa: Isa) -> Kernel {
    if isa == Isa::Avx2 {
        return if direct_avx2_weight_grad(s) {
            Kernel::Avx2
        } else {
            Kernel::Gemm
        };
    }
    if by_channels(s) {
        Kernel::Channels
    } else if narrow(s, 0) && s.ho() * s.wo() >= 20 * 20 {
        Kernel::Flat
    } else if direct_weight_grad(s) {
        Kernel::Rows
    } else {
        Kernel::Gemm
    }
}

/// Output maps of more pixels than this take [`super::conv_direct::weight_grad_channels`] by
/// parts of the map, each task transposing its own bands of the output gradient: a
/// pixel-major copy of the whole of it (10-80 MB on the top levels) went through memory.
pub(crate) const LOCAL_PLANE: usize = 128 * 128;

/// Whether the weight gradient of this shape is computed by vectors of output channels
/// ([`super::conv_direct::weight_grad_channels`]): at least 32 output channels on more than
/// 8 x 8 outputs, with at least 32 input channels, or 16 on a map that the kernel takes by
/// parts (more than [`LOCAL_PLANE`] outputs). Measured per layer against the kernels chosen
/// before (`cargo bench --bench conv_layers [-- 252 | paper]`, Xeon with AVX-512, 2
/// threads, alternated runs): lite 572 px, 64-256 channels on 30-104 px 124-177
/// -> 172-213 GF/s, 16-64 channels on 138-284 px 161-184 -> 198-244; lite 252 px, 32-256
/// channels on 12-60 px 87-162 -> 120-240; paper, 64-256 channels on 138-570 px 122-183 ->
/// 209-261 (its weight gradients in all 1696 -> 1405 ms). It lost with 16 input channels on
/// 124 px (16 -> 32: 113 against 128), with one input channel (46 against 79) and on 8 x 8
/// outputs (256 channels: 101-104 against 122-133, the unpacked GEMM); with 16 output
/// channels its vectors would be half empty.
fn by_channels(s: &ConvShape) -> bool {
    let plane = s.ho() * s.wo();
    s.cout >= 32 && plane > 8 * 8 && (s.cin >= 32 || (s.cin >= 16 && plane > LOCAL_PLANE))
}

/// Whether the direct AVX2 kernel runs the forward pass of a convolution of this shape padded
/// by `pad` (the input gradient: the forward pass of its transposed shape padded by 2) on a
/// CPU without AVX-512: up to 64 input channels, or up to 256 on maps of at least 16 px or
/// padded. Measured per layer against im2col + GEMM in the same runs (`cargo bench --bench
/// conv_layers [-- 252 | paper]`, then with `UNET_STUDIO_CONV=gemm`; Zen 3, 2 threads, GEMM
/// 175-185 GF/s): lite 572 px forward 118 against 150 ms in all, 16-64 channels 128-179
/// against 94-158 GF/s; input gradients 136 against 157 ms; lite 252 px forward 14.1
/// against 17.2 ms, input gradients 16.2 against 20.6 (the deep levels' 8-12 px maps too:
/// GEMM's im2col of a map padded by 2 is mostly zeros). GEMM won the forward pass of 128-256
/// channels on 10-14 px maps (80-100 against 124-138 GF/s) and of 512-1024 channels (the
/// paper net's deep levels: 90-124 against 150-165).
fn direct_avx2(s: &ConvShape, pad: usize) -> bool {
    s.cin <= 64 || (s.cin <= 256 && (pad > 0 || s.w >= 16))
}

/// Whether the direct AVX2 kernel computes the weight gradient of this shape on a CPU without
/// AVX-512: from 2 input channels, with up to 64, or on maps of at least 20 px with up to 1024
/// channels in all, or on maps of at least 48 px. Measured as [`direct_avx2`]: lite 572 px
/// 113 against 124 ms in all (16-256 channels on 30-570 px 133-180 against 124-170 GF/s),
/// lite 252 px 16-128 channels on 22-250 px 112-161 against 91-156, paper 1705 against 2040 ms
/// (512-1024 channels on 54-56 px 172-176 against 119-121). GEMM's `dY . col^T` won on a
/// single input channel (the first layer: 24-33 against 58-70 GF/s; its 9 pairs fill two
/// register blocks of 6), with 128-256 channels on the deep levels' 10-16 px maps (85-129
/// against 125-141: the two transpositions cost as much as the products) and with 1536-2048
/// channels on 30-32 px (99-156 against 151-174: a chunk of their pixels no longer fits the
/// L2 cache).
fn direct_avx2_weight_grad(s: &ConvShape) -> bool {
    s.cin >= 2 && (s.cin <= 64 || (s.h >= 20 && s.cin + s.cout <= 1024) || s.h >= 48)
}

/// Whether, on a CPU with AVX2 but not AVX-512, the input gradient of this shape is computed
/// as `dcol = W^T . dY` by the GEMM and added into place (col2im) rather than as the
/// convolution of `dY` padded by 2: on the deep levels' maps of up to 16 x 16 outputs with at
/// least 128 output channels, where the padded convolution computes 1.5-2.5x the products
/// (10 x 10 outputs from 8 x 8).
fn col2im_avx2(s: &ConvShape) -> bool {
    s.ho() * s.wo() <= 16 * 16 && s.cout >= 128
}

/// Runs `kernel` for a convolution of shape `s` with padding `pad` into `y`.
#[allow(clippy::too_many_arguments)]
fn run_kernel(
    kernel: Kernel,
    x: &[f32],
    weight: Taps<'_>,
    bias: Option<&[f32]>,
    s: &ConvShape,
    pad: usize,
    relu: bool,
    y: &mut [MaybeUninit<f32>],
) {
    let shape = (s.cin, s.cout, s.h, s.w);
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Rows => super::conv_direct::forward_into(x, weight, bias, shape, pad, relu, y),
        #[cfg(target_arch = "x86_64")]
        Kernel::Flat => super::conv_direct::forward_flat_into(x, weight, bias, shape, pad, relu, y),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => super::conv_avx2::forward_into(x, weight, bias, shape, pad, relu, y),
        #[cfg(target_arch = "x86_64")]
        Kernel::Winograd => {
            super::conv_winograd::forward_into(x, weight, bias, shape, pad, relu, y)
        }
        _ => {
            let _ = shape;
            let weight = weight.effective(s.cout);
            conv3x3_padded(x, &weight, bias, &Padded { s: *s, pad }, relu, zeroed(y))
        }
    }
}

fn forward_with(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    relu: bool,
    path: Path,
    y: &mut [MaybeUninit<f32>],
) {
    let k = chosen(path, |isa| fastest_forward(s, 0, isa));
    run_kernel(k, x, Taps::Given(weight), bias, s, 0, relu, y)
}

/// The gradient before a ReLU from the gradient after it and the ReLU's output: `grad` where
/// `out > 0`, else 0 (one pass).
pub fn relu_grad(out: &[f32], grad: &[f32]) -> Vec<f32> {
    let mut g = grad.to_vec();
    relu_bias_grad_in_place(out, &mut g, out.len().max(1));
    g
}

/// [`relu_grad`] in place, plane by plane (`plane` values each, in parallel), returning the
/// sum of every plane's masked gradient (for a per-channel bias: the planes of `[N, C, H, W]`
/// are channel `i % C`).
pub fn relu_bias_grad_in_place(out: &[f32], grad: &mut [f32], plane: usize) -> Vec<f32> {
    assert_eq!(out.len(), grad.len(), "relu_grad: sizes");
    if plane == 0 {
        return Vec::new();
    }
    grad.par_chunks_mut(plane)
        .with_min_len(planes_per_task(plane))
        .zip(out.par_chunks(plane))
        .map(|(g, o)| relu_bias_grad_plane_wide(o, g))
        .collect()
}

/// [`relu_bias_grad_in_place`] of one plane: 16 partial sums (one vector), added in f64 at the
/// end.
#[inline(always)]
fn relu_bias_grad_plane(o: &[f32], g: &mut [f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let (g16, g_tail) = g.as_chunks_mut::<16>();
    let (o16, o_tail) = o.as_chunks::<16>();
    for (gv, ov) in g16.iter_mut().zip(o16) {
        for l in 0..16 {
            // A select by bit mask (the vectoriser kept `if` as branches).
            let keep = u32::from(ov[l] > 0.0).wrapping_neg();
            let v = f32::from_bits(gv[l].to_bits() & keep);
            gv[l] = v;
            lanes[l] += v;
        }
    }
    let mut sum: f64 = lanes.iter().map(|&v| f64::from(v)).sum();
    for (g, &o) in g_tail.iter_mut().zip(o_tail) {
        *g = if o > 0.0 { *g } else { 0.0 };
        sum += f64::from(*g);
    }
    sum as f32
}

/// `fn $name(args) -> R` calls `$body(args)` (an `#[inline(always)]` function) compiled for
/// AVX-512 where the CPU has it, else for AVX2 + FMA where it has those: element-wise loops
/// (the ReLU and pooling kernels) vectorise 16 or 8 wide instead of the baseline target's
/// scalar or 4-wide code (the ReLU gradient's loop ran scalar: ~5 % of a lite 252 px training
/// step).
macro_rules! wide {
    ($name:ident = $body:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match Isa::here() {
                    // SAFETY: the CPU has AVX-512F (checked).
                    Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: the CPU has AVX2 and FMA (checked).
                    Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    Isa::Neither => {}
                }
            }
            $body($($arg),*)
        }
    };
}

wide!(relu_bias_grad_plane_wide = relu_bias_grad_plane(o: &[f32], g: &mut [f32]) -> f32);
wide!(pool2x2_backward_plane_wide = pool2x2_backward_plane(
    xp: &[f32], gp: &[f32], hw: (usize, usize), dxp: &mut [f32]
));
wide!(pool2x2_backward_add_plane_wide = pool2x2_backward_add_plane(
    xp: &[f32], gp: &[f32], hw: (usize, usize), dxp: &mut [f32]
));
wide!(pool2x2_forward_plane_wide = pool2x2_forward_plane(
    xp: &[f32], hw: (usize, usize), yp: &mut [f32]
));

/// Weight gradient for one image: `dW[co, ci, kh, kw] = sum dY[co, oy, ox] X[ci, oy+kh, ox+kw]`.
/// `dy` is `Cout x (H-2) x (W-2)`; returns `Cout x Cin x 3 x 3`.
pub fn conv3x3_weight_grad(x: &[f32], dy: &[f32], s: &ConvShape) -> Vec<f32> {
    weight_grad_with(x, dy, s, Path::Fastest)
}

fn weight_grad_with(x: &[f32], dy: &[f32], s: &ConvShape, path: Path) -> Vec<f32> {
    // Only x86-64 has the direct kernels (elsewhere `chosen` is always GEMM).
    let shape = (s.cin, s.cout, s.h, s.w);
    match chosen(path, |isa| fastest_weight_grad(s, isa)) {
        #[cfg(target_arch = "x86_64")]
        Kernel::Rows => return super::conv_direct::weight_grad(x, dy, shape),
        #[cfg(target_arch = "x86_64")]
        Kernel::Flat => return super::conv_direct::weight_grad_flat(x, dy, shape),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => return super::conv_avx2::weight_grad(x, dy, shape),
        #[cfg(target_arch = "x86_64")]
        Kernel::Channels => return super::conv_direct::weight_grad_channels(x, dy, shape),
        _ => {
            let _ = shape;
        }
    }
    let (ho, wo, k) = (s.ho(), s.wo(), s.cin * 9);
    let plane = ho * wo;
    let p = Padded { s: *s, pad: 0 };
    if path == Path::Fastest && plane <= UNPACKED_PLANE && unpacked_products() {
        // dW (Cout x K) = dY (Cout x P) . col^T (P x K), unpacked: col^T's rows (one per
        // output pixel) are contiguous.
        let mut colt = zeros(plane * k);
        colt.par_chunks_mut(wo * k)
            .enumerate()
            .for_each(|(oy, rows)| im2col_pixel_rows(x, s, oy, rows));
        let mut dw = zeros(s.cout * k);
        gemm_rows((s.cout, k, plane), dy, (plane, 1), &colt, k, &mut dw, k);
        return dw;
    }
    if plane <= SMALL_PLANE {
        // A small map (deep levels): one unfolding of the whole image and one GEMM, threaded
        // inside. Splitting the pixels into bands instead would give every band a whole
        // K x Cout partial result to write and add up for a handful of pixels.
        let mut col = zeros(k * plane);
        col.par_chunks_mut(9 * plane)
            .enumerate()
            .for_each(|(ci, c)| {
                im2col_channel(&x[ci * s.h * s.w..(ci + 1) * s.h * s.w], &p, 0, ho, c)
            });
        if plane <= TINY_PLANE {
            // dW (Cout x K) = dY (Cout x P) . col^T (P x K), in burn's layout directly: with
            // a reduction of a few hundred pixels, writing and transposing a K x Cout result
            // cost more than the products (256 channels on 8 x 8 px: 1.9 -> 0.3 ms).
            let mut dw = zeros(s.cout * k);
            sgemm(
                s.cout,
                k,
                plane,
                &mut dw,
                (k, 1),
                false,
                dy,
                (plane, 1),
                &col,
                (1, plane),
                gemm_threads(1),
            );
            return dw;
        }
        let mut dwt = vec![0.0f32; k * s.cout];
        sgemm(
            k,
            s.cout,
            plane,
            &mut dwt,
            (s.cout, 1),
            false,
            &col,
            (plane, 1),
            dy,
            (1, plane),
            gemm_threads(1),
        );
        return transpose_to_cout_k(&dwt, s.cout, k);
    }
    let partials: Vec<Vec<f32>> = p
        .bands()
        .into_par_iter()
        .map(|(oy0, rows)| {
            let n = rows * wo;
            // dW^T band (K x Cout) = col (K x n) . dY_band^T (n x Cout): both operands are
            // read along their contiguous dimension by the packing of the GEMM.
            let mut dwt = vec![0.0f32; k * s.cout];
            with_scratch(k * n, |col| {
                im2col_band(x, &p, oy0, rows, col);
                sgemm(
                    k,
                    s.cout,
                    n,
                    &mut dwt,
                    (s.cout, 1),
                    false,
                    col,
                    (n, 1),
                    &dy[oy0 * wo..],
                    (1, plane),
                    gemm::Parallelism::None,
                );
            });
            dwt
        })
        .collect();
    let mut dwt = vec![0.0f32; k * s.cout];
    for p in partials {
        for (a, b) in dwt.iter_mut().zip(p) {
            *a += b;
        }
    }
    transpose_to_cout_k(&dwt, s.cout, k)
}

/// `K x Cout` (the GEMM's layout of the weight gradient) to `Cout x K` (burn's).
fn transpose_to_cout_k(dwt: &[f32], cout: usize, k: usize) -> Vec<f32> {
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

/// Input gradient for one image: `dX = conv3x3_valid(pad2(dY), flip(W)^T)`; returns
/// `Cin x H x W`.
pub fn conv3x3_input_grad(dy: &[f32], weight: &[f32], s: &ConvShape) -> Vec<f32> {
    let mut dx = vec![0.0f32; s.cin * s.h * s.w];
    conv3x3_input_grad_into(dy, weight, s, &mut dx);
    dx
}

/// [`conv3x3_input_grad`] into `dx` (`Cin x H x W` values, all overwritten).
pub fn conv3x3_input_grad_into(dy: &[f32], weight: &[f32], s: &ConvShape, dx: &mut [f32]) {
    // SAFETY: the kernels write only initialised floats.
    input_grad_with(dy, weight, s, Path::Fastest, unsafe { as_uninit(dx) })
}

/// [`conv3x3_input_grad_into`] into memory that need not be initialised: every value is
/// written.
pub fn conv3x3_input_grad_uninit(
    dy: &[f32],
    weight: &[f32],
    s: &ConvShape,
    dx: &mut [MaybeUninit<f32>],
) {
    input_grad_with(dy, weight, s, Path::Fastest, dx)
}

fn input_grad_with(
    dy: &[f32],
    weight: &[f32],
    s: &ConvShape,
    path: Path,
    dx: &mut [MaybeUninit<f32>],
) {
    let plane = s.ho() * s.wo();
    // dcol (K x P) = W^T (K x Cout) . dY (Cout x P), then each tap's row of dcol added into
    // dX where it came from: exactly the multiplications of the gradient, where the
    // convolution of dY padded by 2 multiplies zeros too (10 x 10 outputs from 8 x 8: 1.56x
    // the work). With AVX-512 as unpacked products on the smallest maps; with AVX2 only, by
    // the GEMM (`W^T` read in place by strides) where [`col2im_avx2`] says.
    let unpacked = path == Path::Fastest && plane <= UNPACKED_PLANE && unpacked_products();
    let by_gemm =
        path == Path::Fastest && Isa::here() == Isa::Avx2 && !gemm_forced() && col2im_avx2(s);
    if unpacked || by_gemm {
        let k = 9 * s.cin;
        let mut dcol = zeros(k * plane);
        if unpacked {
            gemm_rows(
                (k, plane, s.cout),
                weight,
                (1, k),
                dy,
                plane,
                &mut dcol,
                plane,
            );
        } else {
            sgemm(
                k,
                plane,
                s.cout,
                &mut dcol,
                (plane, 1),
                false,
                weight,
                (1, k),
                dy,
                (plane, 1),
                gemm_threads(1),
            );
        }
        dx.par_chunks_mut(s.h * s.w)
            .zip(dcol.par_chunks(9 * plane))
            .with_min_len(planes_per_task(9 * plane))
            .for_each(|(d, c)| col2im_channel(c, s, zeroed(d)));
        return;
    }
    let back = Padded {
        s: ConvShape {
            cin: s.cout,
            cout: s.cin,
            h: s.ho(),
            w: s.wo(),
        },
        pad: 2,
    };
    let k = chosen(path, |isa| fastest_forward(&back.s, 2, isa));
    run_kernel(k, dy, Taps::Flipped(weight), None, &back.s, 2, false, dx)
}

/// One input channel's gradient from its 9 rows of `dcol` (`9 x Ho Wo`): `d` (`H x W`,
/// zeros) plus the sum over taps `(kh, kw)` of the tap's row placed at offset `(kh, kw)`.
fn col2im_channel(dcol: &[f32], s: &ConvShape, d: &mut [f32]) {
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

/// Shape of a 2x2 stride-2 up-convolution (one image): input `Cin x H x W`, output
/// `Cout x 2H x 2W`, weight `Cin x Cout x 2 x 2` (burn's transposed-convolution layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpShape {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
}

/// Input maps up to this many pixels run the up-convolution's products unpacked, in one
/// piece ([`UpShape::unpacked`]). Measured in lite 252 px training steps: on 8 and 12 px
/// maps (128-256 channels) all three products 15-45 % faster; on 20 and 36 px the input and
/// weight gradients 20-50 % slower (few input channels: few blocks of rows), the forward
/// pass even.
const UNPACKED_UP_PIXELS: usize = 16 * 16;

impl UpShape {
    /// Whether the products run over the whole map at once through
    /// [`super::conv_direct::gemm_rows`] (small maps, where the CPU has it) instead of by
    /// chunks of rows through the general GEMM. On the deep levels' 8-20 px maps the general
    /// GEMM packed the whole weight matrix (up to 512 KB) for each chunk of 2-4 rows, and the
    /// weight gradient summed one partial matrix per chunk.
    fn unpacked(&self) -> bool {
        self.h * self.w <= UNPACKED_UP_PIXELS && unpacked_products()
    }

    /// Input rows per parallel chunk.
    fn chunks(&self) -> Vec<(usize, usize)> {
        // At most 8192 input pixels, and at least 2 chunks per thread when there are rows
        // enough: the scatter and gather around the GEMM run per chunk (one chunk of the
        // deepest level ran them on one thread).
        let want = 2 * rayon::current_num_threads();
        let rows = (8192 / self.w.max(1)).min(self.h.div_ceil(want)).max(1);
        (0..self.h)
            .step_by(rows)
            .map(|i0| (i0, (i0 + rows).min(self.h)))
            .collect()
    }
}

// Every output pixel (2i + a, 2j + b) of an up-convolution takes the input pixel (i, j) through
// the weights of tap (a, b): with r = 4 Cout rows `co * 4 + a * 2 + b`, the taps of a chunk of
// input pixels form one matrix Z (r x n) = Wt (r x Cin) . X (Cin x n), and the weight buffer
// read with strides (1, r) is exactly Wt. The kernels below are that GEMM plus a scatter
// (forward) or a gather (backward) between Z and the interleaved output.

/// Gathers the output gradient of input rows `i0..i1` into `dz` (`4 Cout x n`, see above).
/// `row[2 j] = even[j] + bias`, `row[2 j + 1] = odd[j] + bias`.
#[inline(always)]
fn interleave(even: &[f32], odd: &[f32], bias: f32, row: &mut [f32]) {
    let (pairs, _) = row.as_chunks_mut::<2>();
    for ((pair, &e), &o) in pairs.iter_mut().zip(even).zip(odd) {
        *pair = [e + bias, o + bias];
    }
}

wide!(interleave_wide = interleave(even: &[f32], odd: &[f32], bias: f32, row: &mut [f32]));

fn up_gather(dy: &[f32], s: &UpShape, (i0, i1): (usize, usize), dz: &mut [f32]) {
    let (w2, plane) = (2 * s.w, 4 * s.h * s.w);
    let n = (i1 - i0) * s.w;
    for co in 0..s.cout {
        for a in 0..2 {
            // Rows (co, a, b = 0) and (co, a, b = 1) of dz: one pass over each output row
            // splits its even and odd columns.
            let (even, odd) = dz[(co * 4 + 2 * a) * n..(co * 4 + 2 * a + 2) * n].split_at_mut(n);
            for ii in 0..i1 - i0 {
                let at = co * plane + (2 * (i0 + ii) + a) * w2;
                let src = &dy[at..at + w2];
                let (e, o) = (
                    &mut even[ii * s.w..(ii + 1) * s.w],
                    &mut odd[ii * s.w..(ii + 1) * s.w],
                );
                for ((e, o), pair) in e.iter_mut().zip(o.iter_mut()).zip(src.chunks_exact(2)) {
                    *e = pair[0];
                    *o = pair[1];
                }
            }
        }
    }
}

/// `dZ^T` (`n x 4 Cout`, pixel-major) of the whole map: `dzt[p][co * 4 + a * 2 + b]` is the
/// output gradient at `(co, 2 i + a, 2 j + b)` for input pixel `p = i W + j`.
fn up_gather_transposed(dy: &[f32], s: &UpShape, dzt: &mut [f32]) {
    let (w2, plane, r) = (2 * s.w, 4 * s.h * s.w, 4 * s.cout);
    // By input rows in parallel.
    dzt.par_chunks_mut(s.w * r)
        .enumerate()
        .with_min_len(planes_per_task(s.w * r))
        .for_each(|(i, rows)| {
            for (j, row) in rows.chunks_exact_mut(r).enumerate() {
                for (co, taps) in row.as_chunks_mut::<4>().0.iter_mut().enumerate() {
                    let at = co * plane + 2 * i * w2 + 2 * j;
                    *taps = [dy[at], dy[at + 1], dy[at + w2], dy[at + w2 + 1]];
                }
            }
        });
}

/// [`super::conv_direct::gemm_rows`] (only called where [`unpacked_products`] holds).
fn gemm_rows(
    mnk: (usize, usize, usize),
    a: &[f32],
    a_s: (usize, usize),
    b: &[f32],
    b_rs: usize,
    c: &mut [f32],
    c_rs: usize,
) {
    #[cfg(target_arch = "x86_64")]
    super::conv_direct::gemm_rows(mnk, a, a_s, b, b_rs, c, c_rs);
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "unpacked_products is false without the direct kernels: {mnk:?} {a_s:?} {b_rs} {c_rs} {} {} {}",
        a.len(),
        b.len(),
        c.len()
    );
}

/// Forward pass of the up-convolution for one image: `x` `Cin x H x W`, `weight`
/// `Cin x Cout x 2 x 2`, `bias` `Cout`, into `y` (`Cout x 2H x 2W` values, all overwritten).
pub fn up2x2_forward_into(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: &UpShape,
    y: &mut [f32],
) {
    let (p, r) = (s.h * s.w, 4 * s.cout);
    assert_eq!(x.len(), s.cin * p, "up2x2: input size");
    assert_eq!(weight.len(), s.cin * r, "up2x2: weight size");
    let plane = 4 * p;
    assert_eq!(y.len(), s.cout * plane, "up2x2: output size");
    if s.unpacked() {
        with_scratch(r * p, |z| {
            gemm_rows((r, p, s.cin), weight, (1, r), x, p, z, p);
            // Output rows 2 i + a of channel co interleave rows (co, a, 0) and (co, a, 1).
            let w2 = 2 * s.w;
            y.par_chunks_mut(plane)
                .enumerate()
                .with_min_len(planes_per_task(plane))
                .for_each(|(co, out)| {
                    let b0 = bias.map_or(0.0, |b| b[co]);
                    for (r2, row) in out.chunks_exact_mut(w2).enumerate() {
                        let at = |b: usize| (co * 4 + 2 * (r2 % 2) + b) * p + (r2 / 2) * s.w;
                        let (even, odd) = (&z[at(0)..at(0) + s.w], &z[at(1)..at(1) + s.w]);
                        interleave_wide(even, odd, b0, row);
                    }
                });
        });
        return;
    }
    let shared = BandOutput {
        ptr: y.as_mut_ptr(),
        len: y.len(),
    };
    let chunks = s.chunks();
    let par = gemm_threads(chunks.len());
    chunks.into_par_iter().for_each(|(i0, i1)| {
        let n = (i1 - i0) * s.w;
        with_scratch(r * n, |z| {
            up_scatter_chunk(x, weight, bias, s, (i0, i1), par, &shared, z)
        });
    });
}

/// One chunk of input rows `i0..i1` of [`up2x2_forward_into`]: `z = Wt . X` into the scratch
/// buffer `z`, then each output row from two rows of `z` plus the bias.
#[allow(clippy::too_many_arguments)]
fn up_scatter_chunk(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: &UpShape,
    (i0, i1): (usize, usize),
    par: gemm::Parallelism,
    shared: &BandOutput,
    z: &mut [f32],
) {
    let (p, r, w2, n) = (s.h * s.w, 4 * s.cout, 2 * s.w, (i1 - i0) * s.w);
    let plane = 4 * p;
    sgemm(
        r,
        n,
        s.cin,
        z,
        (n, 1),
        false,
        weight,
        (1, r),
        &x[i0 * s.w..],
        (p, 1),
        par,
    );
    // SAFETY: chunks cover disjoint input rows, hence disjoint output rows.
    let mut out = unsafe {
        BandOutput::segments(
            shared.base().0,
            shared.base().1,
            s.cout,
            plane,
            2 * i0 * w2,
            2 * (i1 - i0) * w2,
        )
    };
    for (co, seg) in out.iter_mut().enumerate() {
        let b0 = bias.map_or(0.0, |b| b[co]);
        for (r2, row) in seg.chunks_exact_mut(w2).enumerate() {
            // Output row 2 ii + a interleaves the rows (co, a, b = 0) and (co, a, 1) of
            // z: written once, in order (four strided passes before).
            let (ii, a) = (r2 / 2, r2 % 2);
            let at = |b: usize| (co * 4 + 2 * a + b) * n + ii * s.w;
            let (even, odd) = (&z[at(0)..at(0) + s.w], &z[at(1)..at(1) + s.w]);
            interleave_wide(even, odd, b0, row);
        }
    }
}

/// Input gradient of the up-convolution for one image, `dX (Cin x n) = W (Cin x 4 Cout) .
/// dZ`, into `dx` (`Cin x H x W` values, all overwritten).
pub fn up2x2_input_grad_into(dy: &[f32], weight: &[f32], s: &UpShape, dx: &mut [f32]) {
    let (p, r) = (s.h * s.w, 4 * s.cout);
    assert_eq!(dy.len(), s.cout * 4 * p, "up2x2: gradient size");
    assert_eq!(dx.len(), s.cin * p, "up2x2: output size");
    let shared = BandOutput {
        ptr: dx.as_mut_ptr(),
        len: dx.len(),
    };
    if s.unpacked() {
        with_scratch(r * p, |dz| {
            // The gather by output channels in parallel (dz's rows 4 co .. 4 co + 4).
            let one = UpShape { cout: 1, ..*s };
            dz.par_chunks_mut(4 * p)
                .zip(dy.par_chunks(4 * p))
                .with_min_len(planes_per_task(4 * p))
                .for_each(|(dzc, dyc)| up_gather(dyc, &one, (0, s.h), dzc));
            gemm_rows((s.cin, p, r), weight, (r, 1), dz, p, dx, p);
        });
        return;
    }
    let chunks = s.chunks();
    let par = gemm_threads(chunks.len());
    chunks.into_par_iter().for_each(|(i0, i1)| {
        let n = (i1 - i0) * s.w;
        let last = (s.cin - 1) * p + i0 * s.w + n;
        assert!(last <= shared.base().1, "up2x2: chunk out of bounds");
        with_scratch(r * n, |dz| {
            up_gather(dy, s, (i0, i1), dz);
            // SAFETY: the chunk's columns i0 * W .. + n of every channel are inside `dx`
            // (checked) and disjoint from the other chunks'.
            unsafe {
                sgemm_raw(
                    s.cin,
                    n,
                    r,
                    shared.base().0.add(i0 * s.w),
                    (p, 1),
                    false,
                    weight,
                    (r, 1),
                    dz,
                    (n, 1),
                    par,
                );
            }
        });
    });
}

/// Weight gradient for one image: `dW (Cin x 4 Cout) = X . dZ^T`; returns `Cin x Cout x 2 x 2`.
pub fn up2x2_weight_grad(x: &[f32], dy: &[f32], s: &UpShape) -> Vec<f32> {
    let (p, r) = (s.h * s.w, 4 * s.cout);
    if s.unpacked() {
        // dW = X . dZ^T with dZ^T gathered pixel-major: rows of B are contiguous.
        let mut dw = vec![0.0f32; s.cin * r];
        with_scratch(p * r, |dzt| {
            up_gather_transposed(dy, s, dzt);
            gemm_rows((s.cin, r, p), x, (p, 1), dzt, r, &mut dw, r);
        });
        return dw;
    }
    let chunks = s.chunks();
    let par = gemm_threads(chunks.len());
    let partials: Vec<Vec<f32>> = chunks
        .into_par_iter()
        .map(|(i0, i1)| {
            let n = (i1 - i0) * s.w;
            let mut dw = vec![0.0f32; s.cin * r];
            with_scratch(r * n, |dz| {
                up_gather(dy, s, (i0, i1), dz);
                sgemm(
                    s.cin,
                    r,
                    n,
                    &mut dw,
                    (r, 1),
                    false,
                    &x[i0 * s.w..],
                    (p, 1),
                    dz,
                    (1, n),
                    par,
                );
            });
            dw
        })
        .collect();
    let mut dw = vec![0.0f32; s.cin * r];
    for part in partials {
        for (a, b) in dw.iter_mut().zip(part) {
            *a += b;
        }
    }
    dw
}

/// 2x2 max pooling with stride 2 of `planes` maps of `h x w` (NCHW with `N C` planes): the
/// output is `planes x h/2 x w/2`; an odd last row or column is dropped, as burn's `max_pool2d`
/// does.
pub fn pool2x2_forward(x: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; planes * (h / 2) * (w / 2)];
    pool2x2_forward_into(x, planes, h, w, &mut y);
    y
}

/// The centre `h x w` window of `sh x sw` planes, the U-Net's crop of a skip connection: the
/// window starts at row `(sh - h) / 2`, column `(sw - w) / 2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crop {
    /// Height and width of the full planes.
    pub full: (usize, usize),
    /// Height and width of the window.
    pub window: (usize, usize),
}

impl Crop {
    /// Row and column of the window's first pixel.
    pub fn origin(&self) -> (usize, usize) {
        (
            (self.full.0 - self.window.0) / 2,
            (self.full.1 - self.window.1) / 2,
        )
    }
}

/// Planes per parallel task for element-wise kernels over planes of `plane` values: about
/// 16 K values each (a task per plane of a deep level's 100-value maps cost more in
/// scheduling than in work; the ReLU gradient ran slower on two threads than on one).
fn planes_per_task(plane: usize) -> usize {
    (16 * 1024 / plane.max(1)).max(1)
}

/// Copies the window of each full plane of `src` into the planes of `dst` (as many; every
/// value written, so `dst` may start uninitialised), in parallel over planes.
pub fn crop_into(src: &[f32], c: &Crop, dst: &mut [MaybeUninit<f32>]) {
    let ((sh, sw), (h, w), (oy, ox)) = (c.full, c.window, c.origin());
    if h * w == 0 {
        return;
    }
    assert!(
        dst.len().is_multiple_of(h * w) && dst.len() / (h * w) * sh * sw == src.len(),
        "crop_into: planes"
    );
    dst.par_chunks_mut(h * w)
        .with_min_len(planes_per_task(h * w))
        .zip(src.par_chunks(sh * sw))
        .for_each(|(d, s)| {
            for (row, out) in d.chunks_exact_mut(w).enumerate() {
                let at = (oy + row) * sw + ox;
                write_copy(out, &s[at..at + w]);
            }
        });
}

/// `src` into `dst` (equal lengths), which may start uninitialised.
pub(crate) fn write_copy(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "write_copy: lengths");
    for (d, &v) in dst.iter_mut().zip(src) {
        d.write(v);
    }
}

/// The reverse of [`crop_into`]: each window plane of `src` into the window of a full plane of
/// `dst`, zeros around it (all of `dst` written: it may start uninitialised). The gradient of
/// the crop.
pub fn uncrop_into(src: &[f32], c: &Crop, dst: &mut [MaybeUninit<f32>]) {
    let ((sh, sw), (h, w), (oy, ox)) = (c.full, c.window, c.origin());
    let zero = MaybeUninit::new(0.0f32);
    dst.par_chunks_mut(sh * sw)
        .enumerate()
        .with_min_len(planes_per_task(sh * sw))
        .for_each(|(p, d)| {
            for (y, out) in d.chunks_exact_mut(sw).enumerate() {
                if (oy..oy + h).contains(&y) {
                    let at = (p * h + y - oy) * w;
                    out[..ox].fill(zero);
                    write_copy(&mut out[ox..ox + w], &src[at..at + w]);
                    out[ox + w..].fill(zero);
                } else {
                    out.fill(zero);
                }
            }
        });
}

/// Copies `src` into `dst` (same length; `dst` may start uninitialised) in parallel chunks.
pub fn copy_into(src: &[f32], dst: &mut [MaybeUninit<f32>]) {
    const CHUNK: usize = 1 << 16;
    assert_eq!(dst.len(), src.len(), "copy_into: lengths");
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| write_copy(d, s));
}

/// [`pool2x2_forward`] into `y` (all overwritten).
pub fn pool2x2_forward_into(x: &[f32], planes: usize, h: usize, w: usize, y: &mut [f32]) {
    let (ho, wo) = (h / 2, w / 2);
    assert_eq!(x.len(), planes * h * w, "pool2x2: input size");
    assert_eq!(y.len(), planes * ho * wo, "pool2x2: output size");
    if ho == 0 || wo == 0 {
        return;
    }
    y.par_chunks_mut(ho * wo)
        .with_min_len(planes_per_task(ho * wo))
        .zip(x.par_chunks(h * w))
        .for_each(|(yp, xp)| pool2x2_forward_plane_wide(xp, (h, w), yp));
}

/// [`pool2x2_forward_into`] of one plane.
#[inline(always)]
fn pool2x2_forward_plane(xp: &[f32], (_, w): (usize, usize), yp: &mut [f32]) {
    let wo = w / 2;
    for (i, yrow) in yp.chunks_exact_mut(wo).enumerate() {
        let (r0, _) = xp[2 * i * w..2 * i * w + 2 * wo].as_chunks::<2>();
        let (r1, _) = xp[(2 * i + 1) * w..(2 * i + 1) * w + 2 * wo].as_chunks::<2>();
        for ((o, a), b) in yrow.iter_mut().zip(r0).zip(r1) {
            *o = a[0].max(a[1]).max(b[0].max(b[1]));
        }
    }
}

/// Input gradient of [`pool2x2_forward`] into `dx` (all overwritten): each output's gradient
/// goes to the first maximum of its window (in the order top-left, top-right, bottom-left,
/// bottom-right, as burn's indices pick it); every other input, and a dropped odd row or
/// column, gets 0.
pub fn pool2x2_backward_into(
    x: &[f32],
    dy: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    dx: &mut [f32],
) {
    pool2x2_backward_with(x, dy, (planes, h, w), false, dx);
}

/// [`pool2x2_backward_into`] added to the values of `dx` (another gradient of the pooling's
/// input: the U-Net's skip connection), in the same pass.
pub fn pool2x2_backward_add_into(
    x: &[f32],
    dy: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    dx: &mut [f32],
) {
    pool2x2_backward_with(x, dy, (planes, h, w), true, dx);
}

/// [`pool2x2_backward_into`], or with `add` [`pool2x2_backward_add_into`].
fn pool2x2_backward_with(
    x: &[f32],
    dy: &[f32],
    (planes, h, w): (usize, usize, usize),
    add: bool,
    dx: &mut [f32],
) {
    let (ho, wo) = (h / 2, w / 2);
    assert_eq!(x.len(), planes * h * w, "pool2x2: input size");
    assert_eq!(dy.len(), planes * ho * wo, "pool2x2: gradient size");
    assert_eq!(dx.len(), planes * h * w, "pool2x2: output size");
    if ho == 0 || wo == 0 {
        if !add {
            dx.fill(0.0);
        }
        return;
    }
    dx.par_chunks_mut(h * w)
        .with_min_len(planes_per_task(h * w))
        .zip(x.par_chunks(h * w))
        .zip(dy.par_chunks(ho * wo))
        .for_each(|((dxp, xp), gp)| {
            if add {
                pool2x2_backward_add_plane_wide(xp, gp, (h, w), dxp);
            } else {
                pool2x2_backward_plane_wide(xp, gp, (h, w), dxp);
            }
        });
}

/// [`pool2x2_backward_into`] of one plane.
#[inline(always)]
fn pool2x2_backward_plane(xp: &[f32], gp: &[f32], hw: (usize, usize), dxp: &mut [f32]) {
    pool2x2_backward_plane_as::<false>(xp, gp, hw, dxp);
}

/// [`pool2x2_backward_add_into`] of one plane.
#[inline(always)]
fn pool2x2_backward_add_plane(xp: &[f32], gp: &[f32], hw: (usize, usize), dxp: &mut [f32]) {
    pool2x2_backward_plane_as::<true>(xp, gp, hw, dxp);
}

/// The gradient of one plane's pooling, written (`ADD` false) or added (true) to `dxp`.
#[inline(always)]
fn pool2x2_backward_plane_as<const ADD: bool>(
    xp: &[f32],
    gp: &[f32],
    (h, w): (usize, usize),
    dxp: &mut [f32],
) {
    let (ho, wo) = (h / 2, w / 2);
    // A dropped odd last row.
    if !ADD {
        dxp[2 * ho * w..].fill(0.0);
    }
    for (i, grow) in gp.chunks_exact(wo).enumerate() {
        let (d0, d1) = dxp[2 * i * w..(2 * i + 2) * w].split_at_mut(w);
        let r0 = &xp[2 * i * w..2 * i * w + 2 * wo];
        let r1 = &xp[(2 * i + 1) * w..(2 * i + 1) * w + 2 * wo];
        let (d0p, _) = d0.as_chunks_mut::<2>();
        let (d1p, _) = d1.as_chunks_mut::<2>();
        let (r0p, _) = r0.as_chunks::<2>();
        let (r1p, _) = r1.as_chunks::<2>();
        for ((((&g, top), bottom), o0), o1) in grow.iter().zip(r0p).zip(r1p).zip(d0p).zip(d1p) {
            let ([a, b], [c, d]) = (*top, *bottom);
            let m = a.max(b).max(c.max(d));
            // The first maximum, without branches (the loop vectorises).
            let sa = a == m;
            let sb = !sa && b == m;
            let sc = !sa && !sb && c == m;
            let sd = !sa && !sb && !sc;
            let pick = |s: bool| f32::from_bits(g.to_bits() & u32::from(s).wrapping_neg());
            if ADD {
                *o0 = [o0[0] + pick(sa), o0[1] + pick(sb)];
                *o1 = [o1[0] + pick(sc), o1[1] + pick(sd)];
            } else {
                *o0 = [pick(sa), pick(sb)];
                *o1 = [pick(sc), pick(sd)];
            }
        }
        // A dropped odd last column.
        if !ADD {
            d0[2 * wo..].fill(0.0);
            d1[2 * wo..].fill(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filled_in_parallel_writes_every_element() {
        // Below, at and above the parallel threshold, and not a multiple of the chunk.
        for len in [0, 7, 4 << 14, (4 << 14) + 12_345] {
            let v = filled_in_parallel(len, 2.5f32);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x == 2.5), "length {len}");
        }
    }

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
        // One band and the tiny-map weight gradient; many bands and the banded weight
        // gradient (more than SMALL_PLANE pixels); each through GEMM and the direct kernels.
        for s in [
            ConvShape {
                cin: 3,
                cout: 5,
                h: 11,
                w: 9,
            },
            ConvShape {
                cin: 6,
                cout: 3,
                h: 90,
                w: 60,
            },
            // The direct kernels' tails: 11 output channels (blocks of 8 and of 3), rows of
            // 53 outputs (48 + 5) and of 1, a 1 x 1 output whose input gradient is all border.
            ConvShape {
                cin: 5,
                cout: 11,
                h: 7,
                w: 55,
            },
            ConvShape {
                cin: 2,
                cout: 9,
                h: 20,
                w: 3,
            },
            ConvShape {
                cin: 4,
                cout: 2,
                h: 3,
                w: 3,
            },
            // The unpacked products of both gradients (at most UNPACKED_PLANE outputs) with
            // partial register blocks: 261 unfolded rows (not a multiple of 6 or 64).
            ConvShape {
                cin: 29,
                cout: 13,
                h: 11,
                w: 12,
            },
            // The GEMM weight gradient of a map between TINY_PLANE and SMALL_PLANE pixels.
            ConvShape {
                cin: 3,
                cout: 4,
                h: 40,
                w: 40,
            },
            // Wide rows take the direct forward kernel with more than 64 channels; a
            // 31 x 31 output map takes the direct weight gradient with 70.
            ConvShape {
                cin: 70,
                cout: 9,
                h: 4,
                w: 131,
            },
            ConvShape {
                cin: 70,
                cout: 5,
                h: 33,
                w: 33,
            },
            // The AVX2 weight gradient in several chunks of pixels (more than 4096 flat
            // outputs), with an odd number of output channels and 45 (input channel, tap)
            // pairs (not a multiple of 6).
            ConvShape {
                cin: 5,
                cout: 7,
                h: 90,
                w: 70,
            },
            // With AVX2 only, the input gradient of a small map with at least 128 output
            // channels as GEMM and col2im.
            ConvShape {
                cin: 3,
                cout: 130,
                h: 8,
                w: 9,
            },
            // The weight gradient by vectors of output channels with a block of 32 channels and
            // one of 5 (3 lines of 16 a pixel), over 65 pixels (a tile of one pixel at the
            // end of the transposition) in rows of 13.
            ConvShape {
                cin: 3,
                cout: 37,
                h: 7,
                w: 15,
            },
            // ... by parts of a map of more than LOCAL_PLANE pixels (130 x 129), each part
            // transposing its own bands;
            ConvShape {
                cin: 2,
                cout: 35,
                h: 132,
                w: 131,
            },
            // ... and in 3 bands of pixels (532, bands starting mid-row).
            ConvShape {
                cin: 2,
                cout: 33,
                h: 30,
                w: 21,
            },
            // The AVX2 weight gradient with one full block of 16 output channels and one of a
            // single channel (its transposition zero-fills the other 15).
            ConvShape {
                cin: 2,
                cout: 17,
                h: 12,
                w: 21,
            },
        ] {
            check_against_definition(&s);
        }
    }

    fn check_against_definition(s: &ConvShape) {
        // Both kernels: GEMM, and whichever is fastest here (the direct AVX-512 kernels for
        // these small channel counts on a CPU that has them).
        for path in [
            Path::Gemm,
            Path::Rows,
            Path::Flat,
            Path::Avx2,
            Path::Channels,
            Path::Winograd,
            Path::Fastest,
        ] {
            check_path(s, path);
        }
    }

    fn check_path(s: &ConvShape, path: Path) {
        let s = *s;
        let x = pseudo(s.cin * s.h * s.w, 1);
        let wt = pseudo(s.cout * s.cin * 9, 2);
        let b = pseudo(s.cout, 3);
        let run = |relu: bool| {
            let mut y = vec![f32::NAN; s.cout * s.ho() * s.wo()];
            // SAFETY: the kernels write floats.
            forward_with(&x, &wt, Some(&b), &s, relu, path, unsafe {
                as_uninit(&mut y)
            });
            y
        };
        let y = run(false);
        let r = reference_forward(&x, &wt, &b, &s);
        assert_eq!(y.len(), r.len());
        for (a, e) in y.iter().zip(&r) {
            assert!((a - e).abs() < 1e-4, "{path:?} {s:?}: {a} vs {e}");
        }
        // The fused ReLU.
        let y = run(true);
        for (a, e) in y.iter().zip(&r) {
            assert!((a - e.max(0.0)).abs() < 1e-4);
        }
        // Gradients of L = sum(dy * y) by definition.
        let dy = pseudo(s.cout * s.ho() * s.wo(), 4);
        let dw = weight_grad_with(&x, &dy, &s, path);
        // Outputs start as NaN: every value must be written.
        let mut dx = vec![f32::NAN; x.len()];
        // SAFETY: the kernels write floats.
        input_grad_with(&dy, &wt, &s, path, unsafe { as_uninit(&mut dx) });
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
        assert_eq!((dw.len(), dx.len()), (dw_ref.len(), dx_ref.len()));
        for (a, e) in dw.iter().zip(&dw_ref) {
            assert!(
                (f64::from(*a) - e).abs() < 1e-3,
                "{path:?} {s:?}: dw {a} vs {e}"
            );
        }
        for (a, e) in dx.iter().zip(&dx_ref) {
            assert!(
                (f64::from(*a) - e).abs() < 1e-4,
                "{path:?} {s:?}: dx {a} vs {e}"
            );
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
        assert!(Padded { s, pad: 0 }.bands().len() > 1);
        let y = conv3x3_forward(&x, &wt, None, &s, false);
        let r = reference_forward(&x, &wt, &b, &s);
        for (a, e) in y.iter().zip(&r) {
            assert!((a - e).abs() < 1e-5);
        }
    }

    #[test]
    fn relu_gradient_and_its_sums_per_plane() {
        // Planes of 3 * 16 + 5 values (vector part and remainder); outputs 0, negative,
        // positive and NaN.
        let (planes, plane) = (7, 53);
        let n = planes * plane;
        let out: Vec<f32> = (0..n)
            .map(|i| match i % 4 {
                0 => 0.0,
                1 => -1.5,
                2 => 2.0,
                _ => f32::NAN,
            })
            .collect();
        let grad = pseudo(n, 7);
        let expected: Vec<f32> = out
            .iter()
            .zip(&grad)
            .map(|(&o, &g)| if o > 0.0 { g } else { 0.0 })
            .collect();
        assert_eq!(relu_grad(&out, &grad), expected);
        let mut in_place = grad.clone();
        let sums = relu_bias_grad_in_place(&out, &mut in_place, plane);
        assert_eq!(in_place, expected);
        assert_eq!(sums.len(), planes);
        for (p, s) in sums.iter().enumerate() {
            let e: f64 = expected[p * plane..(p + 1) * plane]
                .iter()
                .map(|&v| f64::from(v))
                .sum();
            assert!((f64::from(*s) - e).abs() < 1e-5, "plane {p}: {s} vs {e}");
        }
    }

    #[test]
    fn pooling_by_hand() {
        // One 3 x 5 plane: two windows (the last row and column are dropped); the left window
        // has a tie between its top-right and bottom-left values.
        let x = [
            1.0, 4.0, -2.0, -1.0, 9.0, //
            4.0, 0.0, -3.0, -5.0, 9.0, //
            8.0, 8.0, 8.0, 8.0, 9.0,
        ];
        assert_eq!(pool2x2_forward(&x, 1, 3, 5), vec![4.0, -1.0]);
        // Every input gets its gradient written, also the dropped row and column.
        let mut dx = vec![f32::NAN; 15];
        pool2x2_backward_into(&x, &[10.0, 20.0], 1, 3, 5, &mut dx);
        let expected = [
            0.0, 10.0, 0.0, 20.0, 0.0, //
            0.0, 0.0, 0.0, 0.0, 0.0, //
            0.0, 0.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(dx, expected);
        // Added to another gradient: the dropped row and column keep theirs.
        let mut acc: Vec<f32> = (0..15).map(|i| i as f32).collect();
        pool2x2_backward_add_into(&x, &[10.0, 20.0], 1, 3, 5, &mut acc);
        let added: Vec<f32> = expected
            .iter()
            .enumerate()
            .map(|(i, e)| e + i as f32)
            .collect();
        assert_eq!(acc, added);
        // Two planes are pooled independently; a map smaller than a window gives nothing.
        let two = pool2x2_forward(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], 2, 2, 2);
        assert_eq!(two, vec![4.0, 8.0]);
        assert!(pool2x2_forward(&[1.0, 2.0], 2, 1, 1).is_empty());
    }

    /// Direct definition of the up-convolution.
    fn reference_up(x: &[f32], wt: &[f32], b: &[f32], s: &UpShape) -> Vec<f32> {
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

    #[test]
    fn up_convolution_and_its_gradients_match_the_definition() {
        // Odd sizes and more rows than one chunk (8192 / 7 = 1170 rows per chunk); on small
        // maps the unpacked products, with partial register blocks (68 rows of taps, 13 input
        // channels: not multiples of 6; 99 pixels and 68 taps: not multiples of 64).
        for s in [
            UpShape {
                cin: 3,
                cout: 2,
                h: 5,
                w: 7,
            },
            UpShape {
                cin: 13,
                cout: 17,
                h: 9,
                w: 11,
            },
            UpShape {
                cin: 4,
                cout: 3,
                h: 1300,
                w: 7,
            },
        ] {
            let mut r = crate::preprocess::Rng::new(5);
            let mut v = |n: usize| {
                (0..n)
                    .map(|_| r.uniform() as f32 - 0.5)
                    .collect::<Vec<f32>>()
            };
            let (x, wt, b) = (v(s.cin * s.h * s.w), v(s.cin * s.cout * 4), v(s.cout));
            // Into buffers of NaN: every value must be written.
            let mut y = vec![f32::NAN; s.cout * 4 * s.h * s.w];
            up2x2_forward_into(&x, &wt, Some(&b), &s, &mut y);
            let e = reference_up(&x, &wt, &b, &s);
            let max = y
                .iter()
                .zip(&e)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(max < 1e-4, "forward {max}");
            // Gradients of sum(y * g) by their definitions: dX = sum over taps, dW = sum over
            // pixels.
            let g = v(y.len());
            let (h2, w2) = (2 * s.h, 2 * s.w);
            let mut dx = vec![f32::NAN; x.len()];
            up2x2_input_grad_into(&g, &wt, &s, &mut dx);
            let dw = up2x2_weight_grad(&x, &g, &s);
            let mut edx = vec![0.0f64; x.len()];
            let mut edw = vec![0.0f64; wt.len()];
            for co in 0..s.cout {
                for oy in 0..h2 {
                    for ox in 0..w2 {
                        let (i, a, j, bb) = (oy / 2, oy % 2, ox / 2, ox % 2);
                        let gv = f64::from(g[(co * h2 + oy) * w2 + ox]);
                        for ci in 0..s.cin {
                            let wi = ((ci * s.cout + co) * 2 + a) * 2 + bb;
                            let xi = (ci * s.h + i) * s.w + j;
                            edx[xi] += gv * f64::from(wt[wi]);
                            edw[wi] += gv * f64::from(x[xi]);
                        }
                    }
                }
            }
            let close = |a: &[f32], e: &[f64], tol: f64, what: &str| {
                let max = a
                    .iter()
                    .zip(e)
                    .map(|(p, q)| (f64::from(*p) - q).abs())
                    .fold(0.0, f64::max);
                assert!(max < tol, "{what}: {max}");
            };
            close(&dx, &edx, 1e-4, "input gradient");
            close(&dw, &edw, 1e-2, "weight gradient");
        }
    }
}
