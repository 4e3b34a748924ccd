//! Intensity normalisation of network inputs.

use crate::data::Plane;

/// Percentiles mapped to 0 and 1 by [`normalize_percentile`].
pub const LOW_PERCENTILE: f32 = 1.0;
/// See [`LOW_PERCENTILE`].
pub const HIGH_PERCENTILE: f32 = 99.0;

/// The value below which `pct` percent of the finite values of `data` lie (nearest rank).
pub fn percentile(data: &[f32], pct: f32) -> f32 {
    let mut v: Vec<f32> = data.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    let k = ((pct / 100.0).clamp(0.0, 1.0) * (v.len() - 1) as f32).round() as usize;
    let (_, x, _) = v.select_nth_unstable_by(k, f32::total_cmp);
    *x
}

/// Maps the 1st percentile of a slice to 0 and the 99th to 1 (linear, not clipped), the same
/// for 8-bit, 16-bit and float data; a constant slice maps to 0.
pub fn normalize_percentile(p: &Plane<f32>) -> Plane<f32> {
    let lo = percentile(&p.data, LOW_PERCENTILE);
    let hi = percentile(&p.data, HIGH_PERCENTILE);
    let scale = if hi > lo { 1.0 / (hi - lo) } else { 0.0 };
    p.map(|v| (v - lo) * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_ramp() {
        let data: Vec<f32> = (0..=100).map(|v| v as f32).collect();
        assert_eq!(percentile(&data, 1.0), 1.0);
        assert_eq!(percentile(&data, 99.0), 99.0);
        let p = Plane::from_vec(101, 1, data).unwrap();
        let n = normalize_percentile(&p);
        assert!((n.data[1]).abs() < 1e-6 && (n.data[99] - 1.0).abs() < 1e-6);
        let c = normalize_percentile(&Plane::filled(3, 3, 7.0));
        assert!(c.data.iter().all(|&v| v == 0.0));
    }
}
