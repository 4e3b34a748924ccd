//! File dialogs that always work. The system's dialog (rfd: the desktop portal or zenity on
//! Linux, the native one elsewhere) runs in a background job, so the window keeps drawing
//! while it is open. Where no system dialog can be shown, unet-studio's own chooser
//! ([`super::chooser`], drawn in the window) takes its place: decided before asking (on Linux, no
//! session bus for a portal and no `zenity` on the `PATH`), or after (the system dialog came
//! back empty sooner than a person could have cancelled it, which is how rfd reports that it
//! could not show one). `UNET_STUDIO_FILE_DIALOG=builtin` (or `system`) sets the choice.
//!
//! This file holds the dialogs' state; asking and acting on the answer are in
//! `actions/dialogs.rs`.

use super::chooser::{Answer, Chooser, ChooserKind};
use super::export::ExportKind;
use crate::app::jobs::{JobKind, Jobs, Message};
use eframe::egui;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A system dialog that returns empty sooner than this was not shown.
pub(crate) const TOO_FAST: Duration = Duration::from_millis(400);

/// What the chosen path is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// File > Open image or stack.
    OpenStack,
    /// File > Open folder as stack.
    OpenFolder,
    /// Export > one of the kinds.
    Export(ExportKind),
    /// Export > Masks of every image (of a collection): a folder.
    ExportCollection,
    /// Model > Load model.
    LoadModel,
    /// Model > Save model as.
    SaveModel,
    /// File > Import labels > Browse.
    ImportLabels,
}

/// What the dialog asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Pick {
    /// An existing file, with filters `(name, extensions)`.
    File(Vec<(String, Vec<String>)>),
    /// An existing folder.
    Folder,
    /// A file to write: the suggested name, and filters.
    Save(String, Vec<(String, Vec<String>)>),
}

/// Shows a system dialog and waits for it (run in a background job).
pub type SystemDialog = fn(&Pick, Option<&Path>) -> Option<PathBuf>;

/// The open dialog, if any, and which kind is used.
pub struct Dialogs {
    /// The system dialog being shown (in the app's job of kind [`JobKind::FileDialog`]): its
    /// purpose, request and start.
    pub(crate) system: Option<(Purpose, Pick, Instant)>,
    /// The system dialog's answer, until [`Self::poll`] hands it out.
    answer: Option<(Purpose, PathBuf)>,
    /// The built-in chooser being shown.
    pub(crate) builtin: Option<(Purpose, Chooser)>,
    /// Use the built-in chooser: there is no system dialog here (or one failed to show).
    pub builtin_only: bool,
    /// Why the built-in chooser is used, to say once.
    pub note: Option<String>,
    /// Where the choosers start (the open stack's folder).
    pub start_dir: Option<PathBuf>,
    /// The system dialog's implementation (tests put in one that fails).
    pub system_dialog: SystemDialog,
}

impl Default for Dialogs {
    fn default() -> Self {
        let (builtin_only, note) = match std::env::var("UNET_STUDIO_FILE_DIALOG").as_deref() {
            Ok("builtin") => (true, None),
            Ok("system") => (false, None),
            _ => match missing_system_dialog() {
                Some(why) => (
                    true,
                    Some(format!("{why}: using unet-studio's own file chooser")),
                ),
                None => (false, None),
            },
        };
        Self {
            system: None,
            answer: None,
            builtin: None,
            builtin_only,
            note,
            start_dir: None,
            system_dialog: rfd_dialog,
        }
    }
}

impl Dialogs {
    /// Whether a dialog is open.
    pub fn busy(&self) -> bool {
        self.system.is_some() || self.builtin.is_some() || self.answer.is_some()
    }

    /// Asks for a path (one dialog at a time: ignored while one is open); a system dialog
    /// runs as a job of `jobs`, whose answer comes back through [`Self::system_answered`].
    pub fn ask(&mut self, purpose: Purpose, pick: Pick, jobs: &mut Jobs) {
        if self.busy() {
            return;
        }
        if self.builtin_only {
            self.open_builtin(purpose, &pick);
            return;
        }
        let show = self.system_dialog;
        let start = self.start_dir.clone();
        let request = pick.clone();
        let started = jobs.spawn(JobKind::FileDialog, "file dialog", move |_| {
            Message::Picked(show(&request, start.as_deref()))
        });
        if started {
            self.system = Some((purpose, pick, Instant::now()));
        }
    }

