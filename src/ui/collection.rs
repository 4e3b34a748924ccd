//! The image list of a collection (a folder of images that differ): one row per image, the
//! shown one selected; clicking another opens it (the shown one's labels saved first).

use eframe::egui;

use crate::app::studio::StudioApp;

/// Draws the list when a collection is open; returns the image clicked, if any.
pub(crate) fn image_list(app: &StudioApp, ui: &mut egui::Ui) -> Option<usize> {
    let (collection, current) = app.collection.as_ref()?;
    let mut clicked = None;
    ui.heading(format!("Images ({})", collection.files.len()))
        .on_hover_text(format!(
            "{} holds images of different sizes or channels: each is labelled on its own, \
             and Train learns from the labels of all of them. Their labels and the shared \
             model are kept in {}.",
            collection.folder.display(),
            collection.work.with_extension("images").display()
        ));
    egui::ScrollArea::vertical()
        .id_salt("collection images")
        .max_height(160.0)
        .show(ui, |ui| {
            for i in 0..collection.files.len() {
                if ui
                    .selectable_label(i == *current, collection.name(i))
                    .clicked()
                    && i != *current
                {
                    clicked = Some(i);
                }
            }
        });
    ui.separator();
    clicked
}
