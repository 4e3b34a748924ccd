//! The canvas: the slice drawn by the viewer's wgpu pipeline, painting, panning and zooming, the readout under the pointer.

use crate::app::model::Overlay;
use crate::app::studio::{StudioApp, Tool};
use crate::render::viewer::{
    DIM_UNLABELLED, GAP_LINES, OVERLAY_MAP, OVERLAY_MASK, OVERLAY_NONE, OVERLAY_PROBABILITY,
    OVERLAY_UNCERTAINTY, SHOW_LABELS,
};
use crate::render::{Upload, ViewUniforms, ViewerCallback};
use bytemuck::Zeroable as _;
use eframe::egui;
use eframe::egui_wgpu;

fn palette(app: &StudioApp) -> Box<[[u8; 4]; 256]> {
    let mut p = Box::new([[0u8; 4]; 256]);
    if let Some(d) = &app.doc {
        for (i, c) in d.classes.iter().enumerate().take(255) {
            p[i + 1] = [c.color[0], c.color[1], c.color[2], 255];
        }
        for (id, slot) in p.iter_mut().enumerate().skip(d.classes.len() + 1) {
            let c = crate::project::settings::class_color(id);
            *slot = [c[0], c[1], c[2], 255];
        }
    }
    p
}

/// Draws the open slice and handles the pointer over it: zoom, pan, the painting tools, the
/// readout, the uploads and uniforms of the viewer pipeline, and the tool outlines.
pub(crate) fn canvas(app: &mut StudioApp, ui: &mut egui::Ui) {
    let (rect, response) =
        ui.allocate_exact_size(ui.available_size(), egui::Sense::click_and_drag());
    app.canvas_rect = rect;
    let Some(doc) = &app.doc else {
        ui.painter()
            .rect_filled(rect, 0.0, egui::Color32::from_gray(20));
        return;
    };
    let (w, h) = (doc.stack.width as f32, doc.stack.height as f32);
    let display = doc.display.clone();
    let panning = zoom_and_pan(app, ui, rect, &response, (w, h));
    paint(app, ui, rect, &response, panning);
    app.viewer.readout = response
        .hover_pos()
        .and_then(|p| readout(app, app.screen_to_image(rect, p), (w, h)));
    if !app.renderer_ready {
        ui.painter()
            .rect_filled(rect, 0.0, egui::Color32::from_gray(20));
        return;
    }
    let Some(uploads) = uploads(app) else { return };
    let uniforms = uniforms(app, ui, rect, (w, h), display);
    if !uploads.is_empty() {
        app.viewer
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pending
            .extend(uploads);
    }
    ui.painter().add(egui_wgpu::Callback::new_paint_callback(
        rect,
        ViewerCallback {
            uniforms,
            uploads: app.viewer.queue.clone(),
        },
    ));
    outlines(app, ui, rect, &response);
    if let Some(size) = app.doc.as_ref().and_then(|d| d.stack.pixel_size.clone()) {
        scale_bar(ui, rect, app.view.zoom, &size);
    }
}

/// A scale bar in the bottom-left corner: a round length (1, 2 or 5 times a power of ten of
/// the stack's unit) about 120 points long at the current zoom.
fn scale_bar(ui: &egui::Ui, rect: egui::Rect, zoom: f32, size: &crate::data::PixelSize) {
    let per_point = size.x / f64::from(zoom.max(1e-6));
    let (length, points) = nice_length(120.0 * per_point, per_point);
    if !(points.is_finite() && points > 4.0) {
        return;
    }
    let y = rect.bottom() - 16.0;
    let x0 = rect.left() + 16.0;
    let bar = egui::Rect::from_min_size(egui::pos2(x0, y), egui::vec2(points as f32, 4.0));
    let p = ui.painter();
    p.rect_filled(bar.expand(1.0), 0.0, egui::Color32::from_black_alpha(160));
    p.rect_filled(bar, 0.0, egui::Color32::WHITE);
    p.text(
        egui::pos2(x0, y - 3.0),
        egui::Align2::LEFT_BOTTOM,
        format!("{length} {}", size.unit),
        egui::FontId::proportional(13.0),
        egui::Color32::WHITE,
    );
}

