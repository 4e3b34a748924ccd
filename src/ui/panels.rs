//! Menu bar, tool panel and status bar.

use eframe::egui;

use crate::app::dialogs::{Pick, Purpose, export_filters, image_filters};
use crate::app::studio::{OpenRequest, StudioApp, Tool};
use crate::project::settings::{ClassInfo, class_color};

pub(crate) fn top_bar(app: &mut StudioApp, ui: &mut egui::Ui) {
    egui::Panel::top("menu").show(ui, |ui| {
        ui.horizontal(|ui| {
            ui.menu_button("File", |ui| {
                if ui.button("Open image or stack…").clicked() {
                    ui.close();
                    app.ask_path(Purpose::OpenStack, Pick::File(image_filters("images")));
                }
                if ui.button("Open folder as stack…").clicked() {
                    ui.close();
                    app.ask_path(Purpose::OpenFolder, Pick::Folder);
                }
                let mut reopen = None;
                ui.add_enabled_ui(!app.recent.is_empty(), |ui| {
                    ui.menu_button("Recent", |ui| {
                        for p in &app.recent {
                            if ui.button(p.display().to_string()).clicked() {
                                reopen = Some(p.clone());
                                ui.close();
                            }
                        }
                    });
                });
                if let Some(p) = reopen {
                    app.open(OpenRequest {
                        images: p,
                        labels: None,
                        model: None,
                        ..Default::default()
                    });
                }
                if ui.button("Open sample").clicked() {
                    ui.close();
                    app.open(OpenRequest::sample());
                }
                ui.separator();
                if ui
                    .add_enabled(app.doc.is_some(), egui::Button::new("Import labels…"))
                    .clicked()
                {
                    ui.close();
                    app.import.open = true;
                }
                if ui
                    .add_enabled(app.doc.is_some(), egui::Button::new("Save labels"))
                    .clicked()
                {
                    ui.close();
                    app.save_labels();
                }
                ui.separator();
                if ui.button("Quit").clicked() {
                    ui.close();
                    app.quit(ui.ctx());
                }
            });
            ui.menu_button("Edit", |ui| {
                let (u, r) = app
                    .doc
                    .as_ref()
                    .map_or((false, false), |d| (d.can_undo(), d.can_redo()));
                if ui
                    .add_enabled(u, egui::Button::new("Undo  (Ctrl+Z)"))
                    .clicked()
                {
                    app.undo();
                }
                if ui
                    .add_enabled(r, egui::Button::new("Redo  (Ctrl+Shift+Z)"))
                    .clicked()
                {
                    app.redo();
                }
            });
            ui.menu_button("Export", |ui| {
                use crate::app::export::ExportKind;
                for kind in ExportKind::ALL {
                    if ui
                        .add_enabled(app.doc.is_some(), egui::Button::new(kind.label()))
                        .clicked()
                    {
                        ui.close();
                        app.ask_path(
                            Purpose::Export(kind),
                            Pick::Save(kind.default_name().into(), export_filters()),
                        );
                    }
                }
                if app.collection.is_some() {
                    ui.separator();
                    if ui
                        .add_enabled(
                            app.can_export_collection(),
                            egui::Button::new("Masks of every image…"),
                        )
                        .on_hover_text(
                            "Predicts every image of the collection with the current model and \
                             writes one mask per image (<image>.tif) into a folder.",
                        )
                        .clicked()
                    {
                        ui.close();
                        app.ask_path(Purpose::ExportCollection, Pick::Folder);
                    }
                }
            });
            ui.menu_button("Help", |ui| {
                if ui.button("Keyboard shortcuts  (?)").clicked() {
                    ui.close();
                    app.show_help = true;
                }
            });
        });
    });
}

