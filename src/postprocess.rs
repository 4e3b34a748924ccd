//! From class probabilities to classes: the decision rule a model stores ([`Decision`]:
//! the most probable class, or a threshold of the cell probability, optionally followed by
//! gap closing), how a run chooses it on held-out slices ([`choose_decision`]), and the gap
//! closing itself, a post-processing step reported apart from the raw network in every table.
//!
//! **Gap closing by seeded watershed lines.** A thresholded mask merges two cells wherever
//! the membrane between them is faint for a few pixels. Confident cell cores (`p >
//! seed_threshold`) are taken as seeds and flooded over the whole image, most cell-like pixels
//! first ([`crate::metrics::thin_membranes`]); where two seeds' floods meet, a one-pixel
//! watershed line stays. The final mask is the thresholded mask with those lines added as
//! membrane: membranes the mask already has are kept as they are, and a gap between two
//! seeded cells is closed by a line along the least cell-like path.

use crate::data::Plane;
use crate::metrics::{MaskScores, regions, thin_membranes};

/// Settings of the gap closing.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapClosing {
    /// Cell probability above which a pixel seeds a cell.
    pub seed_threshold: f32,
    /// Seeds (4-connected) smaller than this many pixels are dropped: their pixels are
    /// flooded from the seeds around them.
    #[serde(default)]
    pub min_seed_area: u32,
}

impl Default for GapClosing {
    fn default() -> Self {
        Self {
            seed_threshold: 0.9,
            min_seed_area: 0,
        }
    }
}

/// The cell mask of `p_cell` at `threshold` with the watershed lines between seeded cells
/// ([`gap_lines`]) added as membrane.
pub fn close_gaps(p_cell: &Plane<f32>, threshold: f32, cfg: &GapClosing) -> Plane<bool> {
    let lines = gap_lines(p_cell, cfg);
    Plane {
        width: p_cell.width,
        height: p_cell.height,
        data: p_cell
            .data
            .iter()
            .zip(&lines.data)
            .map(|(&p, &line)| p > threshold && !line)
            .collect(),
    }
}

/// The watershed lines of the gap closing: the pixels where floods from different confident
/// cores (seeds) of `p_cell` meet. They do not depend on the mask's threshold, so the app
/// computes them once per prediction and draws the mask of any threshold over them.
pub fn gap_lines(p_cell: &Plane<f32>, cfg: &GapClosing) -> Plane<bool> {
    let (w, h) = (p_cell.width, p_cell.height);
    let mut seeds = regions(w, h, |i| p_cell.data[i] > cfg.seed_threshold);
    if cfg.min_seed_area > 1 {
        let mut area = vec![0u32; seeds.iter().copied().max().unwrap_or(0) as usize + 1];
        for &s in &seeds {
            area[s as usize] += 1;
        }
        for s in &mut seeds {
            if area[*s as usize] < cfg.min_seed_area {
                *s = 0;
            }
        }
    }
    let flooded = thin_membranes(&seeds, &p_cell.data, w, h);
    // A pixel the flood left unlabelled next to a labelled one is a watershed line: it was
    // reached and found two floods. Unlabelled pixels with no labelled neighbour were never
    // reached (no seed at all) and keep the thresholded value.
    Plane {
        width: w,
        height: h,
        data: (0..w * h)
            .map(|i| flooded[i] == 0 && crate::data::neighbours4(i, w, h).any(|j| flooded[j] != 0))
            .collect(),
    }
}

/// How a model turns its class probabilities into classes.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Decision {
    /// A two-class model's threshold of the cell (class 2) probability; `None`: the most
    /// probable class.
    pub threshold: Option<f32>,
    /// Gap closing after the threshold (two-class models only; at threshold 0.5 when no
    /// threshold is set).
    pub gap_closing: Option<GapClosing>,
}

impl Decision {
    /// The rule of a new two-class network trained without held-out slices to choose one
    /// on: cell probability above 0.3 with gap closing between cores above 0.9 of at least
    /// 100 pixels. On the ISBI 2012 validation slices it was near the best rule of both a
    /// network trained on full labels (Rand error 0.102 against 0.134 for the most probable
    /// class) and one trained on scribbles (0.149 against 0.661); docs/results.md.
    pub const UNTUNED: Self = Self {
        threshold: Some(0.3),
        gap_closing: Some(GapClosing {
            seed_threshold: 0.9,
            min_seed_area: 100,
        }),
    };

    /// The rule of a new network of `classes` classes: [`Self::UNTUNED`] for two, else the
    /// most probable class.
    pub fn for_new_network(classes: usize) -> Self {
        if classes == 2 {
            Self::UNTUNED
        } else {
            Self::default()
        }
    }