/// The round length (1, 2 or 5 times a power of ten) at most `about`, and its length in
/// points at `per_point` units per point.
fn nice_length(about: f64, per_point: f64) -> (f64, f64) {
    let power = 10f64.powf(about.log10().floor());
    let length = [5.0, 2.0, 1.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&l| l <= about)
        .unwrap_or(power);
    // Shown with the digits it needs (0.2, not 0.20000000000000001).
    let length = (length * 1e9).round() / 1e9;
    (length, length / per_point)
}

/// Fits the image into a new canvas, zooms with the wheel or a pinch about the cursor and pans
/// with the middle button (or the primary one while Space is held); returns whether it pans.
fn zoom_and_pan(
    app: &mut StudioApp,
    ui: &egui::Ui,
    rect: egui::Rect,
    response: &egui::Response,
    (w, h): (f32, f32),
) -> bool {
    let refit = app.view.fitted.is_some_and(|r| r != rect);
    if (app.view.fit || refit) && rect.width() > 0.0 && rect.height() > 0.0 {
        let z = (rect.width() / w).min(rect.height() / h);
        app.view.zoom = z;
        app.view.origin = egui::vec2(w / 2.0, h / 2.0) - rect.size() / (2.0 * z);
        app.view.fit = false;
        app.view.fitted = Some(rect);
    }

    // Zoom with the wheel or a pinch, about the cursor.
    if let Some(hover) = response.hover_pos() {
        let (scroll, pinch) = ui.input(|i| (i.smooth_scroll_delta.y, i.zoom_delta()));
        let factor = pinch * (scroll * 0.0025).exp();
        if (factor - 1.0).abs() > 1e-4 {
            let before = app.screen_to_image(rect, hover);
            app.view.zoom = (app.view.zoom * factor).clamp(0.02, 64.0);
            app.view.fitted = None;
            let after = app.screen_to_image(rect, hover);
            app.view.origin += egui::vec2(before.0 - after.0, before.1 - after.1);
        }
    }
    // Pan with the middle button, or the primary button while Space is held.
    let space = ui.input(|i| i.key_down(egui::Key::Space));
    let panning = response.dragged_by(egui::PointerButton::Middle)
        || (space && response.dragged_by(egui::PointerButton::Primary));
    if panning {
        app.view.origin -= response.drag_delta() / app.view.zoom;
        app.view.fitted = None;
    }

    panning
}

/// The painting tools under the primary button.
fn paint(
    app: &mut StudioApp,
    ui: &egui::Ui,
    rect: egui::Rect,
    response: &egui::Response,
    panning: bool,
) {
    let space = ui.input(|i| i.key_down(egui::Key::Space));
    let slice = app.view.slice;
    let preserve = app.preserve_labels;
    match app.tool {
        Tool::Brush | Tool::Eraser => {
            let painting = !panning && response.dragged_by(egui::PointerButton::Primary)
                || (!space && response.clicked_by(egui::PointerButton::Primary));
            if painting && let Some(p) = response.interact_pointer_pos() {
                let here = app.screen_to_image(rect, p);
                // A stroke starts where the button went down, not where the drag was
                // recognised.
                if app.viewer.last_paint.is_none()
                    && let Some(origin) = ui.input(|i| i.pointer.press_origin())
                {
                    app.viewer.last_paint = Some(app.screen_to_image(rect, origin));
                }
                let (radius, class) = if app.tool == Tool::Brush {
                    (app.brush_radius, app.active_class)
                } else {
                    (app.eraser_radius, 0)
                };
                if let Some(doc) = &mut app.doc {
                    doc.begin_stroke();
                    let from = app.viewer.last_paint.unwrap_or(here);
                    doc.paint_line(slice, from, here, radius, class, preserve);
                }
                app.viewer.last_paint = Some(here);
            }
        }
        Tool::Fill => {
            if !space
                && response.clicked_by(egui::PointerButton::Primary)
                && let Some(p) = response.interact_pointer_pos()
            {
                let (x, y) = app.screen_to_image(rect, p);
                let class = app.active_class;
                if x >= 0.0
                    && y >= 0.0
                    && let Some(doc) = &mut app.doc
                {
                    doc.begin_stroke();
                    let n = doc.flood_fill(slice, x as usize, y as usize, class, preserve);
                    doc.end_stroke();
                    app.status = format!("filled {n} pixels");
                }
            }
        }
        Tool::Lasso => {
            if !panning
                && response.dragged_by(egui::PointerButton::Primary)
                && let Some(p) = response.interact_pointer_pos()
            {
                if app.viewer.lasso.is_empty()
                    && let Some(origin) = ui.input(|i| i.pointer.press_origin())
                {
                    app.viewer.lasso.push(app.screen_to_image(rect, origin));
                }
                app.viewer.lasso.push(app.screen_to_image(rect, p));
            }
            if response.drag_stopped_by(egui::PointerButton::Primary) {
                let outline = std::mem::take(&mut app.viewer.lasso);
                let class = app.active_class;
                if let Some(doc) = &mut app.doc {
                    doc.begin_stroke();
                    let n = doc.fill_polygon(slice, &outline, class, preserve);
                    doc.end_stroke();
                    app.status = format!("lasso filled {n} pixels");
                }
            }
        }
    }
    if !response.dragged_by(egui::PointerButton::Primary) || panning {
        app.viewer.last_paint = None;
        if let Some(doc) = &mut app.doc
            && doc.in_stroke()
            && doc.end_stroke()
        {
            app.status = "stroke painted".into();
        }
    }
}