    /// The system dialog closed with `path` (`None`: cancelled, or, when that came sooner
    /// than a person could cancel, never shown: the built-in chooser takes the request).
    pub(crate) fn system_answered(&mut self, path: Option<PathBuf>) {
        let Some((purpose, pick, started)) = self.system.take() else {
            return;
        };
        match path {
            Some(path) => self.answer = Some((purpose, path)),
            None if started.elapsed() < TOO_FAST => self.fall_back(purpose, &pick),
            None => {}
        }
    }

    /// The system dialog's job died: the built-in chooser takes the request.
    pub(crate) fn system_failed(&mut self) {
        if let Some((purpose, pick, _)) = self.system.take() {
            self.fall_back(purpose, &pick);
        }
    }

    fn fall_back(&mut self, purpose: Purpose, pick: &Pick) {
        self.builtin_only = true;
        self.note = Some(
            "no system file dialog could be shown: using unet-studio's own file chooser".into(),
        );
        self.open_builtin(purpose, pick);
    }

    /// Hands out the system dialog's answer, or draws the built-in chooser and collects a
    /// chosen path: call once per frame.
    pub fn poll(&mut self, ctx: &egui::Context) -> Option<(Purpose, PathBuf)> {
        if let Some(answer) = self.answer.take() {
            return Some(answer);
        }
        let (purpose, chooser) = self.builtin.as_mut()?;
        let purpose = *purpose;
        match chooser.show(ctx) {
            Answer::Open => None,
            Answer::Chosen(path) => {
                self.builtin = None;
                Some((purpose, path))
            }
            Answer::Cancelled => {
                self.builtin = None;
                None
            }
        }
    }

    pub(crate) fn open_builtin(&mut self, purpose: Purpose, pick: &Pick) {
        let start = self
            .start_dir
            .clone()
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_default();
        let endings = |filters: &[(String, Vec<String>)]| {
            filters
                .iter()
                .flat_map(|(_, e)| e.iter().map(|e| e.to_ascii_lowercase()))
                .collect()
        };
        let (kind, name) = match pick {
            Pick::File(filters) => (ChooserKind::File(endings(filters)), ""),
            Pick::Folder => (ChooserKind::Folder, ""),
            Pick::Save(name, _) => (ChooserKind::Save, name.as_str()),
        };
        self.builtin = Some((purpose, Chooser::new(kind, title(purpose), start, name)));
    }
}

/// The window title of a purpose.
pub(crate) fn title(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::OpenStack => "Open image or stack",
        Purpose::OpenFolder => "Open folder as stack",
        Purpose::Export(_) => "Export",
        Purpose::ExportCollection => "Folder for the masks of every image",
        Purpose::LoadModel => "Load model folder",
        Purpose::SaveModel => "Save model into folder",
        Purpose::ImportLabels => "Import labels",
    }
}

/// Why no system dialog can be shown here, if that is known before asking.
pub(crate) fn missing_system_dialog() -> Option<&'static str> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let bus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
        || std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| Path::new(&d).join("bus").exists());
    let zenity = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("zenity").is_file()));
    (!bus && !zenity).then_some("no desktop portal (no session bus) and no zenity")
}

/// The system dialog through rfd, waited for in the calling (background) thread.
pub(crate) fn rfd_dialog(pick: &Pick, start: Option<&Path>) -> Option<PathBuf> {
    let mut dialog = rfd::AsyncFileDialog::new();
    if let Some(dir) = start {
        dialog = dialog.set_directory(dir);
    }
    let add = |mut d: rfd::AsyncFileDialog, filters: &[(String, Vec<String>)]| {
        for (name, ext) in filters {
            d = d.add_filter(name, ext);
        }
        d
    };
    let chosen = match pick {
        Pick::File(filters) => pollster::block_on(add(dialog, filters).pick_file()),
        Pick::Folder => pollster::block_on(dialog.pick_folder()),
        Pick::Save(name, filters) => {
            pollster::block_on(add(dialog.set_file_name(name), filters).save_file())
        }
    };
    chosen.map(|h| h.path().to_path_buf())
}

/// The filters of image files.
pub fn image_filters(what: &str) -> Vec<(String, Vec<String>)> {
    vec![(
        what.to_string(),
        crate::data::io::IMAGE_EXTENSIONS
            .iter()
            .map(|e| e.to_string())
            .collect(),
    )]
}

