//! The app's windows: the augmentation view, the comparison of two model versions, label import.

use crate::app::augment_view::label_image;
use crate::app::compare::{CompareSide, heat_image, loss, name, utc_date};
use crate::app::studio::StudioApp;
use crate::data::LabelEncoding;
use crate::render::deform::{DeformCallback, DeformUniforms};
use eframe::egui;

pub(crate) fn augment_window(app: &mut StudioApp, ctx: &egui::Context) {
    if !app.augment.open {
        return;
    }
    let mut open = true;
    // The deformation is shown on the first channel, in its window.
    let display = app.doc.as_ref().map(|d| {
        let first = d.display.channels.first();
        let (lo, hi) = first.map_or((d.display.min, d.display.max), |c| (c.min, c.max));
        (lo, hi, d.display.gamma)
    });
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
                    for caption in ["deformed image, with the warped grid", "deformed labels"] {
                        ui.add_sized([side, 16.0], egui::Label::new(egui::RichText::new(caption).strong()));
                    }
                });
                ui.horizontal(|ui| {
                    let (r, _) = ui.allocate_exact_size(size, egui::Sense::hover());
                    a.image_rect = r;
                    let scale = r.width() / s.image.width as f32;
                    if renderer_ready {
                        let ppp = ui.ctx().pixels_per_point();
                        let uniforms = DeformUniforms {
                            a: [r.min.x * ppp, r.min.y * ppp, scale * ppp, d.2],
                            b: [d.0, d.1, a.grid_spacing.max(1.0), 0.75 * ppp],
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

pub(crate) fn compare_window(app: &mut StudioApp, ctx: &egui::Context) {
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

pub(crate) fn import_window(app: &mut StudioApp, ctx: &egui::Context) {
    if !app.import.open {
        return;
    }
    let mut open = true;
    let mut start = false;
    let mut browse = false;
    let importing = app.jobs.running(crate::app::jobs::JobKind::Import);
    egui::Window::new("Import labels")
        .open(&mut open)
        .resizable(false)
        .show(ctx, |ui| {
            let v = &mut app.import;
            ui.horizontal(|ui| {
                ui.label("file");
                ui.text_edit_singleline(&mut v.path);
                if ui.button("Browse…").clicked() {
                    browse = true;
                }
            });
            ui.label("How the file's values are read:");
            for (enc, what) in [
                (
                    LabelEncoding::Classes,
                    "classes: 0 unlabelled, k = class k (what unet-studio saves)",
                ),
                (
                    LabelEncoding::Binary,
                    "binary: 0 background (class 1), anything else foreground (class 2)",
                ),
                (
                    LabelEncoding::Instances,
                    "instances: 0 background, each object id foreground (class 2)",
                ),
            ] {
                ui.radio_value(&mut v.encoding, enc, what);
            }
            ui.checkbox(
                &mut v.merge,
                "keep painted labels where the file has none (0)",
            );
            start = ui
                .add_enabled(
                    !v.path.trim().is_empty() && !importing,
                    egui::Button::new("Import"),
                )
                .clicked();
            if importing {
                ui.spinner();
            }
        });
    app.import.open &= open;
    if browse {
        use crate::app::dialogs::{Pick, Purpose, image_filters};
        app.ask_path(
            Purpose::ImportLabels,
            Pick::File(image_filters("label images")),
        );
    }
    if start {
        app.start_import();
    }
}
