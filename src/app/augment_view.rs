//! The augmentation view: one seeded elastic deformation of the shown slice (the paper's
//! 3x3 grid, Gaussian displacements, bicubic interpolation), the deformed image and labels
//! side by side, and the displacement arrows over the deformed image.

use eframe::egui;

use crate::data::Plane;
use crate::jobs::Job;
use crate::preprocess::{DeformationField, ElasticConfig, Interpolation, warp_f32, warp_nearest};

use super::StudioApp;
use super::document::Display;

/// A computed deformation sample.
pub struct AugmentSample {
    /// The field (seed, control vectors).
    pub field: DeformationField,
    /// Deformed raw image.
    pub image: Plane<f32>,
    /// Deformed labels (nearest neighbour: only existing label values).
    pub labels: Plane<u8>,
    /// Dense displacement, for the arrows.
    pub dx: Plane<f32>,
    /// See `dx`.
    pub dy: Plane<f32>,
    /// Which slice it came from.
    pub slice: usize,
}

/// State of the augmentation window.
pub struct AugmentView {
    /// Window open.
    pub open: bool,
    /// Deformation parameters.
    pub config: ElasticConfig,
    /// Seed of the current sample.
    pub seed: u64,
    /// The current sample.
    pub sample: Option<AugmentSample>,
    pub(super) job: Option<Job<AugmentSample>>,
    textures: Option<(egui::TextureHandle, egui::TextureHandle)>,
    key: Option<(usize, u64, u32, usize)>,
}

impl Default for AugmentView {
    fn default() -> Self {
        Self {
            open: false,
            config: ElasticConfig::default(),
            seed: 1,
            sample: None,
            job: None,
            textures: None,
            key: None,
        }
    }
}

impl AugmentView {
    /// Whether a sample is being computed.
    pub fn pending(&self) -> bool {
        self.job.is_some()
    }
}

fn grey_image(p: &Plane<f32>, d: &Display) -> egui::ColorImage {
    let span = (d.max - d.min).max(1e-20);
    let px: Vec<egui::Color32> = p
        .data
        .iter()
        .map(|&v| {
            let t = ((v - d.min) / span).clamp(0.0, 1.0).powf(d.gamma);
            egui::Color32::from_gray((t * 255.0) as u8)
        })
        .collect();
    egui::ColorImage::new([p.width, p.height], px)
}

fn label_image(p: &Plane<u8>, colours: &[[u8; 3]]) -> egui::ColorImage {
    let px: Vec<egui::Color32> = p
        .data
        .iter()
        .map(|&l| match l {
            0 => egui::Color32::from_gray(25),
            l => {
                let c = colours
                    .get(l as usize - 1)
                    .copied()
                    .unwrap_or_else(|| super::document::class_color(l as usize));
                egui::Color32::from_rgb(c[0], c[1], c[2])
            }
        })
        .collect();
    egui::ColorImage::new([p.width, p.height], px)
}

impl StudioApp {
    /// Draws a new random deformation (next seed).
    pub fn new_augment_sample(&mut self) {
        self.augment.seed = self.augment.seed.wrapping_add(1);
    }

    pub(super) fn poll_augment(&mut self) {
        if let Some(job) = &mut self.augment.job
            && let Some(s) = job.poll()
        {
            self.augment.job = None;
            self.augment.textures = None;
            self.augment.sample = Some(s);
        }
        if !self.augment.open || self.augment.job.is_some() {
            return;
        }
        let Some(doc) = &self.doc else { return };
        let cfg = self.augment.config;
        let key = (
            self.view.slice,
            self.augment.seed,
            cfg.sigma_px.to_bits(),
            cfg.grid,
        );
        if self.augment.key == Some(key) {
            return;
        }
        self.augment.key = Some(key);
        let slice = self.view.slice;
        let image = doc.stack.slices[slice].clone();
        let labels = doc.labels[slice].clone();
        let seed = self.augment.seed;
        self.augment.job = Some(Job::spawn("deform", self.waker.clone(), move |_| {
            let field = DeformationField::random(image.width, image.height, &cfg, seed);
            let (dx, dy) = field.dense();
            AugmentSample {
                image: warp_f32(&image, &dx, &dy, Interpolation::Bicubic),
                labels: warp_nearest(&labels, &dx, &dy),
                field,
                dx,
                dy,
                slice,
            }
        }));
    }
}

pub(super) fn augment_window(app: &mut StudioApp, ctx: &egui::Context) {
    if !app.augment.open {
        return;
    }
    let mut open = true;
    let display = app.doc.as_ref().map(|d| d.display);
    let colours: Vec<[u8; 3]> = app
        .doc
        .as_ref()
        .map(|d| d.classes.iter().map(|c| c.color).collect())
        .unwrap_or_default();
    egui::Window::new("Augmentation: elastic deformation")
        .open(&mut open)
        .default_size([760.0, 460.0])
        .show(ctx, |ui| {
            let a = &mut app.augment;
            ui.horizontal(|ui| {
                ui.add(egui::Slider::new(&mut a.config.sigma_px, 0.0..=30.0).text("sigma (px)"));
                ui.add(egui::Slider::new(&mut a.config.grid, 2..=9).text("grid"));
                ui.label(format!("seed {}", a.seed));
            });
            let new_sample = ui.button("New sample").clicked();
            if let (Some(s), Some(d)) = (&a.sample, display) {
                let (img_tex, lab_tex) = a.textures.get_or_insert_with(|| {
                    (
                        ctx.load_texture("deformed image", grey_image(&s.image, &d), egui::TextureOptions::NEAREST),
                        ctx.load_texture("deformed labels", label_image(&s.labels, &colours), egui::TextureOptions::NEAREST),
                    )
                });
                ui.label(format!(
                    "slice {}: largest control displacement {:.1} px; arrows point to where each pixel is sampled from",
                    s.slice,
                    s.field.max_control_displacement()
                ));
                let side = (ui.available_width() / 2.0 - 8.0).clamp(64.0, 512.0);
                let size = egui::vec2(side, side * s.image.height as f32 / s.image.width.max(1) as f32);
                ui.horizontal(|ui| {
                    let r = ui.add(egui::Image::new((img_tex.id(), size))).rect;
                    // Displacement arrows on a 12 x 12 lattice.
                    let painter = ui.painter_at(r);
                    let scale = r.width() / s.image.width as f32;
                    for j in 0..12 {
                        for i in 0..12 {
                            let x = ((i as f32 + 0.5) / 12.0 * s.image.width as f32) as usize;
                            let y = ((j as f32 + 0.5) / 12.0 * s.image.height as f32) as usize;
                            let p = r.min + egui::vec2(x as f32, y as f32) * scale;
                            let d = egui::vec2(s.dx.at(x, y), s.dy.at(x, y)) * scale;
                            painter.arrow(p, d, egui::Stroke::new(1.5, egui::Color32::from_rgb(255, 200, 0)));
                        }
                    }
                    ui.add(egui::Image::new((lab_tex.id(), size)));
                });
            } else {
                ui.spinner();
            }
            if new_sample {
                a.seed = a.seed.wrapping_add(1);
            }
        });
    app.augment.open = open;
}
