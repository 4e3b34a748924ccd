//! The stack section of the left panel: the Z and T sliders, and the contrast of each
//! channel.

use eframe::egui;

use crate::project::settings::auto_window;

/// The contrast window and gamma; for a multichannel stack, each channel's visibility,
/// colour and window (the image is their composite).
pub(crate) fn contrast(ui: &mut egui::Ui, doc: &mut crate::project::Document, slice: usize) {
    let labels: Vec<String> = (0..doc.stack.channels)
        .map(|c| doc.stack.channel_label(c))
        .collect();
    let d = &mut doc.display;
    if d.channels.is_empty() {
        ui.add(egui::DragValue::new(&mut d.min).prefix("min ").speed(1.0));
        ui.add(egui::DragValue::new(&mut d.max).prefix("max ").speed(1.0));
    }
    for (c, ch) in d.channels.iter_mut().enumerate() {
        ui.horizontal(|ui| {
            let label = labels
                .get(c)
                .cloned()
                .unwrap_or_else(|| format!("channel {}", c + 1));
            ui.checkbox(&mut ch.visible, label);
            ui.color_edit_button_srgb(&mut ch.color);
        });
        ui.horizontal(|ui| {
            ui.add(egui::DragValue::new(&mut ch.min).prefix("min ").speed(1.0));
            ui.add(egui::DragValue::new(&mut ch.max).prefix("max ").speed(1.0));
        });
    }
    ui.add(egui::Slider::new(&mut d.gamma, 0.2..=3.0).text("gamma"));
    // The shown slice is in memory (a slice read on demand is shown once read).
    let shown = doc.stack.image_now(slice);
    if ui
        .add_enabled(shown.is_some(), egui::Button::new("Auto (0.5–99.5 %)"))
        .clicked()
        && let Some(planes) = shown
    {
        let (lo, hi) = auto_window(&planes, 0);
        d.min = lo;
        d.max = hi;
        for (c, ch) in d.channels.iter_mut().enumerate() {
            (ch.min, ch.max) = auto_window(&planes, c);
        }
    }
}

/// The slice slider, or a Z and a T slider for a stack with time points; returns the slice
/// chosen when it changed.
pub(crate) fn slice_sliders(
    ui: &mut egui::Ui,
    stack: &crate::data::Stack,
    slice: usize,
) -> Option<usize> {
    let n = stack.slices();
    if stack.frames <= 1 {
        if n <= 1 {
            ui.label("1 slice");
            return None;
        }
        let mut s = slice;
        let changed = ui
            .add(egui::Slider::new(&mut s, 0..=n - 1).text("slice"))
            .changed();
        return changed.then_some(s);
    }
    let depth = stack.depth().max(1);
    let (mut z, mut t) = (slice % depth, slice / depth);
    let mut changed = false;
    if depth > 1 {
        changed |= ui
            .add(egui::Slider::new(&mut z, 0..=depth - 1).text("Z"))
            .changed();
    }
    changed |= ui
        .add(egui::Slider::new(&mut t, 0..=stack.frames - 1).text("T"))
        .changed();
    changed.then_some(t * depth + z)
}