/// The line under the pointer at image position `(x, y)`: pixel, raw value, label and the
/// shown class's probability.
fn readout(app: &StudioApp, (x, y): (f32, f32), (w, h): (f32, f32)) -> Option<String> {
    let slice = app.view.slice;
    let doc = app.doc.as_ref()?;
    if x < 0.0 || y < 0.0 || x >= w || y >= h {
        return None;
    }
    let (xi, yi) = (x as usize, y as usize);
    let raw = match doc.stack.image_now(slice) {
        Some(planes) => planes
            .iter()
            .map(|c| c.at(xi, yi).to_string())
            .collect::<Vec<_>>()
            .join(", "),
        None => "(reading)".to_string(),
    };
    let label = doc.labels[slice].at(xi, yi);
    let name = match label {
        0 => "unlabelled".to_string(),
        l => doc
            .classes
            .get(l as usize - 1)
            .map_or(format!("class {l}"), |c| c.name.clone()),
    };
    let prob = app
        .models
        .probabilities
        .get(slice)
        .and_then(Option::as_ref)
        .map(|p| {
            let k = (app.models.overlay_class.max(1) as usize - 1).min(p.len() - 1);
            format!("  p(class {}) {:.3}", k + 1, p[k].at(xi, yi))
        })
        .unwrap_or_default();
    let at = doc
        .stack
        .pixel_size
        .as_ref()
        .map(|p| {
            format!(
                " ({:.3} {u}, {:.3} {u})",
                x as f64 * p.x,
                y as f64 * p.y,
                u = p.unit
            )
        })
        .unwrap_or_default();
    Some(format!(
        "x {xi}  y {yi}{at}  value {raw}  label {name}{prob}"
    ))
}

/// What the GPU must receive this frame: everything after a slice change, otherwise only the
/// changed label rows, and the overlay map when it changed (`None` without a document).
fn uploads(app: &mut StudioApp) -> Option<Vec<Upload>> {
    let slice = app.view.slice;
    let mut uploads = Vec::new();
    let pal = (!app.viewer.palette_ok || !app.viewer.sized).then(|| palette(app));
    app.viewer.palette_ok = true;
    let doc = app.doc.as_mut()?;
    if !app.viewer.sized {
        uploads.push(Upload::Resize {
            width: doc.stack.width as u32,
            height: doc.stack.height as u32,
            tile_edge: app.max_texture_edge,
            channels: doc.stack.channels.min(4) as u32,
        });
        app.viewer.sized = true;
        app.viewer.uploaded_slice = None;
    }
    if let Some(p) = pal {
        uploads.push(Upload::Palette(p));
    }
    let changed = doc.take_changed_rects();
    // A slice of a stack read on demand is shown once a job has read it (the old one stays
    // until then).
    let shown = doc.stack.image_now(slice);
    let unread = app.viewer.uploaded_slice != Some(slice) && shown.is_none();
    if let Some(planes) = shown.filter(|_| app.viewer.uploaded_slice != Some(slice)) {
        uploads.push(Upload::Image(texels(&planes)));
        uploads.push(Upload::LabelRect {
            x0: 0,
            y0: 0,
            width: doc.stack.width as u32,
            height: doc.stack.height as u32,
            data: doc.labels[slice].data.clone(),
        });
        app.viewer.uploaded_slice = Some(slice);
    } else if let Some((_, [x0, y0, x1, y1])) = changed.into_iter().find(|c| c.0 == slice) {
        // Only the rectangle the strokes of this frame changed.
        let plane = &doc.labels[slice];
        let data: Vec<u8> = (y0..=y1)
            .flat_map(|y| &plane.data[y * plane.width + x0..=y * plane.width + x1])
            .copied()
            .collect();
        uploads.push(Upload::LabelRect {
            x0: x0 as u32,
            y0: y0 as u32,
            width: (x1 - x0 + 1) as u32,
            height: (y1 - y0 + 1) as u32,
            data,
        });
    }
    if unread {
        app.read_slice(slice);
    }
    let resized = uploads.iter().any(|u| matches!(u, Upload::Resize { .. }));
    overlay_uploads(app, slice, resized, &mut uploads);
    Some(uploads)
}

