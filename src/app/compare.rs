//! Comparing two saved model versions side by side: their metadata (date, iterations, losses,
//! labels they were trained on), their predictions of the shown slice, how often the two agree,
//! and how many of the painted labels of that slice each one gets wrong. The predictions run
//! in a background job.
//!
//! This file holds the comparison's state and arithmetic; its commands are in
//! `actions/compare.rs`, its window in [`crate::ui::windows`].

use crate::data::Plane;
use crate::project::models::VersionInfo;
use eframe::egui;
use std::path::PathBuf;

/// One side of a comparison.
#[derive(Clone, Debug)]
pub struct CompareSide {
    /// The version.
    pub version: VersionInfo,
    /// Its class probabilities of the slice (class `k` at index `k - 1`).
    pub probs: Vec<Plane<f32>>,
    /// Fraction of the slice's labelled pixels whose predicted class differs from the label
    /// (`None` when the slice has no labels).
    pub label_error: Option<f64>,
}

/// Two versions on one slice.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// The slice predicted.
    pub slice: usize,
    /// The two versions, in the order chosen.
    pub sides: [CompareSide; 2],
    /// Fraction of the slice's pixels where both predict the same class.
    pub agreement: f64,
}

/// State of the comparison window.
#[derive(Default)]
pub struct CompareView {
    /// Versions ticked in the history (at most two, oldest tick dropped first).
    pub selected: Vec<PathBuf>,
    /// The last comparison.
    pub result: Option<Comparison>,
    /// Window open.
    pub open: bool,
    pub(crate) textures: Option<[egui::TextureHandle; 2]>,
}

impl CompareView {
    /// Ticks or unticks a version; keeps the two most recent ticks.
    pub fn toggle(&mut self, dir: &PathBuf) {
        if let Some(i) = self.selected.iter().position(|d| d == dir) {
            self.selected.remove(i);
        } else {
            self.selected.push(dir.clone());
            if self.selected.len() > 2 {
                self.selected.remove(0);
            }
        }
    }
}

/// Fraction of labelled pixels (label > 0) whose class in `mask` differs.
pub(crate) fn label_error(mask: &Plane<u16>, labels: &Plane<u8>) -> Option<f64> {
    let (mut n, mut wrong) = (0usize, 0usize);
    for (&m, &l) in mask.data.iter().zip(&labels.data) {
        if l > 0 {
            n += 1;
            wrong += usize::from(m != u16::from(l));
        }
    }
    (n > 0).then(|| wrong as f64 / n as f64)
}

/// Heat colours (black, red, yellow, white) of a probability plane, as the viewer's overlay.
pub(crate) fn heat_image(p: &Plane<f32>) -> egui::ColorImage {
    let px = p
        .data
        .iter()
        .map(|&v| {
            let t = v.clamp(0.0, 1.0);
            let c = |x: f32| (x.clamp(0.0, 1.0) * 255.0) as u8;
            egui::Color32::from_rgb(c(3.0 * t), c(3.0 * t - 1.0), c(3.0 * t - 2.0))
        })
        .collect();
    egui::ColorImage::new([p.width, p.height], px)
}

/// `YYYY-MM-DD HH:MM UTC` of a Unix time (days to the proleptic Gregorian calendar after
/// H. Hinnant's `civil_from_days`).
pub fn utc_date(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// A loss for the table, `-` when unknown.
pub(crate) fn loss(l: Option<f32>) -> String {
    l.map_or("-".to_string(), |l| format!("{l:.4}"))
}

pub(crate) fn name(v: &VersionInfo) -> String {
    v.dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn dates_by_hand() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        // 2000-02-29 12:34 UTC: a leap day of a century divisible by 400.
        assert_eq!(utc_date(951_827_640), "2000-02-29 12:34 UTC");
        // 2026-11-25 10:29 UTC.
        assert_eq!(utc_date(1_795_602_540), "2026-11-25 10:29 UTC");
    }

    #[test]
    pub(crate) fn label_error_counts_labelled_pixels_only() {
        let mask = Plane::from_vec(4, 1, vec![1u16, 2, 2, 1]).unwrap();
        let labels = Plane::from_vec(4, 1, vec![0u8, 2, 1, 0]).unwrap();
        assert_eq!(label_error(&mask, &labels), Some(0.5));
        assert_eq!(label_error(&mask, &Plane::filled(4, 1, 0)), None);
    }

    #[test]
    pub(crate) fn two_ticks_at_most() {
        let mut c = CompareView::default();
        let [a, b, d] = ["a", "b", "d"].map(PathBuf::from);
        c.toggle(&a);
        c.toggle(&b);
        c.toggle(&d);
        assert_eq!(c.selected, vec![b.clone(), d.clone()]);
        c.toggle(&b);
        assert_eq!(c.selected, vec![d]);
    }
}