pub(crate) fn status_bar(app: &mut StudioApp, ui: &mut egui::Ui) {
    egui::Panel::bottom("status").show(ui, |ui| {
        if let Some(e) = app.error.clone() {
            ui.horizontal(|ui| {
                ui.colored_label(egui::Color32::from_rgb(230, 80, 80), format!("Error: {e}"));
                if ui.button("Dismiss").clicked() {
                    app.error = None;
                }
            });
        }
        // The right-hand readout first; the status takes the rest of the row and is cut
        // short (in full on hover) instead of running under the readout.
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            ui.label(format!("display: {}", app.adapter));
            if let Some(r) = &app.viewer_readout() {
                ui.separator();
                ui.label(r);
            }
            ui.with_layout(egui::Layout::left_to_right(egui::Align::Center), |ui| {
                ui.add(egui::Label::new(app.status.as_str()).truncate())
                    .on_hover_text(app.status.as_str());
            });
        });
    });
}

pub(crate) fn side_panel(app: &mut StudioApp, ui: &mut egui::Ui) {
    let (mut undo_clicked, mut redo_clicked) = (false, false);
    let mut open_image = None;
    egui::Panel::left("tools")
        .resizable(true)
        .default_size(240.0)
        .show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                open_image = crate::ui::collection::image_list(app, ui);
                let Some(doc) = &mut app.doc else {
                    ui.label(if app.busy() {
                        "Opening…"
                    } else {
                        "No image open."
                    });
                    return;
                };
                ui.heading("Stack");
                if let Some(s) = crate::ui::stack::slice_sliders(ui, &doc.stack, app.view.slice) {
                    app.view.slice = s;
                    app.viewer.invalidate_slice();
                }
                ui.separator();
                ui.heading("Contrast");
                crate::ui::stack::contrast(ui, doc, app.view.slice);
                if ui.button("Fit to window").clicked() {
                    app.view.fit = true;
                }
                ui.separator();
                ui.heading("Labels");
                let counts = doc.class_counts();
                let mut recolour = false;
                for (i, c) in doc.classes.iter_mut().enumerate() {
                    let id = (i + 1) as u8;
                    ui.horizontal(|ui| {
                        ui.radio_value(&mut app.active_class, id, format!("{id}"));
                        recolour |= ui.color_edit_button_srgb(&mut c.color).changed();
                        let name_label = ui.label("name");
                        ui.add(egui::TextEdit::singleline(&mut c.name).desired_width(110.0))
                            .labelled_by(name_label.id);
                        ui.label(format!(
                            "{} px",
                            counts.get(id as usize).copied().unwrap_or(0)
                        ));
                    });
                }
                if doc.classes.len() < 255 && ui.button("Add class").clicked() {
                    let id = doc.classes.len() + 1;
                    doc.classes.push(ClassInfo {
                        name: format!("class {id}"),
                        color: class_color(id),
                    });
                    recolour = true;
                }
                if recolour {
                    app.viewer.invalidate_palette();
                }
                ui.separator();
                ui.heading("Tools");
                ui.horizontal(|ui| {
                    ui.selectable_value(&mut app.tool, Tool::Brush, "Brush (P)");
                    ui.selectable_value(&mut app.tool, Tool::Eraser, "Eraser (E)");
                    ui.selectable_value(&mut app.tool, Tool::Fill, "Fill (F)");
                    ui.selectable_value(&mut app.tool, Tool::Lasso, "Lasso (L)");
                });
                ui.add(egui::Slider::new(&mut app.brush_radius, 0.5..=50.0).text("brush radius"));
                ui.add(egui::Slider::new(&mut app.eraser_radius, 0.5..=50.0).text("eraser radius"));
                ui.checkbox(&mut app.preserve_labels, "Preserve existing labels");
                ui.add(egui::Slider::new(&mut app.label_opacity, 0.0..=1.0).text("opacity"));
                ui.checkbox(&mut app.show_labels, "Show labels");
                ui.checkbox(&mut app.show_only_labelled, "Show only labelled");
                ui.horizontal(|ui| {
                    undo_clicked = ui
                        .add_enabled(doc.can_undo(), egui::Button::new("Undo"))
                        .clicked();
                    redo_clicked = ui
                        .add_enabled(doc.can_redo(), egui::Button::new("Redo"))
                        .clicked();
                });
                ui.label(format!("Labels file: {}", doc.label_path.display()));
                ui.label(if doc.dirty {
                    "unsaved changes"
                } else {
                    "saved"
                });
            });
        });
    // Through the app, which brings the changed slice into view.
    if undo_clicked {
        app.undo();
    }
    if redo_clicked {
        app.redo();
    }
    if let Some(i) = open_image {
        app.open_collection_image(i);
    }
}

