//! Comparing two saved model versions side by side: their metadata (date, iterations, losses,
//! labels they were trained on), their predictions of the shown slice, how often the two agree,
//! and how many of the painted labels of that slice each one gets wrong. The predictions run
//! in a background job.

use std::path::PathBuf;

use eframe::egui;

use crate::data::Plane;
use crate::jobs::Job;
use crate::ml::{MlError, argmax_classes, load_checkpoint, predict_fitting};
use crate::preprocess::{D4, normalize_percentile};

use super::StudioApp;
use crate::project::models::VersionInfo;

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
    pub(super) job: Option<Job<Result<Comparison, MlError>>>,
    textures: Option<[egui::TextureHandle; 2]>,
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
fn label_error(mask: &Plane<u16>, labels: &Plane<u8>) -> Option<f64> {
    let (mut n, mut wrong) = (0usize, 0usize);
    for (&m, &l) in mask.data.iter().zip(&labels.data) {
        if l > 0 {
            n += 1;
            wrong += usize::from(m != u16::from(l));
        }
    }
    (n > 0).then(|| wrong as f64 / n as f64)
}

impl StudioApp {
    /// Compares the two ticked versions on the shown slice, in the background.
    pub fn compare_selected(&mut self) {
        let [a, b] = match self.compare.selected.as_slice() {
            [a, b] => [a.clone(), b.clone()],
            _ => return,
        };
        let Some(doc) = &self.doc else { return };
        if self.compare.job.is_some() {
            return;
        }
        let versions: Vec<VersionInfo> = [&a, &b]
            .iter()
            .filter_map(|d| self.models.history.iter().find(|v| &v.dir == *d).cloned())
            .collect();
        let Ok([va, vb]) = <[VersionInfo; 2]>::try_from(versions) else {
            return;
        };
        let slice = self.view.slice;
        let image = normalize_percentile(&doc.stack.slices[slice]);
        let labels = doc.labels[slice].clone();
        let compute = self.models.compute.clone();
        // The prediction tiles the app uses for these networks on this device.
        let tiles = [&va, &vb].map(|v| self.models.tile_for(&v.meta.unet, false));
        self.compare.open = true;
        self.compare.textures = None;
        self.compare.job = Some(Job::spawn("compare", self.waker.clone(), move |ctx| {
            let side = |v: VersionInfo, tile: usize| -> Result<CompareSide, MlError> {
                let ckpt = load_checkpoint(&v.dir)?;
                let model = ckpt.model(&compute.device)?;
                let unet = &ckpt.meta.unet;
                let (_, probs) = predict_fitting(
                    &model,
                    unet,
                    &image,
                    tile,
                    &compute.device,
                    &ctx.cancel,
                    &mut |_, _| {},
                    &mut |_, _| {},
                    &[D4::default()],
                )?;
                let label_error = label_error(&argmax_classes(&probs), &labels);
                Ok(CompareSide {
                    version: v,
                    probs,
                    label_error,
                })
            };
            let first = side(va, tiles[0])?;
            let second = side(vb, tiles[1])?;
            let (ma, mb) = (argmax_classes(&first.probs), argmax_classes(&second.probs));
            let same = ma.data.iter().zip(&mb.data).filter(|(a, b)| a == b).count();
            Ok(Comparison {
                slice,
                agreement: same as f64 / ma.data.len().max(1) as f64,
                sides: [first, second],
            })
        }));
    }

    pub(super) fn poll_compare(&mut self) {
        if let Some(job) = &mut self.compare.job
            && let Some(res) = job.poll()
        {
            self.compare.job = None;
            match res {
                Ok(c) => self.compare.result = Some(c),
                Err(MlError::Cancelled) => {}
                Err(e) => self.error = Some(format!("comparing versions failed: {e}")),
            }
        }
    }
}

