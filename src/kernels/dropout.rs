//! The dropout mask, drawn by a counter-based generator so that a seed gives the same mask
//! however the work is split.

use rayon::prelude::*;

/// Fills `mask` with `1 / keep` where a counter-based generator (SplitMix64 of `seed` and the
/// index) draws a uniform value below `keep`, else 0: the same mask for the same seed, however
/// the work is split.
pub fn dropout_mask_into(seed: u64, keep: f64, mask: &mut [f32]) {
    const CHUNK: usize = 1 << 14;
    let scale = (1.0 / keep) as f32;
    // A 24-bit uniform draw is kept when below this.
    let threshold = (keep * f64::from(1u32 << 24)).round() as u64;
    mask.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            for (i, v) in chunk.iter_mut().enumerate() {
                let mut z =
                    seed.wrapping_add(((c * CHUNK + i) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                *v = if (z >> 40) < threshold { scale } else { 0.0 };
            }
        });
}
