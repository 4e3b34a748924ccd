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
            for j in crate::data::neighbours4(i, width, height) {
                if out[j] == 0 && fg(j) {
                    out[j] = next;
                    stack.push(j);
                }
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

/// Whether flipping pixel `i` of the binary image `fg` leaves the topology unchanged: a
/// *simple point*. The foreground (cells) is 4-connected and the background (membranes)
/// 8-connected, as for the regions of the Rand error: two cells separated by a one-pixel
/// diagonal membrane stay two cells. Out-of-image neighbours count as background.
///
/// Test (Bertrand's topological numbers): exactly one 4-connected foreground component among
/// the 8 neighbours that contains a 4-neighbour of the pixel, and exactly one 8-connected
/// background component among them. It is evaluated as the dual test on the complement.
pub fn is_simple(fg: &[bool], width: usize, height: usize, i: usize) -> bool {
    let (x, y) = ((i % width) as isize, (i / width) as isize);
    let at = |k: usize| {
        let (dx, dy) = OFFSETS[k % 8];
        let (nx, ny) = (x + dx, y + dy);
        nx >= 0
            && ny >= 0
            && (nx as usize) < width
            && (ny as usize) < height
            && fg[ny as usize * width + nx as usize]
    };
    // The dual: in the complement the cells are the 8-connected "background" set.
    let n: [bool; 8] = std::array::from_fn(|k| !at(k));
    // T8 of the (complemented) foreground: 8-connected components among the 8 neighbours.
    let fg_components = components_in_ring(&n, true, &[0, 1, 2, 3, 4, 5, 6, 7], adjacent8);
    // T4 of the background: 4-connected background components among the 8 neighbours that
    // contain one of the 4 edge neighbours.
    let bg_components = components_in_ring(&n, false, &[0, 2, 4, 6], adjacent4);
    fg_components == 1 && bg_components == 1
}

/// Components of the neighbours whose value is `value`, joined by `adjacent`, counting only
/// those that contain one of `starts`.
fn components_in_ring(
    n: &[bool; 8],
    value: bool,
    starts: &[usize],
    adjacent: fn(usize, usize) -> bool,
) -> usize {
    let mut visited = [false; 8];
    let mut count = 0;
    for &start in starts {
        if n[start] != value || visited[start] {
            continue;
        }
        count += 1;
        let mut stack = vec![start];
        visited[start] = true;
        while let Some(k) = stack.pop() {
            for m in 0..8 {
                if n[m] == value && !visited[m] && adjacent(k, m) {
                    visited[m] = true;
                    stack.push(m);
                }
            }
        }
    }
    count
}

/// The 8 neighbours in circular order starting east: E, NE, N, NW, W, SW, S, SE.
const OFFSETS: [(isize, isize); 8] = [
    (1, 0),
    (1, -1),
    (0, -1),
    (-1, -1),
    (-1, 0),
    (-1, 1),
    (0, 1),
    (1, 1),
];

fn adjacent8(a: usize, b: usize) -> bool {
    let (ax, ay) = OFFSETS[a];
    let (bx, by) = OFFSETS[b];
    a != b && (ax - bx).abs() <= 1 && (ay - by).abs() <= 1
}

fn adjacent4(a: usize, b: usize) -> bool {
    let (ax, ay) = OFFSETS[a];
    let (bx, by) = OFFSETS[b];
    (ax - bx).abs() + (ay - by).abs() == 1
}

/// Simplified warping error (after Jain et al. 2010, the ISBI 2012 measure): the truth is
/// warped towards the prediction by flipping, from a raster-ordered work list until nothing changes,
/// every disagreeing pixel that is a simple point of the current warped truth; the pixels
/// that still disagree would change the topology (splits, mergers, holes) and are counted.
/// Returns their fraction of all pixels. It differs from the challenge's implementation in
/// the order of flips (a raster-ordered work list instead of a priority by distance), which can change
/// which of two equivalent pixels is flipped but not the topology errors found.
pub fn warping_error(pred_fg: &[bool], truth_fg: &[bool], width: usize, height: usize) -> f64 {
    let mut warped = truth_fg.to_vec();
    // Work list of disagreeing pixels, in raster order first; a pixel that was not simple is
    // looked at again when one of its neighbours flips.
    let mut queue: std::collections::VecDeque<usize> = (0..warped.len())
        .filter(|&i| warped[i] != pred_fg[i])
        .collect();
    let mut queued: Vec<bool> = warped.iter().zip(pred_fg).map(|(a, b)| a != b).collect();
    while let Some(i) = queue.pop_front() {
        queued[i] = false;
        if warped[i] == pred_fg[i] || !is_simple(&warped, width, height, i) {
            continue;
        }
        warped[i] = !warped[i];
        let (x, y) = ((i % width) as isize, (i / width) as isize);
        for (dx, dy) in OFFSETS {
            let (nx, ny) = (x + dx, y + dy);
            if nx >= 0 && ny >= 0 && (nx as usize) < width && (ny as usize) < height {
                let j = ny as usize * width + nx as usize;
                if warped[j] != pred_fg[j] && !queued[j] {
                    queued[j] = true;
                    queue.push_back(j);
                }
            }
        }
    }
    let errors = warped.iter().zip(pred_fg).filter(|(a, b)| a != b).count();
    errors as f64 / warped.len().max(1) as f64
}

/// ISBI 2012 style scores of a foreground probability map against binary truth, thresholded
/// at `levels` evenly spaced levels; each measure reports its best level, as the challenge did.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ThresholdScores {
    /// Best Rand error over the levels, and its threshold.
    pub rand_error: (f64, f32),
    /// Best pixel error over the levels, and its threshold.
    pub pixel_error: (f64, f32),
    /// Best (simplified) warping error over the levels, and its threshold.
    pub warping_error: (f64, f32),
    /// IoU of the foreground at the best pixel-error threshold.
    pub foreground_iou: f64,
}

