//! Segmentation measures with the ISBI 2012 challenge's definitions (the Fiji code of
//! Trainable_Segmentation, `PixelError.java` and `RandError.java`, which the U-Net paper's
//! Table 1 reports), plus IoU per class and the fraction of wrong pixels.
//!
//! - **Pixel error** = 1 - the F-score of cell pixels (cell = the positive class; counts of
//!   true/false positives and negatives pooled over the slices), best over thresholds.
//! - **Rand error** = 1 - the foreground-restricted Rand F-score: truth and proposal are
//!   binarised, their 4-connected cell components are the segments, only pixels that are cell in
//!   the truth count, pixels the proposal calls membrane count as singletons, counts (Fiji's
//!   N^2 normalisation) pooled over the slices, best over thresholds.
//! - **V_rand after thinning** (the challenge's later leaderboard): the same F-score after the
//!   proposal's membranes are thinned to lines by a seeded watershed ([`thin_membranes`]).
//! - **wrong_px**: the fraction of pixels whose class differs. This is what earlier versions of
//!   this project called "pixel error"; on ISBI 2012 it is about 1.5x the paper's measure.

use std::collections::{BinaryHeap, HashMap};

use crate::data::Plane;

/// Measures of predicted class masks against their ground truth.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Evaluation {
    /// Fraction of labelled truth pixels whose predicted class differs (not the paper's
    /// pixel error; see the module documentation).
    pub wrong_px: f64,
    /// Intersection over union per class id 1..=K (index 0 is class 1).
    pub iou: Vec<f64>,
    /// The paper's measures of the foreground (class >= 2) against the truth's foreground
    /// (present when every pixel of the truth is labelled, as for ISBI 2012).
    pub paper: Option<MaskScores>,
    /// Labelled truth pixels compared.
    pub pixels: u64,
}

/// The paper's measures of one binary proposal (a mask, or a probability map at one
/// threshold).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct MaskScores {
    /// 1 - the F-score of cell pixels.
    pub pixel_error: f64,
    /// 1 - the foreground-restricted Rand F-score.
    pub rand_error: f64,
    /// 1 - V_rand after thinning the proposal's membranes.
    pub vrand_thinned_error: f64,
    /// Fraction of pixels whose class differs.
    pub wrong_px: f64,
}

/// Fraction of pixels with `truth > 0` where `pred != truth`, as `(wrong, compared)`.
pub fn wrong_pixels(pred: &[u16], truth: &[u8]) -> (u64, u64) {
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

/// The F-score of counts as Fiji's `ClassificationStatistics` computes it: no false positives
/// means precision 1, no false negatives recall 1.
fn f_score(tp: f64, fp: f64, fn_: f64) -> f64 {
    let precision = if fp == 0.0 { 1.0 } else { tp / (tp + fp) };
    let recall = if fn_ == 0.0 { 1.0 } else { tp / (tp + fn_) };
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

/// Pixel counts of the cell class (positive) against the truth, pooled over slices.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PixelCounts {
    tp: u64,
    fp: u64,
    fn_: u64,
    tn: u64,
}

impl PixelCounts {
    /// Adds one slice: `truth` and `pred` say which pixels are cell.
    pub fn add(&mut self, truth: &[bool], pred: &[bool]) {
        for (&t, &p) in truth.iter().zip(pred) {
            match (t, p) {
                (true, true) => self.tp += 1,
                (false, true) => self.fp += 1,
                (true, false) => self.fn_ += 1,
                (false, false) => self.tn += 1,
            }
        }
    }

    /// The paper's pixel error: 1 - F-score of cell pixels.
    pub fn error(&self) -> f64 {
        1.0 - f_score(self.tp as f64, self.fp as f64, self.fn_ as f64)
    }

    /// Fraction of pixels whose class differs.
    pub fn wrong_px(&self) -> f64 {
        let all = self.tp + self.fp + self.fn_ + self.tn;
        (self.fp + self.fn_) as f64 / all.max(1) as f64
    }
}

/// Counts of the foreground-restricted Rand F-score with Fiji's N^2 normalisation,
/// accumulated over slices (pair counts, in pixels squared).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RandCounts {
    tp: f64,
    fp: f64,
    fn_: f64,
}