pub(crate) fn model_panel(app: &mut StudioApp, ui: &mut egui::Ui) {
    if app.doc.is_none() {
        return;
    }
    // A fixed width: a panel that grew with its content moved the buttons under the cursor.
    egui::Panel::right("model")
        .resizable(false)
        .exact_size(360.0)
        .show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| model_section(app, ui));
        });
}

fn model_section(app: &mut StudioApp, ui: &mut egui::Ui) {
    model_info(app, ui);
    run_settings(app, ui);
    run_buttons(app, ui);
    run_progress(app, ui);
    overlay_settings(app, ui);
    ui.separator();
    if ui.button("Augmentation view…").clicked() {
        app.augment.open = true;
    }
    history_section(app, ui);
}

/// The compute device, the tiles and the current network with its decision rule (or the
/// preset a first training starts from).
fn model_info(app: &mut StudioApp, ui: &mut egui::Ui) {
    use crate::ml::Preset;
    ui.heading("Model");
    ui.label(format!("compute: {}", app.models.compute.description));
    if let Some(why) = &app.models.compute.fallback_reason {
        ui.label(format!("(CPU because {why})"));
    }
    let mem = app.models.compute.memory;
    let tile = |t: Option<usize>| t.map_or("auto".to_string(), |t| format!("{t} px"));
    // The memory figures differ between machines: on hover only.
    ui.label(format!(
        "tiles: training {}, prediction {}",
        tile(app.models.tile_train),
        tile(app.models.tile_predict),
    ))
    .on_hover_text(format!(
        "The largest tiles that fit the device: memory budget {:.1} GB, largest buffer \
         {:.0} MB. Out of memory retries with a smaller tile.",
        mem.budget_bytes as f64 / 1e9,
        mem.max_tensor_bytes.min(mem.budget_bytes) as f64 / 1e6
    ));
    if !app.models.tile_note.is_empty() {
        ui.label(app.models.tile_note.as_str());
    }
    let channels = app.doc.as_ref().map_or(1, |d| d.stack.channels);
    let m = &mut app.models;
    if channels > 1 {
        input_channels(m, channels, ui);
    }
    let mut toggled = false;
    match &mut m.model {
        Some(model) => {
            ui.label(format!(
                "{} base channels, depth {}, {} iterations",
                model.unet.base_channels, model.unet.depth, model.iteration
            ));
            let name = model
                .unet
                .class_names
                .get(1)
                .map_or("class 2", String::as_str);
            ui.label(format!("mask: {}", model.decision.describe_for(name)))
                .on_hover_text(
                    "The decision rule is chosen with the model on held-out validation slices \
                 (the lowest sum of Rand and pixel errors); masks, exports and the mask \
                 overlay use it. Gap closing draws one-pixel watershed lines between \
                 confident cell cores where the threshold alone would join two cells.",
                );
            if model.unet.classes == 2 {
                let mut on = model.decision.gap_closing.is_some();
                toggled = ui
                    .checkbox(&mut on, "Close gaps (watershed lines)")
                    .on_hover_text(
                        "Watershed lines between confident cores of class 2 keep touching \
                         cells or nuclei apart (a post-processing step). Applies to the mask \
                         overlay and exports; the stack's model keeps the choice.",
                    )
                    .changed();
            }
        }
        None => {
            ui.label("No model yet: Train starts from scratch.");
            ui.horizontal(|ui| {
                ui.selectable_value(&mut m.preset, Preset::Lite, "lite");
                ui.selectable_value(&mut m.preset, Preset::Paper, "paper");
            });
        }
    }
    if toggled {
        app.toggle_gap_closing();
    }
}