    /// The most probable class, or class 2 where the cell probability exceeds `threshold`.
    pub fn threshold(threshold: Option<f32>) -> Self {
        Self {
            threshold,
            gap_closing: None,
        }
    }

    /// The class of every pixel of `probs` (one plane per class, class ids from 1).
    pub fn classes(&self, probs: &[Plane<f32>]) -> Plane<u16> {
        match probs {
            [_, p_cell] if self.threshold_for(2).is_some() => {
                self.cell_mask(p_cell).map(|c| if c { 2 } else { 1 })
            }
            _ => argmax_classes(probs),
        }
    }

    /// The threshold of class 2 this rule applies to the probabilities of `classes` classes,
    /// or `None` where it takes the most probable class (not two classes, or no rule).
    pub fn threshold_for(&self, classes: usize) -> Option<f32> {
        (classes == 2 && *self != Self::default()).then(|| self.threshold.unwrap_or(0.5))
    }

    /// The cell (class 2) mask of a two-class model's cell probabilities by this rule (the
    /// most probable class of two is cell where its probability exceeds 0.5).
    pub fn cell_mask(&self, p_cell: &Plane<f32>) -> Plane<bool> {
        let t = self.threshold.unwrap_or(0.5);
        match &self.gap_closing {
            Some(g) => close_gaps(p_cell, t, g),
            None => p_cell.map(|v| v > t),
        }
    }

    /// In words, for the app and the CLI: "cell where its probability > 0.25, gaps closed
    /// between cores > 0.90".
    pub fn describe(&self) -> String {
        self.describe_for("cell")
    }

    /// [`Self::describe`] with class 2 called `name`.
    pub fn describe_for(&self, name: &str) -> String {
        match (self.threshold, self.gap_closing) {
            (None, None) => "the most probable class".to_string(),
            (t, None) => format!("{name} where its probability > {:.2}", t.unwrap_or(0.5)),
            (t, Some(g)) => format!(
                "{name} where its probability > {:.2}, gaps closed between cores > {:.2}{}",
                t.unwrap_or(0.5),
                g.seed_threshold,
                if g.min_seed_area > 1 {
                    format!(" of {}+ px", g.min_seed_area)
                } else {
                    String::new()
                }
            ),
        }
    }

    /// Whether the decision is one a two-class model can use (thresholds in [0, 1], seeds
    /// above the mask threshold), else what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if let Some(t) = self.threshold
            && !(0.0..=1.0).contains(&t)
        {
            return Err(format!("threshold {t} is not between 0 and 1"));
        }
        if let Some(g) = self.gap_closing {
            let s = g.seed_threshold;
            if !(s > 0.0 && s <= 1.0) {
                return Err(format!("gap closing seed threshold {s} is not in (0, 1]"));
            }
            if s < self.threshold.unwrap_or(0.5) {
                return Err(format!(
                    "gap closing seed threshold {s} is below the mask threshold"
                ));
            }
        }
        Ok(())
    }
}

/// The most probable class of every pixel (class ids from 1).
pub fn argmax_classes(probs: &[Plane<f32>]) -> Plane<u16> {
    let Some(first) = probs.first() else {
        return Plane::filled(0, 0, 0);
    };
    let mut out = Plane::filled(first.width, first.height, 1u16);
    for i in 0..out.data.len() {
        let mut best = (f32::NEG_INFINITY, 0usize);
        for (k, p) in probs.iter().enumerate() {
            if p.data[i] > best.0 {
                best = (p.data[i], k);
            }
        }
        out.data[i] = best.1 as u16 + 1;
    }
    out
}

/// A decision rule chosen on held-out slices, with its scores there (the challenge's
/// definitions, counts pooled over the slices).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecisionChoice {
    /// The rule.
    pub decision: Decision,
    /// Its masks' scores on the held-out slices.
    pub scores: MaskScores,
}

impl DecisionChoice {
    /// What the choice minimises: the sum of the challenge's two errors (Rand error and
    /// pixel error), which weighs gaps in membranes and thick membranes alike.
    pub fn cost(&self) -> f64 {
        self.scores.rand_error + self.scores.pixel_error
    }
}

/// Thresholds of the cell probability a plain decision is chosen from.
pub const PLAIN_THRESHOLDS: [f32; 19] = [
    0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85,
    0.9, 0.95,
];
/// Seed thresholds of the gap closing a decision is chosen from.
pub const SEED_THRESHOLDS: [f32; 4] = [0.7, 0.8, 0.9, 0.95];
/// Smallest seed areas (pixels) of the gap closing a decision is chosen from.
pub const SEED_AREAS: [u32; 3] = [0, 30, 100];
/// Mask thresholds of the gap closing a decision is chosen from: low ones, because the
/// watershed lines keep cells apart where a low threshold alone would merge them.
pub const GAP_MASK_THRESHOLDS: [f32; 9] = [0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5];