impl RandCounts {
    /// Adds one slice. `truth` and `pred` are segmentations: 0 = membrane, other values =
    /// segment ids. Only pixels inside truth segments count (foreground restriction); a pixel
    /// the proposal calls membrane inside a truth segment is a singleton segment of its own.
    ///
    /// With `n_ij` the pixels of truth segment `i` and proposal segment `j` (`j = 0`:
    /// membrane), `a_i = sum_j n_ij`, `b_j = sum_{i>0} n_ij` and `s = sum_i n_i0`:
    /// `tp = sum_{i,j>0} n_ij^2 + s`, `fp = sum_{j>0} b_j^2 + s - tp`, `fn = sum_i a_i^2 - tp`.
    pub fn add(&mut self, truth: &[u32], pred: &[u32]) {
        let mut joint: HashMap<(u32, u32), f64> = HashMap::new();
        let mut rows: HashMap<u32, f64> = HashMap::new();
        let mut cols: HashMap<u32, f64> = HashMap::new();
        let mut singletons = 0.0;
        for (&t, &p) in truth.iter().zip(pred) {
            if t == 0 {
                continue;
            }
            *rows.entry(t).or_default() += 1.0;
            if p == 0 {
                singletons += 1.0;
            } else {
                *joint.entry((t, p)).or_default() += 1.0;
                *cols.entry(p).or_default() += 1.0;
            }
        }
        fn squares<K>(m: &HashMap<K, f64>) -> f64 {
            m.values().map(|v| v * v).sum()
        }
        let tp = squares(&joint) + singletons;
        self.tp += tp;
        self.fp += squares(&cols) + singletons - tp;
        self.fn_ += squares(&rows) - tp;
    }

    /// The foreground-restricted Rand F-score (V_rand).
    pub fn f_score(&self) -> f64 {
        f_score(self.tp, self.fp, self.fn_)
    }

