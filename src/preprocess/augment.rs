//! Augmentations besides the elastic deformation: flips, 90-degree rotations and grey-value
//! jitter. Geometric ones are applied identically to image, labels and weights.

use crate::data::Plane;
use crate::preprocess::rng::Rng;

/// Grey-value and geometric augmentation settings.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AugmentConfig {
    /// Elastic deformation on (the paper's main augmentation).
    pub elastic: bool,
    /// Random flips and 90-degree rotations.
    pub flips_rotations: bool,
    /// Additive brightness jitter, uniform in `[-b, b]` (image normalised to about 0..1).
    pub brightness: f32,
    /// Multiplicative contrast jitter, uniform in `[1 - c, 1 + c]`.
    pub contrast: f32,
    /// Gamma jitter: exponent `exp(u)`, u uniform in `[-g, g]`.
    pub gamma: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            elastic: true,
            flips_rotations: true,
            brightness: 0.1,
            contrast: 0.1,
            gamma: 0.2,
        }
    }
}

impl AugmentConfig {
    /// No augmentation at all.
    pub fn none() -> Self {
        Self {
            elastic: false,
            flips_rotations: false,
            brightness: 0.0,
            contrast: 0.0,
            gamma: 0.0,
        }
    }
}

/// One of the 8 symmetries of the square: optional horizontal flip, then `rot90` quarter
/// turns counter-clockwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct D4 {
    /// Mirror left-right first.
    pub flip: bool,
    /// Quarter turns, 0..4.
    pub rot90: u8,
}

impl D4 {
    /// A uniformly random symmetry.
    pub fn random(rng: &mut Rng) -> Self {
        Self {
            flip: rng.coin(),
            rot90: rng.below(4) as u8,
        }
    }

    /// All 8 symmetries, the identity first.
    pub fn all() -> [Self; 8] {
        std::array::from_fn(|i| Self {
            flip: i >= 4,
            rot90: (i % 4) as u8,
        })
    }

    /// The symmetry that undoes this one. A reflection is its own inverse; a rotation by `r`
    /// quarter turns is undone by `4 - r`.
    pub fn inverse(&self) -> Self {
        if self.flip {
            *self
        } else {
            Self {
                flip: false,
                rot90: (4 - self.rot90 % 4) % 4,
            }
        }
    }

    /// Applies the symmetry to a plane (rotations swap width and height).
    pub fn apply<T: Copy>(&self, p: &Plane<T>) -> Plane<T> {
        let mut cur = if self.flip {
            let mut q = p.clone();
            for row in q.data.chunks_mut(p.width) {
                row.reverse();
            }
            q
        } else {
            p.clone()
        };
        for _ in 0..self.rot90 % 4 {
            // Counter-clockwise: new(x, y) = old(w - 1 - y, x), new size h x w.
            let (w, h) = (cur.width, cur.height);
            let mut data = Vec::with_capacity(w * h);
            for y in 0..w {
                for x in 0..h {
                    data.push(cur.at(w - 1 - y, x));
                }
            }
            cur = Plane {
                width: h,
                height: w,
                data,
            };
        }
        cur
    }
}

/// Grey-value jitter drawn once per sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GreyJitter {
    /// Added after scaling.
    pub brightness: f32,
    /// Multiplies the (gamma-corrected) value.
    pub contrast: f32,
    /// Exponent applied to the value clamped at 0.
    pub gamma: f32,
}

impl GreyJitter {
    /// Draws a jitter within the bounds of `cfg`.
    pub fn random(cfg: &AugmentConfig, rng: &mut Rng) -> Self {
        let sym = |rng: &mut Rng, a: f32| rng.range_f64(-f64::from(a), f64::from(a)) as f32;
        Self {
            brightness: sym(rng, cfg.brightness),
            contrast: 1.0 + sym(rng, cfg.contrast),
            gamma: sym(rng, cfg.gamma).exp(),
        }
    }

    /// `v' = contrast * max(v, 0)^gamma + brightness`, in place.
    pub fn apply(&self, p: &mut Plane<f32>) {
        for v in &mut p.data {
            *v = self.contrast * v.max(0.0).powf(self.gamma) + self.brightness;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn d4_matches_hand_rotations() {
        // 1 2 3
        // 4 5 6
        let p = Plane::from_vec(3, 2, vec![1, 2, 3, 4, 5, 6]).unwrap();
        let r = D4 {
            flip: false,
            rot90: 1,
        }
        .apply(&p);
        // Counter-clockwise quarter turn: 3 6 / 2 5 / 1 4
        assert_eq!((r.width, r.height), (2, 3));
        assert_eq!(r.data, vec![3, 6, 2, 5, 1, 4]);
        let f = D4 {
            flip: true,
            rot90: 0,
        }
        .apply(&p);
        assert_eq!(f.data, vec![3, 2, 1, 6, 5, 4]);
        let full = D4 {
            flip: false,
            rot90: 4,
        }
        .apply(&p);
        assert_eq!(full, p);
    }

    #[test]
    fn every_symmetry_is_undone_by_its_inverse_and_all_differ() {
        let p = Plane::from_vec(3, 2, vec![1, 2, 3, 4, 5, 6]).unwrap();
        let all = D4::all();
        assert_eq!(all[0], D4::default());
        let images: Vec<Plane<i32>> = all.iter().map(|d| d.apply(&p)).collect();
        for (i, (d, img)) in all.iter().zip(&images).enumerate() {
            assert_eq!(d.inverse().apply(img), p, "{d:?}");
            for other in &images[..i] {
                assert_ne!(img, other, "{d:?} repeats another symmetry");
            }
        }
    }

    #[test]
    fn identity_jitter_changes_nothing() {
        let mut p = Plane::from_vec(2, 1, vec![0.25f32, 0.5]).unwrap();
        GreyJitter {
            brightness: 0.0,
            contrast: 1.0,
            gamma: 1.0,
        }
        .apply(&mut p);
        assert_eq!(p.data, vec![0.25, 0.5]);
        GreyJitter {
            brightness: 0.1,
            contrast: 2.0,
            gamma: 2.0,
        }
        .apply(&mut p);
        assert!((p.data[0] - (2.0 * 0.0625 + 0.1)).abs() < 1e-6);
    }
}
