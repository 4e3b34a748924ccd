//! The augmentation view: one seeded elastic deformation of the shown slice (the paper's
//! 3x3 grid, Gaussian displacements, bicubic interpolation), the deformed image with the
//! deformation as a warped grid (WGSL, `shaders/deform.wgsl`) and displacement arrows, and the
//! deformed labels beside it.

use eframe::egui;

use crate::data::Plane;
use crate::jobs::Job;
use crate::preprocess::{DeformationField, ElasticConfig, Interpolation, warp_f32, warp_nearest};
use crate::render::deform::{DeformCallback, DeformQueue, DeformUniforms, DeformUpload};

use super::StudioApp;

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
    /// Spacing of the warped grid in source pixels (0 hides it).
    pub grid_spacing: f32,
    /// Where the deformed image was drawn in the last frame (screen points).
    pub image_rect: egui::Rect,
    pub(super) job: Option<Job<AugmentSample>>,
    labels_texture: Option<egui::TextureHandle>,
    upload: DeformQueue,
    key: Option<(usize, u64, u32, usize)>,
}

impl Default for AugmentView {
    fn default() -> Self {
        Self {
            open: false,
            config: ElasticConfig::default(),
            seed: 1,
            sample: None,
            grid_spacing: 32.0,
            image_rect: egui::Rect::NOTHING,
            job: None,
            labels_texture: None,
            upload: DeformQueue::default(),
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
                    .unwrap_or_else(|| crate::project::settings::class_color(l as usize));
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
            self.augment.labels_texture = None;
            *self
                .augment
                .upload
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(DeformUpload {
                width: s.image.width as u32,
                height: s.image.height as u32,
                image: s.image.data.clone(),
                field: s
                    .dx
                    .data
                    .iter()
                    .zip(&s.dy.data)
                    .map(|(&x, &y)| [x, y])
                    .collect(),
            });
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
    let renderer_ready = app.renderer_ready;
    egui::Window::new("Augmentation: elastic deformation")
        .open(&mut open)
        .default_size([760.0, 460.0])
        .show(ctx, |ui| {
            let a = &mut app.augment;
            ui.horizontal(|ui| {
                ui.add(egui::Slider::new(&mut a.config.sigma_px, 0.0..=30.0).text("sigma (px)"));
                ui.add(egui::Slider::new(&mut a.config.grid, 2..=9).text("grid"));
                ui.add(egui::Slider::new(&mut a.grid_spacing, 0.0..=128.0).text("grid lines (px)"));
                ui.label(format!("seed {}", a.seed));
            });
            let new_sample = ui.button("New sample").clicked();
            if let (Some(s), Some(d)) = (&a.sample, display) {
                let lab_tex = a.labels_texture.get_or_insert_with(|| {
                    ctx.load_texture("deformed labels", label_image(&s.labels, &colours), egui::TextureOptions::NEAREST)
                });
                ui.label(format!(
                    "slice {}: largest control displacement {:.1} px; the grid lines are straight \
                     lines of the original image, the arrows point to where each pixel is sampled from",
                    s.slice,
                    s.field.max_control_displacement()
                ));
                let side = (ui.available_width() / 2.0 - 8.0).clamp(64.0, 512.0);
                let size = egui::vec2(side, side * s.image.height as f32 / s.image.width.max(1) as f32);
                ui.horizontal(|ui| {
                    let (r, _) = ui.allocate_exact_size(size, egui::Sense::hover());
                    a.image_rect = r;
                    let scale = r.width() / s.image.width as f32;
                    if renderer_ready {
                        let ppp = ui.ctx().pixels_per_point();
                        let uniforms = DeformUniforms {
                            a: [r.min.x * ppp, r.min.y * ppp, scale * ppp, d.gamma],
                            b: [d.min, d.max, a.grid_spacing.max(1.0), 0.75 * ppp],
                            c: [
                                s.image.width as f32,
                                s.image.height as f32,
                                if a.grid_spacing > 0.0 { 0.85 } else { 0.0 },
                                0.0,
                            ],
                        };
                        ui.painter().add(eframe::egui_wgpu::Callback::new_paint_callback(
                            r,
                            DeformCallback {
                                uniforms,
                                upload: a.upload.clone(),
                            },
                        ));
                    } else {
                        ui.painter().rect_filled(r, 0.0, egui::Color32::from_gray(20));
                    }
                    // Displacement arrows on a 12 x 12 lattice.
                    let painter = ui.painter_at(r);
                    for j in 0..12 {
                        for i in 0..12 {
                            let x = ((i as f32 + 0.5) / 12.0 * s.image.width as f32) as usize;
                            let y = ((j as f32 + 0.5) / 12.0 * s.image.height as f32) as usize;
                            let p = r.min + egui::vec2(x as f32, y as f32) * scale;
                            let d = egui::vec2(s.dx.at(x, y), s.dy.at(x, y)) * scale;
                            painter.arrow(p, d, egui::Stroke::new(1.5, egui::Color32::from_rgb(80, 200, 255)));
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
