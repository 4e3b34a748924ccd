//! The paper's optimiser step, SGD with momentum, in place over a parameter's values.

use rayon::prelude::*;

/// `v = momentum v + g`, `p -= lr v` over equal-length slices, in parallel chunks.
pub fn sgd_momentum_in_place(p: &mut [f32], v: &mut [f32], g: &[f32], lr: f32, momentum: f32) {
    const CHUNK: usize = 1 << 14;
    let step = |((p, v), g): ((&mut [f32], &mut [f32]), &[f32])| {
        for ((p, v), g) in p.iter_mut().zip(v.iter_mut()).zip(g) {
            *v = momentum * *v + g;
            *p -= lr * *v;
        }
    };
    if p.len() <= CHUNK {
        // Biases and small kernels: a parallel region would cost more than the pass.
        return step(((p, v), g));
    }
    p.par_chunks_mut(CHUNK)
        .zip(v.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(step);
}
