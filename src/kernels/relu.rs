//! The ReLU in place and its gradients (with the bias gradient summed per plane in the same
//! pass).

use rayon::prelude::*;

use super::common::planes_per_task;
use super::dispatch::wide;

pub(crate) fn relu_in_place(segments: &mut [&mut [f32]]) {
    for seg in segments.iter_mut() {
        for v in seg.iter_mut() {
            *v = v.max(0.0);
        }
    }
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

wide!(relu_bias_grad_plane_wide = relu_bias_grad_plane(o: &[f32], g: &mut [f32]) -> f32);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference::pseudo;

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
}