/// Scores foreground probabilities (`p_fg`, one plane per slice) against truth foreground.
pub fn threshold_scores(
    p_fg: &[Plane<f32>],
    truth_fg: &[Plane<bool>],
    levels: usize,
) -> ThresholdScores {
    let levels = levels.max(1);
    let mut best_rand = (f64::INFINITY, 0.0f32);
    let mut best_pixel = (f64::INFINITY, 0.0f32);
    let mut best_warp = (f64::INFINITY, 0.0f32);
    let mut best_iou = 0.0;
    for l in 0..levels {
        let t = (l as f32 + 1.0) / (levels as f32 + 1.0);
        let mut rand = RandCounts::default();
        let (mut wrong, mut total, mut warp, mut inter, mut union) =
            (0u64, 0u64, 0.0f64, 0u64, 0u64);
        for (p, tr) in p_fg.iter().zip(truth_fg) {
            let pred: Vec<bool> = p.data.iter().map(|&v| v > t).collect();
            let (w, h) = (p.width, p.height);
            rand.add(&regions(w, h, |i| tr.data[i]), &regions(w, h, |i| pred[i]));
            for (a, b) in pred.iter().zip(&tr.data) {
                wrong += u64::from(a != b);
                inter += u64::from(*a && *b);
                union += u64::from(*a || *b);
            }
            total += pred.len() as u64;
            warp += warping_error(&pred, &tr.data, w, h) * pred.len() as f64;
        }
        let r = rand.error();
        let pe = wrong as f64 / total.max(1) as f64;
        let we = warp / total.max(1) as f64;
        if r < best_rand.0 {
            best_rand = (r, t);
        }
        if pe < best_pixel.0 {
            best_pixel = (pe, t);
            best_iou = inter as f64 / union.max(1) as f64;
        }
        if we < best_warp.0 {
            best_warp = (we, t);
        }
    }
    ThresholdScores {
        rand_error: best_rand,
        pixel_error: best_pixel,
        warping_error: best_warp,
        foreground_iou: best_iou,
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
    fn simple_points_by_hand() {
        // The end of a line is simple; its middle is not (removing it splits the line).
        let line = [
            false, false, false, false, false, true, true, true, false, false, false, false, false,
            false, false,
        ];
        assert!(is_simple(&line, 5, 3, 7));
        assert!(!is_simple(&line, 5, 3, 6));
        // Filling the hole of a ring is not simple.
        let ring = [true, true, true, true, false, true, true, true, true];
        assert!(!is_simple(&ring, 3, 3, 4));
        // An isolated pixel cannot be removed (a component would vanish).
        let dot = [false, false, false, false, true, false, false, false, false];
        assert!(!is_simple(&dot, 3, 3, 4));
    }

    #[test]
    fn cells_touching_diagonally_stay_two_cells() {
        // 1 1 0 0
        // 1 1 0 0
        // 0 0 1 1
        // 0 0 1 1   filling (2, 1) would join the two cells: not simple.
        let fg: Vec<bool> = [1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1]
            .iter()
            .map(|&v| v == 1)
            .collect();
        assert!(!is_simple(&fg, 4, 4, 6));
        assert_eq!(regions(4, 4, |i| fg[i]).iter().max(), Some(&2));
    }

    #[test]
    fn warping_error_counts_topology_not_shape() {
        // Truth: one 3x3 blob. Prediction: the same blob shifted by one pixel -> warpable, 0.
        let (w, h) = (8usize, 8usize);
        let blob = |x0: usize, y0: usize| -> Vec<bool> {
            (0..w * h)
                .map(|i| {
                    let (x, y) = (i % w, i / w);
                    x >= x0 && x < x0 + 3 && y >= y0 && y < y0 + 3
                })
                .collect()
        };
        let truth = blob(2, 2);
        assert_eq!(warping_error(&blob(3, 2), &truth, w, h), 0.0);
        // Prediction splits the blob into two by a one-pixel gap: a split is a topology
        // error, at least one pixel remains.
        let mut split = truth.clone();
        for y in 2..5 {
            split[y * w + 3] = false;
        }
        let e = warping_error(&split, &truth, w, h);
        assert!(e > 0.0 && e <= 3.0 / 64.0, "{e}");
        // Pixel error would count 3 pixels for both the shift and the split alike.
    }

    #[test]
    fn threshold_sweep_finds_the_right_level() {
        let truth = Plane::from_vec(4, 1, vec![false, true, true, false]).unwrap();
        let p = Plane::from_vec(4, 1, vec![0.3f32, 0.6, 0.7, 0.2]).unwrap();
        let s = threshold_scores(&[p], &[truth], 10);
        assert_eq!(s.pixel_error.0, 0.0);
        assert!(s.pixel_error.1 > 0.3 && s.pixel_error.1 < 0.6);
        assert_eq!(s.rand_error.0, 0.0);
        assert_eq!(s.foreground_iou, 1.0);
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