/// Which channels of a multichannel stack the network reads: the model's, or, for a new
/// network, the ones ticked (all, up to 4, by default).
fn input_channels(m: &mut crate::app::model::ModelState, channels: usize, ui: &mut egui::Ui) {
    if let Some(model) = &m.model {
        let list: Vec<String> = model
            .unet
            .input_channel_list()
            .iter()
            .map(|c| (c + 1).to_string())
            .collect();
        ui.label(format!("the network reads channel(s) {}", list.join(", ")));
        return;
    }
    let mut picked: Vec<usize> = if m.train_channels.is_empty() {
        (0..channels.min(4)).collect()
    } else {
        m.train_channels.clone()
    };
    ui.horizontal_wrapped(|ui| {
        ui.label("a new network reads channel(s)");
        for c in 0..channels {
            let mut on = picked.contains(&c);
            if ui.checkbox(&mut on, format!("{}", c + 1)).changed() {
                if on {
                    picked.push(c);
                    picked.sort_unstable();
                } else if picked.len() > 1 {
                    // At least one channel stays ticked.
                    picked.retain(|&p| p != c);
                }
                m.train_channels = picked.clone();
            }
        }
    });
    if picked.len() > 4 {
        ui.label("a network reads at most 4 channels: untick some");
    }
}

/// Iterations, time limit and test-time augmentation.
fn run_settings(app: &mut StudioApp, ui: &mut egui::Ui) {
    let m = &mut app.models;
    ui.horizontal(|ui| {
        ui.add(
            egui::DragValue::new(&mut m.iterations)
                .range(1..=100_000)
                .prefix("iterations "),
        );
        ui.add(
            egui::DragValue::new(&mut m.minutes)
                .range(0.0..=24.0 * 60.0)
                .speed(0.5)
                .custom_formatter(|v, _| {
                    if v > 0.0 {
                        format!("time limit {v:.1} min")
                    } else {
                        "no time limit".into()
                    }
                })
                .custom_parser(|text| {
                    let number: String = text
                        .chars()
                        .filter(|c| c.is_ascii_digit() || *c == '.')
                        .collect();
                    number.parse().ok().or(Some(0.0))
                }),
        )
        .on_hover_text("0: no limit. The run ends at the limit or after the iterations.");
    });
    let mut tta = m.tta_views > 1;
    if ui
        .checkbox(&mut tta, "Predict with 8 flips and rotations")
        .on_hover_text(
            "Averages the predictions of the 8 flips and quarter turns of the image \
             (test-time augmentation): fewer gaps in membranes, 8 times the time.",
        )
        .changed()
    {
        m.tta_views = if tta { 8 } else { 1 };
    }
}