/// The filters of exports.
pub fn export_filters() -> Vec<(String, Vec<String>)> {
    vec![
        ("TIFF stack".into(), vec!["tif".into(), "tiff".into()]),
        ("PNG per slice".into(), vec!["png".into()]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn never_shown(_: &Pick, _: Option<&Path>) -> Option<PathBuf> {
        None
    }

    pub(crate) fn chooses(_: &Pick, _: Option<&Path>) -> Option<PathBuf> {
        Some(PathBuf::from("/data/stack.tif"))
    }

    pub(crate) fn jobs() -> Jobs {
        Jobs::new(std::sync::Arc::new(|| {}))
    }

    /// Polls until the system dialog's job has ended, handing its answer to the dialogs as
    /// the app does.
    pub(crate) fn settle(
        d: &mut Dialogs,
        jobs: &mut Jobs,
        ctx: &egui::Context,
    ) -> Option<(Purpose, PathBuf)> {
        for _ in 0..500 {
            for delivered in jobs.drain() {
                match delivered {
                    crate::jobs::Delivered::Message(Message::Picked(p)) => d.system_answered(p),
                    crate::jobs::Delivered::Failed(..) => d.system_failed(),
                    crate::jobs::Delivered::Message(_) => panic!("only the dialog runs"),
                }
            }
            let mut got = None;
            let mut out = ctx.run_ui(egui::RawInput::default(), |ui| got = d.poll(ui.ctx()));
            // Nothing draws these frames: their font textures are dropped on purpose.
            out.textures_delta.clear();
            if got.is_some() || d.system.is_none() {
                return got;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("the dialog job did not end");
    }

    #[test]
    pub(crate) fn a_system_dialog_that_returns_at_once_gives_way_to_the_builtin_chooser() {
        let ctx = egui::Context::default();
        let mut jobs = jobs();
        let mut d = Dialogs {
            builtin_only: false,
            note: None,
            system_dialog: never_shown,
            ..Dialogs::default()
        };
        d.ask(
            Purpose::Export(ExportKind::ALL[0]),
            Pick::Save("m.tif".into(), export_filters()),
            &mut jobs,
        );
        assert!(d.busy());
        assert_eq!(settle(&mut d, &mut jobs, &ctx), None);
        // The same request is now shown by the built-in chooser, and later ones go there.
        assert!(d.builtin_only);
        assert!(
            d.note
                .as_deref()
                .is_some_and(|n| n.contains("own file chooser"))
        );
        assert!(d.builtin.is_some());
        assert!(d.system.is_none());
    }

    #[test]
    pub(crate) fn a_chosen_path_comes_back_with_its_purpose() {
        let ctx = egui::Context::default();
        let mut jobs = jobs();
        let mut d = Dialogs {
            builtin_only: false,
            system_dialog: chooses,
            ..Dialogs::default()
        };
        d.ask(
            Purpose::OpenStack,
            Pick::File(image_filters("images")),
            &mut jobs,
        );
        assert_eq!(
            settle(&mut d, &mut jobs, &ctx),
            Some((Purpose::OpenStack, PathBuf::from("/data/stack.tif")))
        );
        assert!(!d.busy() && !d.builtin_only);
    }

    pub(crate) fn panics(_: &Pick, _: Option<&Path>) -> Option<PathBuf> {
        panic!("no display for the portal")
    }

    #[test]
    pub(crate) fn a_system_dialog_that_dies_gives_way_to_the_builtin_chooser() {
        let ctx = egui::Context::default();
        let mut jobs = jobs();
        let mut d = Dialogs {
            builtin_only: false,
            note: None,
            system_dialog: panics,
            ..Dialogs::default()
        };
        d.ask(Purpose::LoadModel, Pick::Folder, &mut jobs);
        assert_eq!(settle(&mut d, &mut jobs, &ctx), None);
        assert!(d.builtin_only && d.system.is_none());
        assert_eq!(d.builtin.as_ref().map(|b| b.0), Some(Purpose::LoadModel));
    }

    #[test]
    pub(crate) fn one_dialog_at_a_time() {
        let mut d = Dialogs {
            builtin_only: true,
            ..Dialogs::default()
        };
        let mut jobs = jobs();
        d.ask(Purpose::LoadModel, Pick::Folder, &mut jobs);
        d.ask(Purpose::SaveModel, Pick::Folder, &mut jobs);
        assert_eq!(d.builtin.as_ref().map(|b| b.0), Some(Purpose::LoadModel));
    }
}
