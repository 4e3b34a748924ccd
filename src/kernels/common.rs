//! What the kernels share: the shape of a 3x3 convolution ([`ConvShape`]) and of its padded
//! form, the weights as given or flipped ([`Taps`]), buffers written in parallel, scratch space,
//! zero-padded copies of maps ([`spread_rows`]) and the output pointer that parallel tasks
//! share ([`SharedOut`]).

use std::mem::MaybeUninit;

use rayon::prelude::*;

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
}

/// A shape together with implicit zero padding on every side.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Padded {
    pub(crate) s: ConvShape,
    pub(crate) pad: usize,
}

impl Padded {
    pub(crate) fn ho(&self) -> usize {
        self.s.h + 2 * self.pad - 2
    }
    pub(crate) fn wo(&self) -> usize {
        self.s.w + 2 * self.pad - 2
    }
    pub(crate) fn k(&self) -> usize {
        self.s.cin * 9
    }
    pub(crate) fn band_rows(&self) -> usize {
        let per_row = self.k() * self.wo();
        let rows = (BAND_FLOATS / per_row.max(1)).max(1);
        // At least 4 bands per thread when the image allows it, for load balance; but no
        // band under MIN_BAND_PIXELS: a GEMM over a few pixels is all packing (the deep levels
        // of a 252 px tile ran at 100-180 GF/s in bands of one 8 px row).
        let want = 4 * rayon::current_num_threads();
        let least = MIN_BAND_PIXELS.div_ceil(self.wo().max(1));
        rows.min(self.ho().div_ceil(want).max(least).max(1))
    }
    pub(crate) fn bands(&self) -> Vec<(usize, usize)> {
        let r = self.band_rows();
        (0..self.ho())
            .step_by(r)
            .map(|oy0| (oy0, r.min(self.ho() - oy0)))
            .collect()
    }
}

/// `len` zeros, written in parallel chunks (a large buffer zeroed on one thread held the
/// other up).
pub(crate) fn zeros(len: usize) -> Vec<f32> {
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
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
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

/// The output buffer shared by the bands of one convolution. Each band writes only its own
/// rows of every output channel, so the writes of different bands never overlap.
pub(crate) struct BandOutput {
    pub(crate) ptr: *mut f32,
    pub(crate) len: usize,
}

// SAFETY: bands write disjoint regions (see `segments`), and the buffer outlives the
// parallel loop that uses it.
unsafe impl Sync for BandOutput {}

impl BandOutput {
    /// Start of the buffer (a method, so closures capture the whole `Sync` struct).
    pub(crate) fn base(&self) -> (*mut f32, usize) {
        (self.ptr, self.len)
    }

    /// The band's segment of every output channel: `cout` disjoint slices of `n` values at
    /// `co * plane + start`.
    ///
    /// # Safety
    /// No other live reference may cover these segments (bands must be disjoint).
    pub(crate) unsafe fn segments<'a>(
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
    pub(crate) fn effective(self, cout: usize) -> std::borrow::Cow<'a, [f32]> {
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

/// `src` into `dst` (equal lengths), which may start uninitialised.
pub(crate) fn write_copy(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "write_copy: lengths");
    for (d, &v) in dst.iter_mut().zip(src) {
        d.write(v);
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
        super::common::as_uninit(dst)
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
            super::common::write_copy(&mut to[start..start + cols], row);
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
/// blocks of outputs in [`super::avx2`]).
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

/// Target size of one im2col band, in floats (4 MiB).
pub(crate) const BAND_FLOATS: usize = 1 << 20;

/// Smallest band, in output pixels, unless the map is smaller.
pub(crate) const MIN_BAND_PIXELS: usize = 1024;

/// Planes per parallel task for element-wise kernels over planes of `plane` values: about
/// 16 K values each (a task per plane of a deep level's 100-value maps cost more in
/// scheduling than in work; the ReLU gradient ran slower on two threads than on one).
pub(crate) fn planes_per_task(plane: usize) -> usize {
    (16 * 1024 / plane.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn filled_in_parallel_writes_every_element() {
        // Below, at and above the parallel threshold, and not a multiple of the chunk.
        for len in [0, 7, 4 << 14, (4 << 14) + 12_345] {
            let v = filled_in_parallel(len, 2.5f32);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x == 2.5), "length {len}");
        }
    }
}
