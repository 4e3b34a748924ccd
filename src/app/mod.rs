//! The desktop application: an eframe app that shows a stack through the WGSL viewer, lets a
//! person paint sparse labels, and keeps them saved. File I/O runs in background jobs.

//!
//! [`studio`] holds the state and its core commands, [`actions`] the rest of what it does,
//! and the state of its parts sits in the files below; the drawing is in [`crate::ui`]. This
//! file only declares, re-exports and drives a frame (`eframe::App`).

mod actions;
pub mod augment_view;
pub mod chooser;
pub mod compare;
pub mod dialogs;
pub mod export;
pub mod import;
pub mod jobs;
pub mod model;
pub mod studio;
pub mod viewer;

use eframe::egui;

pub use crate::project::LoadedModel;
pub use crate::project::{ClassInfo, Document, Saved};
pub use crate::ui::panels::SHORTCUTS;
pub use export::ExportKind;
pub use model::{ModelState, Overlay};
pub use studio::{
    OpenRequest, StudioApp, Tool, ViewState, device_descriptor, shared_compute_device,
};

impl eframe::App for StudioApp {
    fn on_exit(&mut self) {
        // Complete label file for other programs; the journal would restore it otherwise.
        if let Err(e) = self.flush_labels() {
            eprintln!("unet-studio: {e}");
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        self.poll_jobs();
        crate::ui::keys::shortcuts(self, &ctx);
        // A file or folder dropped on the window is opened.
        let dropped = ctx.input(|i| {
            i.raw
                .dropped_files
                .first()
                .map(|f| f.path().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty())
        });
        if let Some(path) = dropped {
            self.open(OpenRequest {
                images: path,
                labels: None,
                model: None,
                ..Default::default()
            });
        }
        self.poll_dialogs(&ctx);
        crate::ui::panels::help_window(self, &ctx);
        crate::ui::windows::augment_window(self, &ctx);
        crate::ui::windows::compare_window(self, &ctx);
        crate::ui::windows::import_window(self, &ctx);
        crate::ui::panels::top_bar(self, ui);
        crate::ui::panels::status_bar(self, ui);
        crate::ui::panels::side_panel(self, ui);
        crate::ui::panels::model_panel(self, ui);
        egui::CentralPanel::default().show(ui, |ui| {
            crate::ui::canvas::canvas(self, ui);
        });
        if self.busy() {
            ctx.request_repaint_after(std::time::Duration::from_millis(100));
        }
    }
}