/// The decision rule of a two-class model with the lowest sum of Rand error and pixel error
/// on held-out slices (`p_cell`: cell probabilities, `truth`: cell pixels): a plain
/// threshold ([`PLAIN_THRESHOLDS`]) or gap closing ([`SEED_THRESHOLDS`] x [`SEED_AREAS`] x
/// [`GAP_MASK_THRESHOLDS`]); ties go to the plain threshold. `None` without slices.
pub fn choose_decision(p_cell: &[Plane<f32>], truth: &[Plane<bool>]) -> Option<DecisionChoice> {
    if p_cell.is_empty() || p_cell.len() != truth.len() {
        return None;
    }
    let plain = PLAIN_THRESHOLDS
        .iter()
        .map(|&t| Decision::threshold(Some(t)));
    let seeds = SEED_THRESHOLDS.iter().flat_map(|&seed_threshold| {
        SEED_AREAS.iter().map(move |&min_seed_area| GapClosing {
            seed_threshold,
            min_seed_area,
        })
    });
    let closing = seeds.flat_map(|g| {
        GAP_MASK_THRESHOLDS.iter().map(move |&t| Decision {
            threshold: Some(t),
            gap_closing: Some(g),
        })
    });
    let mut best: Option<DecisionChoice> = None;
    for decision in plain.chain(closing) {
        let choice = DecisionChoice {
            decision,
            scores: rule_errors(decision, p_cell, truth),
        };
        if choice.cost().is_finite() && best.is_none_or(|b| choice.cost() < b.cost()) {
            best = Some(choice);
        }
    }
    best
}