/// Heat colours (black, red, yellow, white) of a probability plane, as the viewer's overlay.
fn heat_image(p: &Plane<f32>) -> egui::ColorImage {
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
fn loss(l: Option<f32>) -> String {
    l.map_or("-".to_string(), |l| format!("{l:.4}"))
}

fn name(v: &VersionInfo) -> String {
    v.dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(super) fn compare_window(app: &mut StudioApp, ctx: &egui::Context) {
    if !app.compare.open {
        return;
    }
    let mut open = true;
    let class = app.models.overlay_class.max(1) as usize;
    egui::Window::new("Compare model versions")
        .open(&mut open)
        .default_size([700.0, 520.0])
        .show(ctx, |ui| {
            let c = &mut app.compare;
            let Some(r) = &c.result else {
                ui.spinner();
                return;
            };
            let [a, b] = &r.sides;
            // One row per property, the same function for both sides.
            type Row = (&'static str, fn(&CompareSide) -> String);
            let rows: [Row; 8] = [
                ("version", |s| name(&s.version)),
                ("saved", |s| utc_date(s.version.meta.created_unix_s)),
                ("iterations", |s| s.version.meta.iteration.to_string()),
                ("network", |s| {
                    let u = &s.version.meta.unet;
                    format!("base {} depth {}", u.base_channels, u.depth)
                }),
                ("training loss", |s| loss(s.version.meta.train_loss)),
                ("validation loss", |s| loss(s.version.meta.val_loss)),
                ("labels", |s| {
                    let hash = s.version.meta.labels_hash.as_deref().unwrap_or_default();
                    hash.chars().take(12).collect()
                }),
                ("wrong on this slice's labels", |s| {
                    s.label_error
                        .map_or("no labels".to_string(), |e| format!("{:.1} %", 100.0 * e))
                }),
            ];
            egui::Grid::new("compare").striped(true).show(ui, |ui| {
                for (what, show) in rows {
                    ui.label(what);
                    ui.label(show(a));
                    ui.label(show(b));
                    ui.end_row();
                }
            });
            ui.label(format!(
                "slice {}: the two versions predict the same class for {:.1} % of the pixels; \
                 below, the probability of class {class}",
                r.slice,
                100.0 * r.agreement
            ));
            let textures = c.textures.get_or_insert_with(|| {
                let k = |s: &CompareSide| (class - 1).min(s.probs.len().saturating_sub(1));
                [
                    ctx.load_texture(
                        "compare a",
                        heat_image(&a.probs[k(a)]),
                        egui::TextureOptions::NEAREST,
                    ),
                    ctx.load_texture(
                        "compare b",
                        heat_image(&b.probs[k(b)]),
                        egui::TextureOptions::NEAREST,
                    ),
                ]
            });
            let w = a.probs.first().map_or(1, |p| p.width.max(1)) as f32;
            let h = a.probs.first().map_or(1, |p| p.height) as f32;
            let side = (ui.available_width() / 2.0 - 8.0).clamp(64.0, 512.0);
            ui.horizontal(|ui| {
                for t in textures.iter() {
                    ui.add(egui::Image::new((t.id(), egui::vec2(side, side * h / w))));
                }
            });
        });
    app.compare.open = open;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_by_hand() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        // 2000-02-29 12:34 UTC: a leap day of a century divisible by 400.
        assert_eq!(utc_date(951_827_640), "2000-02-29 12:34 UTC");
        // 2026-11-25 10:29 UTC.
        assert_eq!(utc_date(1_795_602_540), "2026-11-25 10:29 UTC");
    }

    #[test]
    fn label_error_counts_labelled_pixels_only() {
        let mask = Plane::from_vec(4, 1, vec![1u16, 2, 2, 1]).unwrap();
        let labels = Plane::from_vec(4, 1, vec![0u8, 2, 1, 0]).unwrap();
        assert_eq!(label_error(&mask, &labels), Some(0.5));
        assert_eq!(label_error(&mask, &Plane::filled(4, 1, 0)), None);
    }

    #[test]
    fn two_ticks_at_most() {
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
