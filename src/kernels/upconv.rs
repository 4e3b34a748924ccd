//! The 2x2 up-convolution (transposed convolution, stride 2) and its two gradients: one GEMM
//! per image whose result is interleaved into the doubled map.

use rayon::prelude::*;

use super::common::{BandOutput, planes_per_task, with_scratch};
use super::dispatch::wide;
use super::gemm::{gemm_rows, gemm_threads, sgemm, sgemm_raw, unpacked_products};

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

impl UpShape {
    /// Whether the products run over the whole map at once through
    /// [`super::avx512_gemm::gemm_rows`] (small maps, where the CPU has it) instead of by
    /// chunks of rows through the general GEMM. On the deep levels' 8-20 px maps the general
    /// GEMM packed the whole weight matrix (up to 512 KB) for each chunk of 2-4 rows, and the
    /// weight gradient summed one partial matrix per chunk.
    pub(crate) fn unpacked(&self) -> bool {
        self.h * self.w <= UNPACKED_UP_PIXELS && unpacked_products()
    }

    /// Input rows per parallel chunk.
    pub(crate) fn chunks(&self) -> Vec<(usize, usize)> {
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

/// Input maps up to this many pixels run the up-convolution's products unpacked, in one
/// piece ([`UpShape::unpacked`]). Measured in lite 252 px training steps: on 8 and 12 px
/// maps (128-256 channels) all three products 15-45 % faster; on 20 and 36 px the input and
/// weight gradients 20-50 % slower (few input channels: few blocks of rows), the forward
/// pass even.
const UNPACKED_UP_PIXELS: usize = 16 * 16;

/// `row[2 j] = even[j] + bias`, `row[2 j + 1] = odd[j] + bias`.
#[inline(always)]
fn interleave(even: &[f32], odd: &[f32], bias: f32, row: &mut [f32]) {
    let (pairs, _) = row.as_chunks_mut::<2>();
    for ((pair, &e), &o) in pairs.iter_mut().zip(even).zip(odd) {
        *pair = [e + bias, o + bias];
    }
}

wide!(interleave_wide = interleave(even: &[f32], odd: &[f32], bias: f32, row: &mut [f32]));

/// Gathers the output gradient of input rows `i0..i1` into `dz` (`4 Cout x n`, see above).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference::reference_up;

    #[test]
    pub(crate) fn up_convolution_and_its_gradients_match_the_definition() {
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