/// The overlays' data the GPU lacks: the shown slice's class probabilities (the shader
/// computes the probability, mask and uncertainty overlays from them, so switching between
/// those or between classes uploads nothing), the mask's gap-closing lines, the weight map.
fn overlay_uploads(app: &mut StudioApp, slice: usize, resized: bool, uploads: &mut Vec<Upload>) {
    let m = &app.models;
    let v = &mut app.viewer;
    let probs_key = (slice, m.generation);
    if v.probs_key != Some(probs_key) || resized {
        v.probs_key = Some(probs_key);
        let on_gpu = m
            .on_gpu
            .as_ref()
            .filter(|(s, g, _)| (*s, *g) == probs_key)
            .map(|(_, _, planes)| planes);
        v.probs_shown = match m.probabilities.get(slice).and_then(Option::as_ref) {
            // Already on the GPU (burn on the display's device): copied there.
            Some(_) if on_gpu.is_some() => {
                uploads.extend(on_gpu.cloned().map(Upload::GpuProbabilities));
                true
            }
            Some(probs) if !probs.is_empty() => {
                uploads.push(Upload::Probabilities {
                    classes: probs.len() as u32,
                    data: probs.iter().flat_map(|p| p.data.iter().copied()).collect(),
                });
                true
            }
            _ => false,
        };
        v.lines_key = None;
    }
    let gap_key = m.gap_key(slice);
    if gap_key.is_some()
        && v.lines_key != gap_key
        && let Some(lines) = m.gap_lines_of(slice)
    {
        uploads.push(Upload::GapLines(lines.data.clone()));
        v.lines_key = gap_key;
    }
    let weight_key = m.weight_map.as_ref().map(|(k, _)| *k);
    if m.overlay == Overlay::WeightMap && (v.weight_key != weight_key || resized) {
        v.weight_key = weight_key;
        v.map_shown = match m.overlay_map(slice) {
            Some(map) => {
                uploads.push(Upload::Map(map));
                true
            }
            None => false,
        };
    }
    if weight_key.is_some_and(|k| k.0 != slice) {
        v.map_shown = false;
    }
}

/// What the overlay draws this frame ([`OVERLAY_NONE`] while its data is not on the GPU: a
/// mask whose rule closes gaps waits for its lines), and whether the mask closes gaps.
fn overlay_mode(app: &StudioApp) -> (u32, bool) {
    let (m, v) = (&app.models, &app.viewer);
    let probs = v.probs_shown && v.probs_key == Some((app.view.slice, m.generation));
    let gaps = m.gap_key(app.view.slice);
    let lines = gaps.is_some() && v.lines_key == gaps;
    let mode = match m.overlay {
        Overlay::None => OVERLAY_NONE,
        Overlay::WeightMap if v.map_shown => OVERLAY_MAP,
        Overlay::Probability if probs => OVERLAY_PROBABILITY,
        Overlay::Mask if probs && (gaps.is_none() || lines) => OVERLAY_MASK,
        Overlay::Uncertainty if probs => OVERLAY_UNCERTAINTY,
        _ => OVERLAY_NONE,
    };
    (mode, lines)
}

