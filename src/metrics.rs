//! Segmentation measures: pixel error, IoU per class and the ISBI 2012 Rand error.

use std::collections::HashMap;

use crate::data::Plane;

/// Measures of one prediction against its ground truth.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Evaluation {
    /// Fraction of labelled truth pixels whose predicted class differs.
    pub pixel_error: f64,
    /// Intersection over union per class id 1..=K (index 0 is class 1).
    pub iou: Vec<f64>,
    /// 1 - foreground-restricted Rand F-score (ISBI 2012).
    pub rand_error: f64,
    /// Labelled truth pixels compared.
    pub pixels: u64,
}

/// Fraction of pixels with `truth > 0` where `pred != truth`.
pub fn pixel_error(pred: &[u16], truth: &[u8]) -> (u64, u64) {
    let mut wrong = 0;
    let mut total = 0;
    for (&p, &t) in pred.iter().zip(truth) {
        if t > 0 {
            total += 1;
            wrong += u64::from(p != u16::from(t));
        }
    }
    (wrong, total)
}

/// Intersection and union counts of class `k` over labelled truth pixels.
pub fn iou_counts(pred: &[u16], truth: &[u8], k: u16) -> (u64, u64) {
    let (mut inter, mut union) = (0, 0);
    for (&p, &t) in pred.iter().zip(truth) {
        if t == 0 {
            continue;
        }
        let (a, b) = (p == k, u16::from(t) == k);
        inter += u64::from(a && b);
        union += u64::from(a || b);
    }
    (inter, union)
}

/// Counts of the Rand F-score, accumulated over slices.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RandCounts {
    sum_ab: f64,
    sum_a: f64,
    sum_b: f64,
}

impl RandCounts {
    /// Adds one slice. `truth` and `pred` are segmentations: 0 = boundary/background,
    /// other values = region ids. Only pixels inside truth regions count (foreground
    /// restriction); predicted boundary pixels inside a truth region are counted as
    /// singletons, as in the ISBI 2012 / SNEMI3D definition.
    pub fn add(&mut self, truth: &[u32], pred: &[u32]) {
        let n = truth.len() as f64;
        let mut joint: HashMap<(u32, u32), f64> = HashMap::new();
        let mut rows: HashMap<u32, f64> = HashMap::new();
        let mut cols: HashMap<u32, f64> = HashMap::new();
        let mut c = 0.0;
        for (&t, &p) in truth.iter().zip(pred) {
            if t == 0 {
                continue;
            }
            *rows.entry(t).or_default() += 1.0;
            if p == 0 {
                c += 1.0;
            } else {
                *joint.entry((t, p)).or_default() += 1.0;
                *cols.entry(p).or_default() += 1.0;
            }
        }
        self.sum_a += rows.values().map(|v| v * v).sum::<f64>();
        self.sum_b += cols.values().map(|v| v * v).sum::<f64>() + c / n;
        self.sum_ab += joint.values().map(|v| v * v).sum::<f64>() + c / n;
    }

    /// `1 - F`, with `F = 2 P R / (P + R)`, `P = sum_ab / sum_b`, `R = sum_ab / sum_a`.
    pub fn error(&self) -> f64 {
        if self.sum_a == 0.0 || self.sum_b == 0.0 {
            return if self.sum_a == self.sum_b { 0.0 } else { 1.0 };
        }
        let p = self.sum_ab / self.sum_b;
        let r = self.sum_ab / self.sum_a;
        if p + r == 0.0 {
            1.0
        } else {
            1.0 - 2.0 * p * r / (p + r)
        }
    }
}

/// 4-connected regions of pixels where `fg` is true, ids from 1; 0 elsewhere.
pub fn regions(width: usize, height: usize, fg: impl Fn(usize) -> bool) -> Vec<u32> {
    let mut out = vec![0u32; width * height];
    let mut next = 0u32;
    let mut stack = Vec::new();
    for start in 0..width * height {
        if out[start] != 0 || !fg(start) {
            continue;
        }
        next += 1;
        out[start] = next;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % width, i / width);
            let mut visit = |j: usize| {
                if out[j] == 0 && fg(j) {
                    out[j] = next;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < width {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - width);
            }
            if y + 1 < height {
                visit(i + width);
            }
        }
    }
    out
}

/// Evaluates predicted class masks against truth classes, slice by slice.
/// `truth_regions` gives the truth segmentation for the Rand error (instance ids, or the
/// 4-connected components of the truth's foreground when `None`).
pub fn evaluate(
    pred: &[Plane<u16>],
    truth: &[Plane<u8>],
    truth_regions: Option<&[Plane<u32>]>,
    classes: usize,
) -> Evaluation {
    let (mut wrong, mut total) = (0, 0);
    let mut inter = vec![0u64; classes];
    let mut union = vec![0u64; classes];
    let mut rand = RandCounts::default();
    for (s, (p, t)) in pred.iter().zip(truth).enumerate() {
        let (wr, to) = pixel_error(&p.data, &t.data);
        wrong += wr;
        total += to;
        for k in 0..classes {
            let (i, u) = iou_counts(&p.data, &t.data, k as u16 + 1);
            inter[k] += i;
            union[k] += u;
        }
        let tr = match truth_regions.and_then(|r| r.get(s)) {
            Some(r) => r.data.clone(),
            None => regions(t.width, t.height, |i| t.data[i] >= 2),
        };
        let pr = regions(p.width, p.height, |i| p.data[i] >= 2);
        rand.add(&tr, &pr);
    }
    Evaluation {
        pixel_error: wrong as f64 / total.max(1) as f64,
        iou: inter
            .iter()
            .zip(&union)
            .map(|(&i, &u)| if u == 0 { 1.0 } else { i as f64 / u as f64 })
            .collect(),
        rand_error: rand.error(),
        pixels: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_error_and_iou_by_hand() {
        let pred = [1u16, 2, 2, 1, 2];
        let truth = [1u8, 2, 1, 0, 2];
        assert_eq!(pixel_error(&pred, &truth), (1, 4));
        // class 2: pred {1,2,4}, truth {1,4} over labelled {0,1,2,4}: inter 2, union 3.
        assert_eq!(iou_counts(&pred, &truth, 2), (2, 3));
        assert_eq!(iou_counts(&pred, &truth, 1), (1, 2));
    }

    #[test]
    fn rand_error_is_zero_for_relabelled_identical_segmentations() {
        let truth = [1u32, 1, 0, 2, 2, 2];
        let pred = [7u32, 7, 0, 3, 3, 3];
        let mut r = RandCounts::default();
        r.add(&truth, &pred);
        assert!(r.error().abs() < 1e-12);
    }

    #[test]
    fn rand_error_of_a_merge_by_hand() {
        // Truth: two regions of 2 pixels; prediction merges them into one of 4.
        // sum_a = 2^2 + 2^2 = 8; sum_b = 4^2 = 16; sum_ab = 2^2 + 2^2 = 8.
        // P = 0.5, R = 1, F = 2/3, error = 1/3.
        let truth = [1u32, 1, 2, 2];
        let pred = [5u32, 5, 5, 5];
        let mut r = RandCounts::default();
        r.add(&truth, &pred);
        assert!((r.error() - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn regions_are_four_connected() {
        // 1 0 1
        // 0 1 0   diagonal pixels are separate regions
        let fg = [true, false, true, false, true, false];
        let r = regions(3, 2, |i| fg[i]);
        assert_eq!(r, vec![1, 0, 2, 0, 3, 0]);
    }
}
