//! The U-Net weight map (Ronneberger et al. 2015, eq. 2):
//! `w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))`.

use std::collections::BTreeMap;

use image::{ImageBuffer, Luma};
use imageproc::distance_transform::euclidean_squared_distance_transform;

use crate::data::{LabelSlice, Plane};

/// Parameters of the weight map.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WeightMapConfig {
    /// Amplitude of the border term (paper: 10).
    pub w0: f32,
    /// Width of the border term in pixels (paper: about 5).
    pub sigma_px: f32,
    /// Use the class-balancing term `w_c`; when false `w_c = 1` for every labelled pixel.
    pub balance_classes: bool,
    /// Use the border term; when false only `w_c` remains (for ablations).
    pub border: bool,
}

impl Default for WeightMapConfig {
    fn default() -> Self {
        Self {
            w0: 10.0,
            sigma_px: 5.0,
            balance_classes: true,
            border: true,
        }
    }
}

impl WeightMapConfig {
    /// Objects farther away than this contribute less than `1.5e-8 * w0` to the border term,
    /// so their distance transforms are not computed (6 sigma: `exp(-36 / 2) = 1.5e-8`).
    pub fn cutoff_px(&self) -> f32 {
        6.0 * self.sigma_px
    }
}

/// Class-balancing weights `w_c`, indexed by class id (index 0, unlabelled, is 0).
///
/// `w_c(k) = N / (K * N_k)` over all labelled pixels of all `slices`, where `K` is the number
/// of classes present: the mean of `w_c` over the labelled pixels is 1 and every class carries
/// the same total weight.
pub fn class_weights(slices: &[LabelSlice], n_classes: usize) -> Vec<f32> {
    let mut counts = vec![0u64; n_classes + 1];
    for s in slices {
        for &c in &s.classes.data {
            if let Some(n) = counts.get_mut(c as usize) {
                *n += 1;
            }
        }
    }
    let total: u64 = counts[1..].iter().sum();
    let present = counts[1..].iter().filter(|&&n| n > 0).count() as f64;
    let mut w = vec![0.0f32; n_classes + 1];
    for k in 1..=n_classes {
        if counts[k] > 0 {
            w[k] = (total as f64 / (present * counts[k] as f64)) as f32;
        }
    }
    w
}

/// Distances from every pixel to the nearest and second-nearest object (`d1 <= d2`), exact
/// Euclidean distances to the objects' pixels. Objects farther than `cutoff_px` are not
/// considered and a missing distance is `f32::INFINITY`.
pub fn object_distances(objects: &Plane<u32>, cutoff_px: f32) -> (Plane<f32>, Plane<f32>) {
    let (w, h) = (objects.width, objects.height);
    let mut d1 = Plane::filled(w, h, f32::INFINITY);
    let mut d2 = Plane::filled(w, h, f32::INFINITY);
    // Bounding boxes of the objects: (x0, y0, x1, y1) inclusive.
    let mut boxes: BTreeMap<u32, (usize, usize, usize, usize)> = BTreeMap::new();
    for y in 0..h {
        for x in 0..w {
            let id = objects.at(x, y);
            if id != 0 {
                let b = boxes.entry(id).or_insert((x, y, x, y));
                b.0 = b.0.min(x);
                b.1 = b.1.min(y);
                b.2 = b.2.max(x);
                b.3 = b.3.max(y);
            }
        }
    }
    let r = cutoff_px.max(0.0).ceil() as usize;
    let r2 = (cutoff_px * cutoff_px) as f64;
    for (&id, &(bx0, by0, bx1, by1)) in &boxes {
        let x0 = bx0.saturating_sub(r);
        let y0 = by0.saturating_sub(r);
        let x1 = (bx1 + r).min(w - 1);
        let y1 = (by1 + r).min(h - 1);
        let (ww, wh) = (x1 - x0 + 1, y1 - y0 + 1);
        let mask: ImageBuffer<Luma<u8>, Vec<u8>> =
            ImageBuffer::from_fn(ww as u32, wh as u32, |x, y| {
                Luma([u8::from(objects.at(x0 + x as usize, y0 + y as usize) == id)])
            });
        // The object lies wholly inside its window, so the windowed transform is exact.
        let dt = euclidean_squared_distance_transform(&mask);
        for wy in 0..wh {
            for wx in 0..ww {
                let sq = dt.get_pixel(wx as u32, wy as u32)[0];
                if sq > r2 {
                    continue;
                }
                let d = sq.sqrt() as f32;
                let (x, y) = (x0 + wx, y0 + wy);
                let i = y * w + x;
                if d < d1.data[i] {
                    d2.data[i] = d1.data[i];
                    d1.data[i] = d;
                } else if d < d2.data[i] {
                    d2.data[i] = d;
                }
            }
        }
    }
    (d1, d2)
}

