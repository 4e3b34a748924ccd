//! The U-Net energy: pixel-wise softmax, cross-entropy, each pixel weighted by w(x).

use burn::backend::Dispatch;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use rayon::prelude::*;

use super::conv::Conv3x3Backend as _;

/// Weighted cross-entropy normalised by the weight sum:
/// `E = -sum_x w(x) log p_{l(x)}(x) / sum_x w(x)`.
///
/// - `logits`: `[B, K, H, W]` class scores;
/// - `target`: `[B, K, H, W]` one-hot of the true class, all zeros at unlabelled pixels;
/// - `weights`: `[B, 1, H, W]`, 0 at unlabelled pixels.
///
/// Pixels of weight 0 contribute nothing, whatever their logits (log-softmax is finite).
///
/// One operation with its own gradient (no gradient flows into `target` and `weights`): on
/// the CPU a single pass each way, where the composition of burn's operations below took ~20
/// small operations and their autodiff records (~0.3 ms of a lite 252 px training step).
pub fn weighted_cross_entropy(
    logits: Tensor<4>,
    target: Tensor<4>,
    weights: Tensor<4>,
) -> Tensor<1> {
    Tensor::from_dispatch(Dispatch::weighted_cross_entropy(
        logits.into_dispatch(),
        target.into_dispatch(),
        weights.into_dispatch(),
    ))
}

/// [`weighted_cross_entropy`] as burn's operations (the GPU's form, and the reference of the
/// tests).
pub fn weighted_cross_entropy_composed(
    logits: Tensor<4>,
    target: Tensor<4>,
    weights: Tensor<4>,
) -> Tensor<1> {
    let logp = log_softmax(logits, 1);
    let nll = (logp * target).sum_dim(1).neg(); // [B, 1, H, W]
    let total = weights.clone().sum();
    (nll * weights).sum() / total.clamp_min(1e-12)
}

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