/// Train, Pause / Resume, Stop, Predict slice, Predict stack.
fn run_buttons(app: &mut StudioApp, ui: &mut egui::Ui) {
    let training = app.training();
    ui.horizontal_wrapped(|ui| {
        if ui
            .add_enabled(!training, egui::Button::new("Train"))
            .on_hover_text("Train (or fine-tune) on the painted labels of all slices")
            .clicked()
        {
            app.start_training();
        }
        let pause_label = if app.training_paused() {
            "Resume"
        } else {
            "Pause"
        };
        if ui
            .add_enabled(training, egui::Button::new(pause_label))
            .clicked()
        {
            app.toggle_pause_training();
        }
        if ui
            .add_enabled(training, egui::Button::new("Stop"))
            .clicked()
        {
            // A paused run stops too.
            app.stop_training();
        }
        let can_predict = app.models.model.is_some() && !app.predicting();
        if ui
            .add_enabled(can_predict, egui::Button::new("Predict slice"))
            .clicked()
        {
            app.predict_slice();
        }
        // A stack read slice by slice is not held predicted at once: its exports predict
        // every slice one at a time.
        let by_slice = app.doc.as_ref().is_some_and(|d| d.stack.on_demand());
        if ui
            .add_enabled(can_predict && !by_slice, egui::Button::new("Predict stack"))
            .on_disabled_hover_text(if by_slice {
                "This stack is read slice by slice: Export › Predicted masks predicts every slice, one at a time"
            } else {
                "Train or load a model first"
            })
            .clicked()
        {
            app.predict_stack();
        }
    });
    if let Some(job) = app.jobs.get(crate::app::jobs::JobKind::Predict) {
        ui.add(egui::ProgressBar::new(job.progress).text(job.message.clone()));
    }
    // An export that predicts slice by slice, with its progress and a way to stop it.
    let export = app
        .jobs
        .get(crate::app::jobs::JobKind::Export)
        .filter(|job| !job.message.is_empty())
        .map(|job| (job.progress, job.message.clone()));
    if let Some((progress, message)) = export {
        ui.horizontal(|ui| {
            ui.add(egui::ProgressBar::new(progress).text(format!("export: {message}")));
            if ui.button("Cancel export").clicked() {
                app.jobs.cancel(crate::app::jobs::JobKind::Export);
            }
        });
    }
}

/// The progress of a training run and its loss curves.
fn run_progress(app: &mut StudioApp, ui: &mut egui::Ui) {
    let training = app.training();
    let paused = app.training_paused();
    let m = &mut app.models;
    // The progress row and the loss plot are always there (empty before a run), so that
    // nothing below them moves when a run starts or ends.
    let total = m.iterations.max(1) as f32;
    let done = if training { m.losses.len() as f32 } else { 0.0 };
    let text = if training {
        let eta = if paused {
            ", paused".to_string()
        } else if m.its_per_s > 0.0 {
            format!(", {:.0} s left", (total - done) / m.its_per_s)
        } else {
            String::new()
        };
        let limit = if m.minutes > 0.0 {
            format!(" (time limit {:.1} min)", m.minutes)
        } else {
            String::new()
        };
        format!(
            "{done:.0}/{total:.0} at {:.2} it/s{eta}{limit}",
            m.its_per_s
        )
    } else {
        "not training".to_string()
    };
    ui.add(egui::ProgressBar::new(done / total).text(text));
    {
        egui_plot::Plot::new("loss")
            .height(110.0)
            .allow_scroll(false)
            .allow_drag(false)
            .allow_zoom(false)
            .x_axis_label("iteration of this run")
            .y_axis_label("loss (log10)")
            .legend(egui_plot::Legend::default())
            .show(ui, |p| {
                // A log axis: one early spike would flatten a linear plot to a line at 0.
                let log = |v: &[[f64; 2]]| -> Vec<[f64; 2]> {
                    v.iter().map(|&[x, y]| [x, y.max(1e-6).log10()]).collect()
                };
                p.line(egui_plot::Line::new("training loss", log(&m.losses)));
                if !m.val_losses.is_empty() {
                    p.line(egui_plot::Line::new("validation loss", log(&m.val_losses)));
                }
            });
        match m.losses.last() {
            Some(&[_, last]) => ui.label(format!("last loss {last:.4}")),
            None => ui.label("no run yet"),
        };
    }
}

