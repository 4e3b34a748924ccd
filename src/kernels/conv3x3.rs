//! The 3x3 valid convolution (stride 1, no dilation, no groups) and its two gradients, the
//! U-Net's main cost: each entry point asks [`super::dispatch`] for a kernel and runs it.
//!
//! Layouts are NCHW, row-major.
//! - forward: `Y = W . col(X) + b`;
//! - weight gradient: `dW = sum over bands dY_band . col_band(X)^T`;
//! - input gradient: the convolution of `dY` zero-padded by 2 ("full") with the weights
//!   transposed (`Cin <-> Cout`) and flipped — the same forward kernels, which write the
//!   padding zeros themselves instead of copying `dY` into a padded buffer.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::common::planes_per_task;
use super::common::{ConvShape, Padded, Taps, as_uninit, with_scratch, zeroed, zeros};
use super::dispatch::{
    Isa, Kernel, Request, chosen, col2im_avx2, fastest_forward, fastest_weight_grad, gemm_forced,
};
use super::gemm::{
    col2im_channel, conv3x3_padded, gemm_rows, gemm_threads, im2col_band, im2col_channel,
    im2col_pixel_rows, sgemm, transpose_to_cout_k, unpacked_products,
};

/// Output maps up to this many pixels take the weight gradient in one piece.
const SMALL_PLANE: usize = 64 * 64;

/// Output maps up to this many pixels take the weight gradient as `dY . col^T` (see there).
const TINY_PLANE: usize = 32 * 32;