/// The weight map of one slice: `w_c(x)` plus, on background (class 1) pixels, the border
/// term `w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`. Unlabelled pixels get 0.
pub fn weight_map(slice: &LabelSlice, class_w: &[f32], cfg: &WeightMapConfig) -> Plane<f32> {
    let (w, h) = (slice.classes.width, slice.classes.height);
    let mut out = Plane::filled(w, h, 0.0f32);
    let wc = |c: u8| -> f32 {
        if c == 0 {
            0.0
        } else if cfg.balance_classes {
            class_w.get(c as usize).copied().unwrap_or(1.0)
        } else {
            1.0
        }
    };
    for (o, &c) in out.data.iter_mut().zip(&slice.classes.data) {
        *o = wc(c);
    }
    if cfg.border && cfg.w0 != 0.0 {
        let (d1, d2) = object_distances(&slice.objects, cfg.cutoff_px());
        let two_s2 = 2.0 * cfg.sigma_px * cfg.sigma_px;
        for i in 0..w * h {
            if slice.classes.data[i] == 1 {
                let s = d1.data[i] + d2.data[i];
                if s.is_finite() {
                    out.data[i] += cfg.w0 * (-(s * s) / two_s2).exp();
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{LabelEncoding, encode_labels};
    use proptest::prelude::*;

    /// Brute force: for every pixel, the exact distance to every object's nearest pixel.
    fn brute_distances(objects: &Plane<u32>) -> (Plane<f32>, Plane<f32>) {
        let (w, h) = (objects.width, objects.height);
        let mut ids: Vec<u32> = objects.data.iter().copied().filter(|&v| v != 0).collect();
        ids.sort();
        ids.dedup();
        let mut d1 = Plane::filled(w, h, f32::INFINITY);
        let mut d2 = Plane::filled(w, h, f32::INFINITY);
        for y in 0..h {
            for x in 0..w {
                let mut ds: Vec<f32> = ids
                    .iter()
                    .map(|&id| {
                        let mut best = f64::INFINITY;
                        for oy in 0..h {
                            for ox in 0..w {
                                if objects.at(ox, oy) == id {
                                    let dx = ox as f64 - x as f64;
                                    let dy = oy as f64 - y as f64;
                                    best = best.min((dx * dx + dy * dy).sqrt());
                                }
                            }
                        }
                        best as f32
                    })
                    .collect();
                ds.sort_by(f32::total_cmp);
                if let Some(&a) = ds.first() {
                    d1.set(x, y, a);
                }
                if let Some(&b) = ds.get(1) {
                    d2.set(x, y, b);
                }
            }
        }
        (d1, d2)
    }

    fn disks(w: usize, h: usize, centres: &[(f32, f32, f32)]) -> Plane<u32> {
        let mut p = Plane::filled(w, h, 0u32);
        for (i, &(cx, cy, r)) in centres.iter().enumerate() {
            for y in 0..h {
                for x in 0..w {
                    let (dx, dy) = (x as f32 - cx, y as f32 - cy);
                    if dx * dx + dy * dy <= r * r {
                        p.set(x, y, i as u32 + 1);
                    }
                }
            }
        }
        p
    }

    #[test]
    fn two_touching_disks_match_hand_computed_values() {
        // Two disks of radius 8 whose centres are 17 px apart on row 20: they nearly touch,
        // leaving background columns between x = 18.. and x = 26 only where |dy| grows.
        let inst = disks(48, 40, &[(14.0, 20.0, 8.0), (31.0, 20.0, 8.0)]);
        let slice = encode_labels(&inst, LabelEncoding::Instances).unwrap();
        let cfg = WeightMapConfig::default();
        let cw = class_weights(std::slice::from_ref(&slice), 2);
        let map = weight_map(&slice, &cw, &cfg);
        // Pixel (22, 20) is background; nearest pixel of disk 1 is (22, 20) -> (22,20)? No:
        // disk 1 covers x <= 22 on row 20, disk 2 covers x >= 23. Take (22, 24) instead:
        // disk 1 pixels within radius 8 of (14, 20): nearest to (22,24) by brute force below.
        let (d1, d2) = brute_distances(&slice.objects);
        for &(x, y) in &[(22usize, 27usize), (22, 10), (5, 5), (40, 35), (23, 29)] {
            let c = slice.classes.at(x, y);
            let expect = if c == 1 {
                let s = d1.at(x, y) + d2.at(x, y);
                cw[1] + 10.0 * (-(s * s) / 50.0).exp()
            } else {
                cw[c as usize]
            };
            let got = map.at(x, y);
            assert!(
                (got - expect).abs() < 1e-4,
                "({x},{y}): got {got}, expected {expect}"
            );
        }
        // Hand check of one pixel: (22, 28) is background. Disk 1 (centre 14,20, r 8): the
        // nearest disk pixel on the ray is about 8 px from the centre, so d1 = |(8,8)| - 8
        // rounded to the pixel grid; brute force gives the exact grid value.
        let (x, y) = (22usize, 28usize);
        assert_eq!(slice.classes.at(x, y), 1);
        let hand_d1 = ((22.0f32 - 14.0).hypot(28.0 - 20.0) - 8.0).max(0.0);
        assert!((d1.at(x, y) - hand_d1).abs() < 1.0);
        // The border term is large between the disks and small far away.
        assert!(
            map.at(22, 26) > cw[1] + 3.0,
            "between disks: {}",
            map.at(22, 26)
        );
        assert!(map.at(2, 2) < cw[1] + 0.01, "far corner: {}", map.at(2, 2));
        // Object pixels carry only w_c.
        assert!((map.at(14, 20) - cw[2]).abs() < 1e-6);
    }

    #[test]
    fn class_weights_balance_the_classes() {
        let raw = Plane::from_vec(4, 1, vec![0u32, 1, 1, 2]).unwrap();
        let s = encode_labels(&raw, LabelEncoding::Classes).unwrap();
        let w = class_weights(&[s], 2);
        // 3 labelled pixels, 2 classes: w1 = 3 / (2 * 2) = 0.75, w2 = 3 / (2 * 1) = 1.5.
        assert_eq!(w, vec![0.0, 0.75, 1.5]);
    }

    #[test]
    fn unlabelled_pixels_weigh_nothing() {
        let raw = Plane::from_vec(3, 1, vec![0u32, 1, 2]).unwrap();
        let s = encode_labels(&raw, LabelEncoding::Classes).unwrap();
        let map = weight_map(
            &s,
            &class_weights(std::slice::from_ref(&s), 2),
            &Default::default(),
        );
        assert_eq!(map.data[0], 0.0);
        assert!(map.data[1] > 0.0 && map.data[2] > 0.0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn windowed_distances_equal_brute_force(
            w in 1usize..14, h in 1usize..14,
            cells in proptest::collection::vec(0u32..4, 196),
        ) {
            let objects = Plane::from_vec(w, h, cells[..w * h].to_vec()).unwrap();
            let (a1, a2) = object_distances(&objects, 1000.0);
            let (b1, b2) = brute_distances(&objects);
            for i in 0..w * h {
                let close = |a: f32, b: f32| (a.is_infinite() && b.is_infinite()) || (a - b).abs() < 1e-4;
                prop_assert!(close(a1.data[i], b1.data[i]), "d1 at {}: {} vs {}", i, a1.data[i], b1.data[i]);
                prop_assert!(close(a2.data[i], b2.data[i]), "d2 at {}: {} vs {}", i, a2.data[i], b2.data[i]);
            }
        }

        #[test]
        fn cutoff_only_drops_far_objects(
            cells in proptest::collection::vec(0u32..3, 400),
        ) {
            let objects = Plane::from_vec(20, 20, cells).unwrap();
            let (a1, a2) = object_distances(&objects, 4.0);
            let (b1, b2) = brute_distances(&objects);
            for i in 0..400 {
                for (a, b) in [(a1.data[i], b1.data[i]), (a2.data[i], b2.data[i])] {
                    if b <= 4.0 { prop_assert!((a - b).abs() < 1e-4); } else { prop_assert!(a.is_infinite()); }
                }
            }
        }
    }
}
