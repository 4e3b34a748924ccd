//! Asking for a path and doing what it was asked for.

use crate::app::dialogs::{Pick, Purpose};
use crate::app::studio::StudioApp;
use eframe::egui;
use std::path::{Path, PathBuf};

impl StudioApp {
    /// Asks for a path in a file dialog, starting beside the open stack (for a folder of
    /// slices: next to the folder, so that nothing written lands among the slices; for the
    /// bundled sample and read-only folders: in the home folder); the answer is applied by
    /// [`Self::poll_dialogs`].
    pub fn ask_path(&mut self, purpose: Purpose, pick: Pick) {
        self.dialogs.start_dir = self.doc.as_ref().and_then(|d| {
            // A stack whose work is kept in the data folder (the bundled sample, a read-only
            // folder) is no place to write: start in the home folder then.
            let home = std::env::var_os("HOME").map(PathBuf::from);
            let beside = d.source.parent().map(Path::to_path_buf);
            let dir = if d.work_note.is_some() {
                home.or(beside)
            } else {
                beside
            };
            dir.map(|p| std::fs::canonicalize(&p).unwrap_or(p))
        });
        self.dialogs.ask(purpose, pick, &mut self.jobs);
        if let Some(note) = self.dialogs.note.take() {
            self.status = note;
        }
    }

    /// Draws the built-in file chooser when it is open, and does what a chosen path was for.
    pub fn poll_dialogs(&mut self, ctx: &egui::Context) {
        let Some((purpose, path)) = self.dialogs.poll(ctx) else {
            return;
        };
        if let Some(note) = self.dialogs.note.take() {
            self.status = note;
        }
        match purpose {
            Purpose::OpenStack | Purpose::OpenFolder => {
                self.open(crate::app::studio::OpenRequest {
                    images: path,
                    ..Default::default()
                })
            }
            Purpose::Export(kind) => self.export(kind, path),
            Purpose::ExportCollection => self.export_collection(path),
            Purpose::LoadModel => self.use_version(path),
            Purpose::SaveModel => self.save_model_to(path),
            Purpose::ImportLabels => self.import.path = path.display().to_string(),
        }
    }
}
