//! Optional post-processing of predicted cell probabilities, reported apart from the raw
//! network in every table.
//!
//! **Gap closing by seeded watershed lines.** A thresholded mask merges two cells wherever
//! the membrane between them is faint for a few pixels. Confident cell cores (`p >
//! seed_threshold`) are taken as seeds and flooded over the whole image, most cell-like pixels
//! first ([`crate::metrics::thin_membranes`]); where two seeds' floods meet, a one-pixel
//! watershed line stays. The final mask is the thresholded mask with those lines added as
//! membrane: membranes the mask already has are kept as they are, and a gap between two
//! seeded cells is closed by a line along the least cell-like path.

use crate::data::Plane;
use crate::metrics::{regions, thin_membranes};

/// Settings of the gap closing.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GapClosing {
    /// Cell probability above which a pixel seeds a cell.
    pub seed_threshold: f32,
}

impl Default for GapClosing {
    fn default() -> Self {
        Self {
            seed_threshold: 0.9,
        }
    }
}

/// The cell mask of `p_cell` at `threshold` with the watershed lines between seeded cells
/// added as membrane.
pub fn close_gaps(p_cell: &Plane<f32>, threshold: f32, cfg: &GapClosing) -> Plane<bool> {
    let (w, h) = (p_cell.width, p_cell.height);
    let seeds = regions(w, h, |i| p_cell.data[i] > cfg.seed_threshold);
    let flooded = thin_membranes(&seeds, &p_cell.data, w, h);
    // A pixel the flood left unlabelled next to a labelled one is a watershed line: it was
    // reached and found two floods. Unlabelled pixels with no labelled neighbour were never
    // reached (no seed at all) and keep the thresholded value.
    let line =
        |i: usize| flooded[i] == 0 && crate::data::neighbours4(i, w, h).any(|j| flooded[j] != 0);
    Plane {
        width: w,
        height: h,
        data: (0..w * h)
            .map(|i| p_cell.data[i] > threshold && !line(i))
            .collect(),
    }
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
}