/// The overlay shown on the canvas and its settings.
fn overlay_settings(app: &mut StudioApp, ui: &mut egui::Ui) {
    use crate::app::model::Overlay;
    let m = &mut app.models;
    ui.label("Overlay");
    ui.horizontal_wrapped(|ui| {
        ui.selectable_value(&mut m.overlay, Overlay::None, "none");
        ui.selectable_value(&mut m.overlay, Overlay::Probability, "probability");
        ui.selectable_value(&mut m.overlay, Overlay::Mask, "mask");
        ui.selectable_value(&mut m.overlay, Overlay::Uncertainty, "uncertainty");
        ui.selectable_value(&mut m.overlay, Overlay::WeightMap, "weight map");
    });
    overlay_legend(app, ui);
    let m = &mut app.models;
    if m.overlay == Overlay::WeightMap {
        ui.add(egui::Slider::new(&mut m.weights.w0, 0.0..=30.0).text("w0"));
        ui.add(egui::Slider::new(&mut m.weights.sigma_px, 0.5..=20.0).text("sigma (px)"));
        let (lo, hi) = m.overlay_range();
        heat_legend(ui, lo, hi);
        if app.jobs.running(crate::app::jobs::JobKind::WeightMap) {
            ui.label("computing…");
        } else if let Some((_, w)) = &m.weight_map {
            let max = w.data.iter().copied().fold(0.0f32, f32::max);
            ui.label(format!("max weight on this slice {max:.2}"));
        }
    }
    ui.add(egui::Slider::new(&mut m.overlay_class, 1..=8).text("overlay class"));
    ui.add(egui::Slider::new(&mut m.overlay_opacity, 0.0..=1.0).text("overlay opacity"));
}

/// What the overlay's colours mean, and a hint where the shown slice has no prediction.
fn overlay_legend(app: &StudioApp, ui: &mut egui::Ui) {
    use crate::app::model::Overlay;
    let m = &app.models;
    let predicted = m
        .probabilities
        .get(app.view.slice)
        .is_some_and(Option::is_some);
    let class_name = |k: u8| {
        app.doc
            .as_ref()
            .and_then(|d| d.classes.get(usize::from(k.max(1)) - 1))
            .map_or(format!("class {k}"), |c| c.name.clone())
    };
    match m.overlay {
        Overlay::None | Overlay::WeightMap => return,
        Overlay::Probability => {
            ui.label(format!(
                "probability of {} (class {}):",
                class_name(m.overlay_class),
                m.overlay_class
            ));
            heat_legend(ui, 0.0, 1.0);
        }
        Overlay::Uncertainty => {
            ui.label("uncertainty (entropy / ln K): 0 certain, 1 undecided");
            heat_legend(ui, 0.0, 1.0);
        }
        Overlay::Mask => {
            ui.horizontal_wrapped(|ui| {
                ui.label("mask:");
                for (k, c) in app.doc.iter().flat_map(|d| d.classes.iter()).enumerate() {
                    let [r, g, b] = c.color;
                    let (rect, _) =
                        ui.allocate_exact_size(egui::vec2(12.0, 12.0), egui::Sense::hover());
                    ui.painter()
                        .rect_filled(rect, 2.0, egui::Color32::from_rgb(r, g, b));
                    ui.label(format!("{} {}", k + 1, c.name));
                }
            });
        }
    }
    if !predicted {
        ui.label(format!(
            "slice {} has no prediction yet: Predict slice",
            app.view.slice
        ));
    }
}

/// A horizontal colour bar of the shader's heat map with its value range.
fn heat_legend(ui: &mut egui::Ui, lo: f32, hi: f32) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(200.0, 12.0), egui::Sense::hover());
    let heat = |t: f32| {
        let c = |v: f32| (v.clamp(0.0, 1.0) * 255.0) as u8;
        egui::Color32::from_rgb(c(3.0 * t), c(3.0 * t - 1.0), c(3.0 * t - 2.0))
    };
    let n = 40;
    for i in 0..n {
        let t0 = i as f32 / n as f32;
        let x0 = rect.left() + t0 * rect.width();
        let r = egui::Rect::from_min_max(
            egui::pos2(x0, rect.top()),
            egui::pos2(x0 + rect.width() / n as f32 + 0.5, rect.bottom()),
        );
        ui.painter().rect_filled(r, 0.0, heat(t0 + 0.5 / n as f32));
    }
    ui.horizontal(|ui| {
        ui.label(format!("{lo:.1}"));
        ui.add_space(150.0);
        ui.label(format!("{hi:.1}"));
    });
}

