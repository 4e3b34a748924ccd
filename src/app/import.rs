//! File > Import labels: masks or label images made elsewhere (Fiji, ilastik, another
//! annotator) become the painted labels, in one of the three encodings, as one undoable
//! stroke. The file is read in the background.

use std::path::PathBuf;

use eframe::egui;

use crate::data::{DataError, LabelEncoding, Plane};
use crate::jobs::Job;

use super::StudioApp;
use crate::project::work::read_labels;

/// What the import job returns: the file and its labels as classes.
type ImportResult = Result<(PathBuf, Vec<Plane<u8>>), DataError>;

/// State of the import window.
pub struct ImportView {
    /// Window open.
    pub open: bool,
    /// The label image, stack or folder to import.
    pub path: String,
    /// How its values map to classes.
    pub encoding: LabelEncoding,
    /// Keep painted labels where the file has none (0).
    pub merge: bool,
    pub(super) job: Option<Job<ImportResult>>,
}

impl Default for ImportView {
    fn default() -> Self {
        Self {
            open: false,
            path: String::new(),
            encoding: LabelEncoding::Classes,
            merge: false,
            job: None,
        }
    }
}

impl StudioApp {
    /// Reads the import window's file in the background; `poll_import` applies it.
    pub fn start_import(&mut self) {
        let Some(doc) = &self.doc else { return };
        if self.import.job.is_some() {
            return;
        }
        let path = PathBuf::from(self.import.path.trim());
        let encoding = self.import.encoding;
        let slices = doc.slices();
        let size = (doc.stack.width, doc.stack.height);
        self.status = format!("importing labels from {}", path.display());
        self.import.job = Some(Job::spawn("import labels", self.waker.clone(), move |_| {
            read_labels(&path, encoding, slices, size).map(|planes| (path, planes))
        }));
    }

    pub(super) fn poll_import(&mut self) {
        let Some(job) = &mut self.import.job else {
            return;
        };
        let Some(res) = job.poll() else { return };
        self.import.job = None;
        match res {
            Ok((path, planes)) => {
                let Some(doc) = &mut self.doc else { return };
                let changed = doc.replace_labels(&planes, self.import.merge);
                let labelled: usize = planes
                    .iter()
                    .map(|p| p.data.iter().filter(|&&v| v > 0).count())
                    .sum();
                self.status = format!(
                    "imported {labelled} labelled pixels from {} ({} encoding): {changed} pixels changed, Ctrl+Z undoes the import",
                    path.display(),
                    self.import.encoding
                );
                self.import.open = false;
                self.viewer.invalidate_slice();
                self.viewer.invalidate_palette();
            }
            Err(e) => self.error = Some(format!("import failed: {e}")),
        }
    }
}

pub(super) fn import_window(app: &mut StudioApp, ctx: &egui::Context) {
    if !app.import.open {
        return;
    }
    let mut open = true;
    let mut start = false;
    let mut browse = false;
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
                    !v.path.trim().is_empty() && v.job.is_none(),
                    egui::Button::new("Import"),
                )
                .clicked();
            if v.job.is_some() {
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