/// Output maps up to this many pixels (the deep levels' 8-10 px, 128-256 channels) take both
/// gradients as unpacked products ([`super::avx512_gemm::gemm_rows`]): per layer
/// (`cargo bench --bench conv_layers -- 252`) the input gradient 200-250 -> 290-320 GF/s, the
/// weight gradient 220-330 -> 235-340; on 12-26 px maps they were slower than the direct and
/// GEMM kernels.
const UNPACKED_PLANE: usize = 10 * 10;

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
    forward_with(x, weight, bias, s, relu, Request::Fastest, unsafe {
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
    forward_with(x, weight, bias, s, relu, Request::Fastest, y)
}

fn forward_with(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    relu: bool,
    request: Request,
    y: &mut [MaybeUninit<f32>],
) {
    let k = chosen(request, |isa| fastest_forward(s, 0, isa));
    run_kernel(k, x, Taps::Given(weight), bias, s, 0, relu, y)
}

/// Weight gradient for one image: `dW[co, ci, kh, kw] = sum dY[co, oy, ox] X[ci, oy+kh, ox+kw]`.
/// `dy` is `Cout x (H-2) x (W-2)`; returns `Cout x Cin x 3 x 3`.
pub fn conv3x3_weight_grad(x: &[f32], dy: &[f32], s: &ConvShape) -> Vec<f32> {
    weight_grad_with(x, dy, s, Request::Fastest)
}

fn weight_grad_with(x: &[f32], dy: &[f32], s: &ConvShape, request: Request) -> Vec<f32> {
    // Only x86-64 has the direct kernels (elsewhere `chosen` is always GEMM).
    let shape = (s.cin, s.cout, s.h, s.w);
    match chosen(request, |isa| fastest_weight_grad(s, isa)) {
        #[cfg(target_arch = "x86_64")]
        Kernel::Rows => return super::avx512_grad::weight_grad(x, dy, shape),
        #[cfg(target_arch = "x86_64")]
        Kernel::Flat => return super::avx512_grad::weight_grad_flat(x, dy, shape),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => return super::avx2::weight_grad(x, dy, shape),
        #[cfg(target_arch = "x86_64")]
        Kernel::Channels => return super::avx512_grad::weight_grad_channels(x, dy, shape),
        _ => {
            let _ = shape;
        }
    }
    let (ho, wo, k) = (s.ho(), s.wo(), s.cin * 9);
    let plane = ho * wo;
    let p = Padded { s: *s, pad: 0 };
    if request == Request::Fastest && plane <= UNPACKED_PLANE && unpacked_products() {
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
    input_grad_with(dy, weight, s, Request::Fastest, unsafe { as_uninit(dx) })
}

/// [`conv3x3_input_grad_into`] into memory that need not be initialised: every value is
/// written.
pub fn conv3x3_input_grad_uninit(
    dy: &[f32],
    weight: &[f32],
    s: &ConvShape,
    dx: &mut [MaybeUninit<f32>],
) {
    input_grad_with(dy, weight, s, Request::Fastest, dx)
}

fn input_grad_with(
    dy: &[f32],
    weight: &[f32],
    s: &ConvShape,
    request: Request,
    dx: &mut [MaybeUninit<f32>],
) {
    let plane = s.ho() * s.wo();
    // dcol (K x P) = W^T (K x Cout) . dY (Cout x P), then each tap's row of dcol added into
    // dX where it came from: exactly the multiplications of the gradient, where the
    // convolution of dY padded by 2 multiplies zeros too (10 x 10 outputs from 8 x 8: 1.56x
    // the work). With AVX-512 as unpacked products on the smallest maps; with AVX2 only, by
    // the GEMM (`W^T` read in place by strides) where [`col2im_avx2`] says.
    let unpacked = request == Request::Fastest && plane <= UNPACKED_PLANE && unpacked_products();
    let by_gemm =
        request == Request::Fastest && Isa::here() == Isa::Avx2 && !gemm_forced() && col2im_avx2(s);
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
    let k = chosen(request, |isa| fastest_forward(&back.s, 2, isa));
    run_kernel(k, dy, Taps::Flipped(weight), None, &back.s, 2, false, dx)
}

/// Runs `kernel` for a convolution of shape `s` with padding `pad` into `y`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_kernel(
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
        Kernel::Rows => super::avx512::forward_into(x, weight, bias, shape, pad, relu, y),
        #[cfg(target_arch = "x86_64")]
        Kernel::Flat => super::avx512::forward_flat_into(x, weight, bias, shape, pad, relu, y),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => super::avx2::forward_into(x, weight, bias, shape, pad, relu, y),
        #[cfg(target_arch = "x86_64")]
        Kernel::Winograd => super::winograd::forward_into(x, weight, bias, shape, pad, relu, y),
        _ => {
            let _ = shape;
            let weight = weight.effective(s.cout);
            conv3x3_padded(x, &weight, bias, &Padded { s: *s, pad }, relu, zeroed(y))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference::{pseudo, reference_forward};

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
        for request in [
            Request::Only(Kernel::Gemm),
            Request::Only(Kernel::Rows),
            Request::Only(Kernel::Flat),
            Request::Only(Kernel::Avx2),
            Request::Only(Kernel::Channels),
            Request::Only(Kernel::Winograd),
            Request::Fastest,
        ] {
            check_request(s, request);
        }
    }

    fn check_request(s: &ConvShape, request: Request) {
        let s = *s;
        let x = pseudo(s.cin * s.h * s.w, 1);
        let wt = pseudo(s.cout * s.cin * 9, 2);
        let b = pseudo(s.cout, 3);
        let run = |relu: bool| {
            let mut y = vec![f32::NAN; s.cout * s.ho() * s.wo()];
            // SAFETY: the kernels write floats.
            forward_with(&x, &wt, Some(&b), &s, relu, request, unsafe {
                as_uninit(&mut y)
            });
            y
        };
        let y = run(false);
        let r = reference_forward(&x, &wt, &b, &s);
        assert_eq!(y.len(), r.len());
        for (a, e) in y.iter().zip(&r) {
            assert!((a - e).abs() < 1e-4, "{request:?} {s:?}: {a} vs {e}");
        }
        // The fused ReLU.
        let y = run(true);
        for (a, e) in y.iter().zip(&r) {
            assert!((a - e.max(0.0)).abs() < 1e-4);
        }
        // Gradients of L = sum(dy * y) by definition.
        let dy = pseudo(s.cout * s.ho() * s.wo(), 4);
        let dw = weight_grad_with(&x, &dy, &s, request);
        // Outputs start as NaN: every value must be written.
        let mut dx = vec![f32::NAN; x.len()];
        // SAFETY: the kernels write floats.
        input_grad_with(&dy, &wt, &s, request, unsafe { as_uninit(&mut dx) });
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
                "{request:?} {s:?}: dw {a} vs {e}"
            );
        }
        for (a, e) in dx.iter().zip(&dx_ref) {
            assert!(
                (f64::from(*a) - e).abs() < 1e-4,
                "{request:?} {s:?}: dx {a} vs {e}"
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
}