/// The shortcuts, as in napari's labels layer where one exists.
pub const SHORTCUTS: &[(&str, &str)] = &[
    ("P or 2", "brush"),
    ("E or 1", "eraser"),
    ("F or 3", "fill the clicked region"),
    ("L", "lasso: drag an outline, its inside is filled"),
    ("[  ]", "smaller / larger brush or eraser"),
    ("Ctrl+Z", "undo the last stroke"),
    ("Ctrl+Shift+Z, Ctrl+Y", "redo"),
    ("Left / Right, PageUp / PageDown", "previous / next slice"),
    ("mouse wheel, pinch", "zoom about the cursor"),
    ("middle drag, Space + drag", "pan"),
    ("? or F1", "this help"),
];

pub(crate) fn help_window(app: &mut StudioApp, ctx: &egui::Context) {
    let mut open = app.show_help;
    egui::Window::new("Keyboard shortcuts")
        .open(&mut open)
        .collapsible(false)
        .resizable(false)
        .show(ctx, |ui| {
            egui::Grid::new("shortcuts").striped(true).show(ui, |ui| {
                for (keys, what) in SHORTCUTS {
                    ui.label(egui::RichText::new(*keys).monospace());
                    ui.label(*what);
                    ui.end_row();
                }
            });
        });
    app.show_help = open;
}

fn history_section(app: &mut StudioApp, ui: &mut egui::Ui) {
    ui.separator();
    ui.label("Model history");
    let mut chosen = None;
    let mut ticked = None;
    egui::Grid::new("history").striped(true).show(ui, |ui| {
        for v in app.models.history.iter().rev() {
            let name = v
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut on = app.compare.selected.contains(&v.dir);
            if ui
                .checkbox(&mut on, &name)
                .on_hover_text("tick two versions to compare them")
                .changed()
            {
                ticked = Some(v.dir.clone());
            }
            ui.label(format!("{} it", v.meta.iteration));
            ui.label(
                v.meta
                    .val_loss
                    .or(v.meta.train_loss)
                    .map_or("-".into(), |l| format!("loss {l:.3}")),
            );
            if ui
                .add_enabled(!app.training(), egui::Button::new(format!("Use {name}")))
                .clicked()
            {
                chosen = Some(v.dir.clone());
            }
            ui.end_row();
        }
    });
    if let Some(dir) = ticked {
        app.compare.toggle(&dir);
    }
    if let Some(dir) = chosen {
        app.use_version(dir);
    }
    if app.models.history.len() >= 2
        && ui
            .add_enabled(
                app.compare.selected.len() == 2
                    && !app.jobs.running(crate::app::jobs::JobKind::Compare),
                egui::Button::new("Compare ticked versions"),
            )
            .on_hover_text("their metadata and their predictions of the shown slice side by side")
            .clicked()
    {
        app.compare_selected();
    }
    ui.horizontal_wrapped(|ui| {
        if ui
            .add_enabled(!app.training(), egui::Button::new("Load model…"))
            .on_hover_text("a model folder saved by unet-studio (app or command line)")
            .clicked()
        {
            app.ask_path(Purpose::LoadModel, Pick::Folder);
        }
        if ui
            .add_enabled(
                app.models.model.is_some(),
                egui::Button::new("Save model as…"),
            )
            .clicked()
        {
            app.ask_path(Purpose::SaveModel, Pick::Folder);
        }
        if ui
            .add_enabled(
                app.models.model.is_some() && !app.training(),
                egui::Button::new("Reset model"),
            )
            .clicked()
        {
            app.reset_model();
        }
    });
}