/// The Rand and pixel errors ([`crate::metrics::mask_errors`]) of the masks `decision` makes
/// of cell probabilities `p_cell` against the truth's cell pixels.
pub fn rule_errors(decision: Decision, p_cell: &[Plane<f32>], truth: &[Plane<bool>]) -> MaskScores {
    let masks: Vec<Plane<bool>> = p_cell.iter().map(|p| decision.cell_mask(p)).collect();
    crate::metrics::mask_errors(&masks, truth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_faint_gap_between_two_cells_is_closed_and_nothing_else_changes() {
        // Two cells (p = 0.95) left and right of a membrane column (p = 0.1) with a faint
        // spot (p = 0.6) in row 2, and a dim pixel (0.7) inside the left cell.
        let (w, h) = (7usize, 5usize);
        let mut p = Plane::filled(w, h, 0.95f32);
        for y in 0..h {
            p.set(3, y, 0.1);
        }
        p.set(3, 2, 0.6);
        p.set(1, 1, 0.7);
        let plain = p.map(|v| v > 0.5);
        // Thresholded at 0.5, the gap joins the two cells into one region.
        assert_eq!(regions(w, h, |i| plain.data[i]).iter().max(), Some(&1));
        let closed = close_gaps(&p, 0.5, &GapClosing::default());
        assert_eq!(regions(w, h, |i| closed.data[i]).iter().max(), Some(&2));
        // The only change is the gap pixel; the dim pixel inside a cell stays cell.
        let changed: Vec<usize> = (0..w * h)
            .filter(|&i| closed.data[i] != plain.data[i])
            .collect();
        assert_eq!(changed, vec![2 * w + 3]);
    }

    #[test]
    fn without_seeds_the_mask_is_the_thresholded_one() {
        let mut p = Plane::filled(4, 4, 0.6f32);
        p.set(0, 0, 0.2);
        let closed = close_gaps(&p, 0.5, &GapClosing::default());
        assert_eq!(closed, p.map(|v| v > 0.5));
    }
    /// Two cells (p = 0.95) left and right of a membrane column (p = 0.1 with a faint spot
    /// of 0.6 in row 2), 7 x 5.
    fn two_cells_with_a_gap() -> Plane<f32> {
        let mut p = Plane::filled(7, 5, 0.95f32);
        for y in 0..5 {
            p.set(3, y, 0.1);
        }
        p.set(3, 2, 0.6);
        p
    }

    fn two_class(p_cell: &Plane<f32>) -> Vec<Plane<f32>> {
        vec![p_cell.map(|v| 1.0 - v), p_cell.clone()]
    }

    #[test]
    fn the_decision_rules_by_hand() {
        let p = two_cells_with_a_gap();
        let probs = two_class(&p);
        // Argmax: cell where p > 0.5, the gap pixel (0.6) included.
        let argmax = Decision::default().classes(&probs);
        assert_eq!(argmax.at(3, 2), 2);
        assert_eq!(argmax.at(3, 0), 1);
        // A threshold above the gap's 0.6 opens the membrane everywhere.
        let t = Decision::threshold(Some(0.7)).classes(&probs);
        assert_eq!((0..5).map(|y| t.at(3, y)).collect::<Vec<_>>(), [1; 5]);
        // A threshold of 0.05 joins everything; gap closing draws the line along column 3.
        assert!(
            Decision::threshold(Some(0.05))
                .classes(&probs)
                .data
                .iter()
                .all(|&c| c == 2)
        );
        let closed = Decision {
            threshold: Some(0.05),
            gap_closing: Some(GapClosing::default()),
        }
        .classes(&probs);
        for y in 0..5 {
            for x in 0..7 {
                assert_eq!(closed.at(x, y), if x == 3 { 1 } else { 2 }, "({x}, {y})");
            }
        }
        assert_eq!(
            Decision {
                threshold: Some(0.05),
                gap_closing: Some(GapClosing::default()),
            }
            .describe(),
            "cell where its probability > 0.05, gaps closed between cores > 0.90"
        );
    }

    #[test]
    fn small_seeds_are_dropped_so_one_cell_with_two_cores_is_not_split() {
        // One cell (p = 0.8 everywhere) with a large core on the left (0.95, 3 x 5) and a
        // 2-pixel core on the right.
        let mut p = Plane::filled(9, 5, 0.8f32);
        for y in 0..5 {
            for x in 0..3 {
                p.set(x, y, 0.95);
            }
        }
        p.set(7, 2, 0.95);
        p.set(7, 3, 0.95);
        let split = close_gaps(&p, 0.5, &GapClosing::default());
        assert_eq!(regions(9, 5, |i| split.data[i]).iter().max(), Some(&2));
        let whole = close_gaps(
            &p,
            0.5,
            &GapClosing {
                seed_threshold: 0.9,
                min_seed_area: 3,
            },
        );
        assert!(whole.data.iter().all(|&c| c));
    }

    #[test]
    fn the_choice_closes_gaps_only_where_that_scores_better() {
        let p = two_cells_with_a_gap();
        let truth = p.map(|v| v > 0.5);
        let mut truth = truth;
        truth.set(3, 2, false);
        // The truth has the membrane column whole. A plain threshold above 0.6 scores it
        // exactly (p = 0.1 on the membrane): Rand and pixel error 0, a tie with gap closing,
        // which goes to the plain threshold.
        let c = choose_decision(std::slice::from_ref(&p), std::slice::from_ref(&truth)).unwrap();
        assert_eq!(c.decision.gap_closing, None);
        assert!(c.decision.threshold.unwrap() >= 0.6, "{c:?}");
        assert_eq!(c.cost(), 0.0);
        // Make the membrane as cell-like as the cells' edges (0.7): every plain threshold
        // below 0.7 merges the two cells and every one above drops a cell column; gap
        // closing with seeds above 0.9 in the cores keeps both whole.
        let mut p2 = Plane::filled(7, 5, 0.95f32);
        for y in 0..5 {
            p2.set(3, y, 0.7);
            p2.set(2, y, 0.75);
            p2.set(4, y, 0.75);
        }
        p2.set(3, 2, 0.8);
        let c = choose_decision(std::slice::from_ref(&p2), std::slice::from_ref(&truth)).unwrap();
        assert!(c.decision.gap_closing.is_some(), "{c:?}");
        // Its mask keeps the two cells apart (the line may jog by a pixel round the spike),
        // and scores better than the best plain threshold.
        let mask = c.decision.classes(&two_class(&p2));
        assert_eq!(regions(7, 5, |i| mask.data[i] == 2).iter().max(), Some(&2));
        let plain = PLAIN_THRESHOLDS
            .iter()
            .map(|&t| {
                let m = p2.map(|v| v > t);
                let s = crate::metrics::mask_errors(&[m], std::slice::from_ref(&truth));
                s.rand_error + s.pixel_error
            })
            .fold(f64::INFINITY, f64::min);
        assert!(c.cost() < plain, "{c:?} {plain}");
        assert!(choose_decision(&[], &[]).is_none());
    }

    #[test]
    fn a_decision_is_checked() {
        assert!(Decision::threshold(Some(0.3)).check().is_ok());
        assert!(Decision::threshold(Some(1.5)).check().is_err());
        let seeds = |s| Decision {
            threshold: Some(0.3),
            gap_closing: Some(GapClosing {
                seed_threshold: s,
                min_seed_area: 0,
            }),
        };
        assert!(seeds(0.9).check().is_ok());
        assert!(
            seeds(0.2)
                .check()
                .unwrap_err()
                .contains("below the mask threshold")
        );
        assert!(seeds(f32::NAN).check().is_err());
        assert!(seeds(1.5).check().is_err());
    }
}
