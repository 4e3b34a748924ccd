//! The U-Net's energy on slices: pixel-wise softmax and cross-entropy, each pixel weighted,
//! normalised by the weight sum, and its gradient with respect to the class scores.

use rayon::prelude::*;

/// Pixels per parallel task of the CPU kernels.
const CHUNK: usize = 1024;

/// The pixel ranges of `n` items of `p` pixels, by item, in chunks of [`CHUNK`].
fn pixel_chunks(n: usize, p: usize) -> Vec<(usize, std::ops::Range<usize>)> {
    (0..n)
        .flat_map(|b| {
            (0..p)
                .step_by(CHUNK)
                .map(move |i| (b, i..(i + CHUNK).min(p)))
        })
        .collect()
}

/// `log sum_c exp(z[c * p + i])` over the `k` classes of pixel `i`, stably.
fn log_sum_exp(z: &[f32], k: usize, p: usize, i: usize) -> f32 {
    let m = (0..k)
        .map(|c| z[c * p + i])
        .fold(f32::NEG_INFINITY, f32::max);
    let m = if m.is_finite() { m } else { 0.0 };
    m + (0..k).map(|c| (z[c * p + i] - m).exp()).sum::<f32>().ln()
}

/// The loss on slices (the CPU kernel of [`weighted_cross_entropy`]): `z` and `t` are
/// `n x k x p` (items, classes, pixels), `w` is `n x p`. In parallel over pixels; sums in
/// `f64`.
pub fn weighted_cross_entropy_values(
    z: &[f32],
    t: &[f32],
    w: &[f32],
    (n, k, p): (usize, usize, usize),
) -> f32 {
    assert!(
        z.len() == n * k * p && t.len() == n * k * p && w.len() == n * p,
        "loss: sizes"
    );
    let (sum, total) = pixel_chunks(n, p)
        .into_par_iter()
        .map(|(b, range)| {
            let (zb, tb) = (
                &z[b * k * p..(b + 1) * k * p],
                &t[b * k * p..(b + 1) * k * p],
            );
            let (mut sum, mut total) = (0.0f64, 0.0f64);
            for i in range {
                let wi = w[b * p + i];
                total += f64::from(wi);
                if wi != 0.0 {
                    let lse = log_sum_exp(zb, k, p, i);
                    let nll: f32 = (0..k).map(|c| tb[c * p + i] * (lse - zb[c * p + i])).sum();
                    sum += f64::from(wi * nll);
                }
            }
            (sum, total)
        })
        .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    (sum / total.max(1e-12)) as f32
}

/// The gradient of [`weighted_cross_entropy_values`] with respect to `z`, times `g`, into
/// `dz` (all overwritten): `w (sum_c t_c softmax(z) - t) g / sum w` at each pixel.
pub fn weighted_cross_entropy_grad_values(
    z: &[f32],
    t: &[f32],
    w: &[f32],
    (n, k, p): (usize, usize, usize),
    g: f32,
    dz: &mut [f32],
) {
    assert_eq!(dz.len(), n * k * p, "loss gradient: size");
    let total: f64 = w.iter().map(|&v| f64::from(v)).sum();
    let scale = (f64::from(g) / total.max(1e-12)) as f32;
    for (b, db) in dz.chunks_mut(k * p).enumerate() {
        let (zb, tb, wb) = (&z[b * k * p..(b + 1) * k * p], &t[b * k * p..], &w[b * p..]);
        // Per pixel: log sum exp, and the factor w g / sum w of every class's term.
        let mut lse = vec![0.0f32; p];
        lse.par_chunks_mut(CHUNK).enumerate().for_each(|(j, l)| {
            for (o, v) in l.iter_mut().enumerate() {
                *v = log_sum_exp(zb, k, p, j * CHUNK + o);
            }
        });
        let ts: Vec<f32> = (0..p)
            .map(|i| (0..k).map(|c| tb[c * p + i]).sum())
            .collect();
        db.par_chunks_mut(CHUNK).enumerate().for_each(|(j, d)| {
            // Element start + o of the item is class c, pixel i.
            let start = j * CHUNK;
            for (o, v) in d.iter_mut().enumerate() {
                let (c, i) = ((start + o) / p, (start + o) % p);
                let soft = (zb[c * p + i] - lse[i]).exp();
                *v = wb[i] * scale * (ts[i] * soft - tb[c * p + i]);
            }
        });
    }
}