    /// 1 - the Rand F-score.
    pub fn error(&self) -> f64 {
        1.0 - self.f_score()
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

/// Thins the membranes of a segmentation to lines: a seeded watershed grows the segments
/// (`segments`, 0 = membrane) into the membrane pixels, most cell-like first by `cell_score`
/// (the proposal's cell probability; a constant gives growth by distance), and a membrane
/// pixel that touches two different segments when it is reached stays membrane (the
/// watershed line). Membrane that no segment reaches stays membrane.
pub fn thin_membranes(
    segments: &[u32],
    cell_score: &[f32],
    width: usize,
    height: usize,
) -> Vec<u32> {
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    struct Item {
        score: u32,
        order: std::cmp::Reverse<u64>,
        index: usize,
    }
    let mut out = segments.to_vec();
    let mut queued = vec![false; out.len()];
    let mut heap = BinaryHeap::new();
    let mut order = 0u64;
    // The score is a float in [0, 1] (or any finite value): its bits order like the value
    // for non-negative floats; ties go first-in, first-out (growth by distance).
    let key = |i: usize| cell_score.get(i).copied().unwrap_or(0.0).max(0.0).to_bits();
    let mut push = |heap: &mut BinaryHeap<Item>, queued: &mut [bool], j: usize| {
        if !queued[j] {
            queued[j] = true;
            order += 1;
            heap.push(Item {
                score: key(j),
                order: std::cmp::Reverse(order),
                index: j,
            });
        }
    };
    for i in 0..out.len() {
        if out[i] != 0 {
            for j in crate::data::neighbours4(i, width, height) {
                if out[j] == 0 {
                    push(&mut heap, &mut queued, j);
                }
            }
        }
    }
    while let Some(Item { index: i, .. }) = heap.pop() {
        let mut label = 0;
        let mut line = false;
        for j in crate::data::neighbours4(i, width, height) {
            let l = out[j];
            if l != 0 {
                if label == 0 {
                    label = l;
                } else if l != label {
                    line = true;
                }
            }
        }
        if line || label == 0 {
            continue;
        }
        out[i] = label;
        for j in crate::data::neighbours4(i, width, height) {
            if out[j] == 0 {
                push(&mut heap, &mut queued, j);
            }
        }
    }
    out
}

/// The paper's measures of binary proposals (`pred`: cell pixels) against the truth's cell
/// pixels, slice by slice; `cell_score` (one plane per slice, optional) orders the thinning.
pub fn mask_scores(
    pred: &[Plane<bool>],
    truth: &[Plane<bool>],
    cell_score: Option<&[Plane<f32>]>,
) -> MaskScores {
    scores_of_masks(pred, truth, Some(cell_score))
}

/// [`mask_scores`] without the thinned figure (NaN), which costs as much as the others
/// together: for choosing among many masks.
pub fn mask_errors(pred: &[Plane<bool>], truth: &[Plane<bool>]) -> MaskScores {
    scores_of_masks(pred, truth, None)
}

/// [`mask_scores`]; the thinned figure only with `thinning` (its cell scores, if any).
fn scores_of_masks(
    pred: &[Plane<bool>],
    truth: &[Plane<bool>],
    thinning: Option<Option<&[Plane<f32>]>>,
) -> MaskScores {
    let mut px = PixelCounts::default();
    let mut rand = RandCounts::default();
    let mut thinned = RandCounts::default();
    for (s, (p, t)) in pred.iter().zip(truth).enumerate() {
        let (w, h) = (p.width, p.height);
        px.add(&t.data, &p.data);
        let truth_seg = regions(w, h, |i| t.data[i]);
        let pred_seg = regions(w, h, |i| p.data[i]);
        rand.add(&truth_seg, &pred_seg);
        if let Some(cell_score) = thinning {
            let score = cell_score
                .and_then(|c| c.get(s))
                .map_or(&[][..], |c| &c.data[..]);
            thinned.add(&truth_seg, &thin_membranes(&pred_seg, score, w, h));
        }
    }
    MaskScores {
        pixel_error: px.error(),
        rand_error: rand.error(),
        vrand_thinned_error: if thinning.is_some() {
            thinned.error()
        } else {
            f64::NAN
        },
        wrong_px: px.wrong_px(),
    }
}

/// Evaluates predicted class masks against truth classes, slice by slice. The paper's
/// measures (foreground = class >= 2) are added when every truth pixel is labelled.
pub fn evaluate(pred: &[Plane<u16>], truth: &[Plane<u8>], classes: usize) -> Evaluation {
    let (mut wrong, mut total) = (0, 0);
    let mut inter = vec![0u64; classes];
    let mut union = vec![0u64; classes];
    for (p, t) in pred.iter().zip(truth) {
        let (wr, to) = wrong_pixels(&p.data, &t.data);
        wrong += wr;
        total += to;
        for k in 0..classes {
            let (i, u) = iou_counts(&p.data, &t.data, k as u16 + 1);
            inter[k] += i;
            union[k] += u;
        }
    }
    let fully_labelled = truth.iter().all(|t| t.data.iter().all(|&c| c > 0));
    let paper = fully_labelled.then(|| {
        let pred_fg: Vec<Plane<bool>> = pred.iter().map(|p| p.map(|c| c >= 2)).collect();
        let truth_fg: Vec<Plane<bool>> = truth.iter().map(|t| t.map(|c| c >= 2)).collect();
        mask_scores(&pred_fg, &truth_fg, None)
    });
    Evaluation {
        wrong_px: wrong as f64 / total.max(1) as f64,
        iou: inter
            .iter()
            .zip(&union)
            .map(|(&i, &u)| if u == 0 { 1.0 } else { i as f64 / u as f64 })
            .collect(),
        paper,
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

/// A measure's best value over thresholds, and the threshold that gives it.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Best {
    /// The measure (an error: lower is better).
    pub value: f64,
    /// The threshold of the cell probability (a pixel is cell when `p > threshold`).
    pub threshold: f32,
}

/// The thresholds of the challenge's Fiji scripts: 0.0, 0.1, ..., 1.0.
pub fn challenge_thresholds() -> Vec<f32> {
    (0..=10).map(|k| k as f32 / 10.0).collect()
}

/// Scores of cell probability maps over thresholds: each measure at its best threshold, as
/// the challenge reported them, and every measure at every threshold.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ThresholdScores {
    /// 1 - maximal foreground-restricted Rand F-score.
    pub rand_error: Best,
    /// 1 - maximal F-score of cell pixels.
    pub pixel_error: Best,
    /// 1 - maximal V_rand after thinning.
    pub vrand_thinned_error: Best,
    /// Simplified warping error ([`warping_error`]), best over the thresholds.
    pub warping_error: Best,
    /// Fraction of wrong pixels, best over the thresholds.
    pub wrong_px: Best,
    /// Every measure (but the warping error) at every threshold.
    pub per_threshold: Vec<(f32, MaskScores)>,
}

impl ThresholdScores {
    /// The measures at the threshold nearest to `t`.
    pub fn at(&self, t: f32) -> Option<MaskScores> {
        self.per_threshold
            .iter()
            .min_by(|a, b| (a.0 - t).abs().total_cmp(&(b.0 - t).abs()))
            .map(|(_, s)| *s)
    }
}

/// Scores cell probabilities (`p_cell`, one plane per slice) against the truth's cell pixels
/// at each of `thresholds`. The warping error is computed only when `warping` is set (it is
/// the slow one).
pub fn threshold_scores(
    p_cell: &[Plane<f32>],
    truth_cell: &[Plane<bool>],
    thresholds: &[f32],
    warping: bool,
) -> ThresholdScores {
    let worst = Best {
        value: f64::INFINITY,
        threshold: f32::NAN,
    };
    let mut best = [worst; 5];
    let mut per_threshold = Vec::with_capacity(thresholds.len());
    for &t in thresholds {
        let pred: Vec<Plane<bool>> = p_cell.iter().map(|p| p.map(|v| v > t)).collect();
        let s = mask_scores(&pred, truth_cell, Some(p_cell));
        let warp = if warping {
            let (mut sum, mut n) = (0.0, 0usize);
            for (p, tr) in pred.iter().zip(truth_cell) {
                sum += warping_error(&p.data, &tr.data, p.width, p.height) * p.data.len() as f64;
                n += p.data.len();
            }
            sum / n.max(1) as f64
        } else {
            f64::NAN
        };
        for (b, v) in best.iter_mut().zip([
            s.rand_error,
            s.pixel_error,
            s.vrand_thinned_error,
            warp,
            s.wrong_px,
        ]) {
            if v < b.value {
                *b = Best {
                    value: v,
                    threshold: t,
                };
            }
        }
        per_threshold.push((t, s));
    }
    let [
        rand_error,
        pixel_error,
        vrand_thinned_error,
        warping_error,
        wrong_px,
    ] = best;
    ThresholdScores {
        rand_error,
        pixel_error,
        vrand_thinned_error,
        warping_error,
        wrong_px,
        per_threshold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand_error_of(truth: &[u32], pred: &[u32]) -> f64 {
        let mut r = RandCounts::default();
        r.add(truth, pred);
        r.error()
    }

    #[test]
    fn wrong_pixels_and_iou_by_hand() {
        let pred = [1u16, 2, 2, 1, 2];
        let truth = [1u8, 2, 1, 0, 2];
        assert_eq!(wrong_pixels(&pred, &truth), (1, 4));
        // class 2: pred {1,2,4}, truth {1,4} over labelled {0,1,2,4}: inter 2, union 3.
        assert_eq!(iou_counts(&pred, &truth, 2), (2, 3));
        assert_eq!(iou_counts(&pred, &truth, 1), (1, 2));
    }

    #[test]
    fn pixel_error_is_one_minus_the_f_score_of_cell_pixels() {
        // truth cells {0,1,2,3}, proposal cells {1,2,3,4,5}: tp 3, fp 2, fn 1, tn 2.
        // P = 3/5, R = 3/4, F = 2/3; wrong 3 of 8.
        let truth = [true, true, true, true, false, false, false, false];
        let pred = [false, true, true, true, true, true, false, false];
        let mut c = PixelCounts::default();
        c.add(&truth, &pred);
        assert!((c.error() - 1.0 / 3.0).abs() < 1e-12);
        assert!((c.wrong_px() - 3.0 / 8.0).abs() < 1e-12);
    }

    #[test]
    fn rand_error_is_zero_for_relabelled_identical_segmentations() {
        assert!(rand_error_of(&[1, 1, 0, 2, 2, 2], &[7, 7, 0, 3, 3, 3]).abs() < 1e-12);
    }

    #[test]
    fn rand_error_of_a_merge_by_hand() {
        // Truth: two segments of 2 pixels; the proposal merges them into one of 4.
        // tp = 2^2 + 2^2 = 8, fp = 4^2 - 8 = 8, fn = 8 - 8 = 0: P = 1/2, R = 1, error 1/3.
        assert!((rand_error_of(&[1, 1, 2, 2], &[5, 5, 5, 5]) - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn rand_error_of_a_split_by_hand() {
        // Truth: one segment of 4; the proposal splits it into two of 2.
        // tp = 8, fp = 8 - 8 = 0, fn = 16 - 8 = 8: P = 1, R = 1/2, error 1/3.
        assert!((rand_error_of(&[1, 1, 1, 1], &[3, 3, 4, 4]) - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn membrane_pixels_of_the_proposal_are_singletons() {
        // Truth: one segment of 4; the proposal has 2 of its pixels as a segment and calls the
        // other 2 membrane. tp = 2^2 + 2 = 6, fp = 2^2 + 2 - 6 = 0, fn = 4^2 - 6 = 10:
        // P = 1, R = 6/16, F = 6/11, error 5/11. (Counting the singletons as s/n instead of s,
        // a slip in an earlier version, gives 0.56.)
        let e = rand_error_of(&[1, 1, 1, 1], &[2, 2, 0, 0]);
        assert!((e - 5.0 / 11.0).abs() < 1e-12, "{e}");
    }

    #[test]
    fn truth_membrane_pixels_do_not_count() {
        // Whatever the proposal says where the truth is membrane does not change the score.
        let truth = [1, 1, 0, 0, 2, 2];
        assert!(rand_error_of(&truth, &[1, 1, 1, 2, 2, 2]).abs() < 1e-12);
        assert!(rand_error_of(&truth, &[1, 1, 0, 0, 2, 2]).abs() < 1e-12);
    }

    #[test]
    fn one_pixel_thicker_membranes_by_hand() {
        // One row: two cells of 3 px and a 1-px membrane; the proposal's membrane is 3 px.
        let truth: Vec<bool> = [1, 1, 1, 0, 1, 1, 1].iter().map(|&v| v == 1).collect();
        let pred: Vec<bool> = [1, 1, 0, 0, 0, 1, 1].iter().map(|&v| v == 1).collect();
        let plane = |v: &[bool]| Plane::from_vec(7, 1, v.to_vec()).unwrap();
        let s = mask_scores(&[plane(&pred)], &[plane(&truth)], None);
        // Rand: n_1A = 2, n_2B = 2, two singletons. tp = 4 + 4 + 2 = 10, fp = 8 + 2 - 10 = 0,
        // fn = 9 + 9 - 10 = 8: P = 1, R = 10/18, F = 5/7.
        assert!((s.rand_error - 2.0 / 7.0).abs() < 1e-12, "{s:?}");
        // Pixels: tp 4, fp 0, fn 2: F = 0.8.
        assert!((s.pixel_error - 0.2).abs() < 1e-12);
        assert!((s.wrong_px - 2.0 / 7.0).abs() < 1e-12);
        // Thinning grows both cells by one pixel and leaves the middle as the line: perfect.
        assert!(s.vrand_thinned_error.abs() < 1e-12, "{s:?}");
    }

    #[test]
    fn counts_are_pooled_over_slices_not_averaged() {
        // Slice 1 perfect (one segment of 4: tp 16), slice 2 the merge above (tp 8, fp 8):
        // pooled tp 24, fp 8, fn 0: P = 3/4, R = 1, F = 6/7. (The mean of the slices' errors
        // would be 1/6.)
        let mut r = RandCounts::default();
        r.add(&[1, 1, 1, 1], &[1, 1, 1, 1]);
        r.add(&[1, 1, 2, 2], &[5, 5, 5, 5]);
        assert!((r.error() - 1.0 / 7.0).abs() < 1e-12, "{}", r.error());
    }

    #[test]
    fn thinning_follows_the_cell_probability() {
        // A | five membrane pixels | B. By distance the line is the middle pixel; with the
        // probability falling towards B, segment A floods the first four.
        let seg = [1u32, 0, 0, 0, 0, 0, 2];
        assert_eq!(thin_membranes(&seg, &[], 7, 1), vec![1, 1, 1, 0, 2, 2, 2]);
        let p = [1.0f32, 0.9, 0.8, 0.7, 0.6, 0.1, 1.0];
        assert_eq!(thin_membranes(&seg, &p, 7, 1), vec![1, 1, 1, 1, 1, 0, 2]);
        // Membrane no segment reaches stays membrane.
        assert_eq!(thin_membranes(&[0, 0, 0], &[], 3, 1), vec![0, 0, 0]);
    }

    #[test]
    fn evaluate_adds_the_paper_measures_for_full_labels() {
        let truth = Plane::from_vec(7, 1, vec![2u8, 2, 2, 1, 2, 2, 2]).unwrap();
        let pred = Plane::from_vec(7, 1, vec![2u16, 2, 1, 1, 1, 2, 2]).unwrap();
        let ev = evaluate(std::slice::from_ref(&pred), &[truth], 2);
        let paper = ev.paper.expect("full labels");
        assert!((paper.rand_error - 2.0 / 7.0).abs() < 1e-12);
        assert!((ev.wrong_px - 2.0 / 7.0).abs() < 1e-12);
        // Sparse truth: no paper measures.
        let sparse = Plane::from_vec(7, 1, vec![2u8, 0, 0, 1, 0, 0, 2]).unwrap();
        assert!(evaluate(&[pred], &[sparse], 2).paper.is_none());
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
    }

    #[test]
    fn threshold_sweep_finds_the_right_level() {
        let truth = Plane::from_vec(4, 1, vec![false, true, true, false]).unwrap();
        let p = Plane::from_vec(4, 1, vec![0.3f32, 0.6, 0.7, 0.2]).unwrap();
        let s = threshold_scores(&[p], &[truth], &challenge_thresholds(), true);
        assert_eq!(s.pixel_error.value, 0.0);
        assert!(s.pixel_error.threshold >= 0.3 && s.pixel_error.threshold < 0.6);
        assert_eq!(s.rand_error.value, 0.0);
        assert_eq!(s.wrong_px.value, 0.0);
        assert_eq!(s.warping_error.value, 0.0);
        assert_eq!(s.per_threshold.len(), 11);
        // At 0.6 one of the two cell pixels is lost: pixel F = 2/3.
        let at = s.at(0.6).unwrap();
        assert!((at.pixel_error - 1.0 / 3.0).abs() < 1e-12, "{at:?}");
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