/// A slice's values as the viewer's image texture holds them: one per pixel for one channel,
/// else four per pixel (the first four channels, unused ones zero).
fn texels(image: &[crate::data::Plane<f32>]) -> Vec<f32> {
    if let [grey] = image {
        return grey.data.clone();
    }
    let n = image.first().map_or(0, |p| p.data.len());
    let mut out = vec![0.0f32; 4 * n];
    for (c, plane) in image.iter().take(4).enumerate() {
        for (i, &v) in plane.data.iter().enumerate() {
            out[4 * i + c] = v;
        }
    }
    out
}

/// Per channel: window minimum, maximum and colour (w = 1 when shown); a grey stack is one
/// white channel with the stack's window.
fn channel_uniforms(
    display: &crate::project::settings::Display,
) -> ([f32; 4], [f32; 4], [[f32; 4]; 4]) {
    let (mut lo, mut hi, mut colour) = ([0.0; 4], [1.0; 4], [[0.0; 4]; 4]);
    if display.channels.is_empty() {
        lo[0] = display.min;
        hi[0] = display.max;
        colour[0] = [1.0, 1.0, 1.0, 1.0];
    }
    for (c, ch) in display.channels.iter().take(4).enumerate() {
        lo[c] = ch.min;
        hi[c] = ch.max;
        let [r, g, b] = ch.color.map(|v| f32::from(v) / 255.0);
        colour[c] = [r, g, b, if ch.visible { 1.0 } else { 0.0 }];
    }
    (lo, hi, colour)
}

/// The viewer's uniforms for this frame (the renderer fills in the tile fields).
fn uniforms(
    app: &StudioApp,
    ui: &egui::Ui,
    rect: egui::Rect,
    (w, h): (f32, f32),
    display: crate::project::settings::Display,
) -> ViewUniforms {
    let ppp = ui.ctx().pixels_per_point();
    let mut flags = 0;
    let (overlay, lines) = overlay_mode(app);
    for (on, bit) in [
        (app.show_labels, SHOW_LABELS),
        (app.show_only_labelled, DIM_UNLABELLED),
        (lines, GAP_LINES),
    ] {
        if on {
            flags |= bit;
        }
    }
    let (map_cold, map_hot) = app.models.overlay_range();
    let (channel_min, channel_max, channel_colour) = channel_uniforms(&display);
    ViewUniforms {
        rect_min: [rect.min.x * ppp, rect.min.y * ppp],
        zoom: app.view.zoom * ppp,
        gamma: display.gamma,
        origin: [app.view.origin.x, app.view.origin.y],
        image_size: [w, h],
        channels: display.channels.len().clamp(1, 4) as u32,
        channel_min,
        channel_max,
        channel_colour,
        label_opacity: app.label_opacity,
        flags,
        overlay,
        overlay_class: u32::from(app.models.overlay_class.max(1) - 1),
        threshold: app.models.mask_threshold().unwrap_or(-1.0),
        map_opacity: app.models.overlay_opacity,
        map_cold,
        map_hot,
        // Per texture tile, filled by the renderer.
        ..ViewUniforms::zeroed()
    }
}

/// The brush's circle and the lasso's outline.
fn outlines(app: &StudioApp, ui: &egui::Ui, rect: egui::Rect, response: &egui::Response) {
    if let Some(p) = response.hover_pos() {
        let r = match app.tool {
            Tool::Brush => Some(app.brush_radius),
            Tool::Eraser => Some(app.eraser_radius),
            Tool::Fill | Tool::Lasso => None,
        };
        if let Some(r) = r {
            let stroke = egui::Stroke::new(1.0, egui::Color32::YELLOW);
            ui.painter().circle_stroke(p, r * app.view.zoom, stroke);
        }
    }
    if app.viewer.lasso.len() > 1 {
        let pts: Vec<egui::Pos2> = app
            .viewer
            .lasso
            .iter()
            .map(|&(x, y)| app.image_to_screen(rect, x, y))
            .collect();
        ui.painter().add(egui::Shape::line(
            pts,
            egui::Stroke::new(1.5, egui::Color32::YELLOW),
        ));
    }
}
