//! unet-studio's own file chooser, drawn in the window, for machines without a system file
//! dialog: a folder's entries (folders first, files filtered by ending), a path field to type
//! or paste a folder into, Up, a name field, and Open / Choose this folder / Save.

use std::path::{Path, PathBuf};

use eframe::egui;

/// What the chooser picks.
#[derive(Clone, Debug, PartialEq)]
pub enum ChooserKind {
    /// An existing file with one of these endings (lower case; empty: any).
    File(Vec<String>),
    /// An existing folder.
    Folder,
    /// A file to write.
    Save,
}

/// One entry of the shown folder.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    name: String,
    is_dir: bool,
}

/// The chooser's state.
#[derive(Clone, Debug)]
pub struct Chooser {
    pub(crate) kind: ChooserKind,
    pub(crate) title: String,
    /// The folder shown.
    pub dir: PathBuf,
    pub(crate) dir_edit: String,
    /// The file name (typed, or the entry clicked).
    pub name: String,
    entries: Vec<Entry>,
    pub(crate) error: Option<String>,
}

/// What [`Chooser::show`] says after a frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// Still open.
    Open,
    /// Closed without a choice.
    Cancelled,
    /// This path was chosen.
    Chosen(PathBuf),
}

impl Chooser {
    /// A chooser of `kind` titled `title`, showing `dir`, with `name` in the name field.
    pub fn new(kind: ChooserKind, title: &str, dir: PathBuf, name: &str) -> Self {
        let mut c = Self {
            kind,
            title: title.to_string(),
            dir_edit: dir.display().to_string(),
            dir,
            name: name.to_string(),
            entries: Vec::new(),
            error: None,
        };
        c.read_dir();
        c
    }

    /// Shows `dir` (when it can be read; else says why and stays where it was).
    pub fn go_to(&mut self, dir: PathBuf) {
        let before = std::mem::replace(&mut self.dir, dir);
        if !self.read_dir() {
            self.dir = before;
        }
        self.dir_edit = self.dir.display().to_string();
    }

    /// Lists the shown folder; `false` (with the error kept) when it cannot be read.
    fn read_dir(&mut self) -> bool {
        let list = match std::fs::read_dir(&self.dir) {
            Ok(list) => list,
            Err(e) => {
                self.error = Some(format!("{}: {e}", self.dir.display()));
                return false;
            }
        };
        let mut entries: Vec<Entry> = list
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let is_dir = e.path().is_dir();
                (!name.starts_with('.') && (is_dir || self.shows_file(&name)))
                    .then_some(Entry { name, is_dir })
            })
            .collect();
        entries.sort_by(|a, b| {
            b.is_dir
                .cmp(&a.is_dir)
                .then_with(|| crate::data::io::natural_cmp(&a.name, &b.name))
        });
        self.entries = entries;
        self.error = None;
        true
    }

    fn shows_file(&self, name: &str) -> bool {
        match &self.kind {
            ChooserKind::Folder => false,
            ChooserKind::Save => true,
            ChooserKind::File(endings) => {
                endings.is_empty()
                    || Path::new(name)
                        .extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| endings.contains(&e.to_ascii_lowercase()))
            }
        }
    }

    /// The path the confirm button would choose, if any.
    fn choice(&self) -> Option<PathBuf> {
        let name = self.name.trim();
        match self.kind {
            ChooserKind::Folder if name.is_empty() => Some(self.dir.clone()),
            ChooserKind::Folder => Some(self.dir.join(name)).filter(|p| p.is_dir()),
            ChooserKind::File(_) => Some(self.dir.join(name)).filter(|p| p.is_file()),
            ChooserKind::Save if name.is_empty() => None,
            ChooserKind::Save => Some(self.dir.join(name)),
        }
    }

    /// Draws the chooser for a frame.
    pub fn show(&mut self, ctx: &egui::Context) -> Answer {
        let mut answer = Answer::Open;
        let mut open = true;
        egui::Window::new(self.title.clone())
            .open(&mut open)
            .collapsible(false)
            .default_size([520.0, 420.0])
            .show(ctx, |ui| answer = self.ui(ui));
        if !open || ctx.input(|i| i.key_pressed(egui::Key::Escape)) {
            return Answer::Cancelled;
        }
        answer
    }

    fn ui(&mut self, ui: &mut egui::Ui) -> Answer {
        let mut go = None;
        ui.horizontal(|ui| {
            if ui.button("Up").clicked()
                && let Some(parent) = self.dir.parent()
            {
                go = Some(parent.to_path_buf());
            }
            let field = ui.add(
                egui::TextEdit::singleline(&mut self.dir_edit)
                    .desired_width(f32::INFINITY)
                    .hint_text("folder"),
            );
            if field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                go = Some(PathBuf::from(self.dir_edit.trim()));
            }
        });
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        let mut chosen = None;
        egui::ScrollArea::vertical()
            .max_height(260.0)
            .auto_shrink([false, false])
            .show(ui, |ui| {
                for entry in &self.entries {
                    let label = if entry.is_dir {
                        format!("{}/", entry.name)
                    } else {
                        entry.name.clone()
                    };
                    let r = ui.selectable_label(self.name == entry.name, label);
                    if r.double_clicked() {
                        if entry.is_dir {
                            go = Some(self.dir.join(&entry.name));
                        } else if self.kind != ChooserKind::Save {
                            chosen = Some(self.dir.join(&entry.name));
                        }
                    } else if r.clicked() {
                        self.name.clone_from(&entry.name);
                    }
                }
            });
        if let Some(dir) = go {
            self.go_to(dir);
            if self.kind != ChooserKind::Save {
                self.name.clear();
            }
        }
        ui.horizontal(|ui| {
            ui.label(match self.kind {
                ChooserKind::Folder => "Folder",
                _ => "Name",
            });
            ui.add(egui::TextEdit::singleline(&mut self.name).desired_width(f32::INFINITY));
        });
        let choice = self.choice();
        if self.kind == ChooserKind::Save
            && let Some(p) = &choice
            && p.exists()
        {
            ui.label(format!("{} exists and will be replaced", p.display()));
        }
        let mut answer = Answer::Open;
        ui.horizontal(|ui| {
            if ui.button("Cancel").clicked() {
                answer = Answer::Cancelled;
            }
            let confirm = match self.kind {
                ChooserKind::File(_) => "Open",
                ChooserKind::Folder => "Choose this folder",
                ChooserKind::Save => "Save",
            };
            if ui
                .add_enabled(choice.is_some(), egui::Button::new(confirm))
                .clicked()
                && let Some(p) = choice
            {
                answer = Answer::Chosen(p);
            }
        });
        match chosen {
            Some(p) => Answer::Chosen(p),
            None => answer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("unet-chooser-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("b_folder")).unwrap();
        std::fs::create_dir_all(d.join(".hidden")).unwrap();
        for f in ["s10.tif", "s2.tif", "notes.txt", ".dot.tif"] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        d
    }

    fn names(c: &Chooser) -> Vec<String> {
        c.entries.iter().map(|e| e.name.clone()).collect()
    }

    #[test]
    fn folders_first_then_matching_files_in_natural_order_without_hidden_ones() {
        let d = tree("list");
        let c = Chooser::new(ChooserKind::File(vec!["tif".into()]), "t", d.clone(), "");
        assert_eq!(names(&c), ["b_folder", "s2.tif", "s10.tif"]);
        let c = Chooser::new(ChooserKind::Folder, "t", d.clone(), "");
        assert_eq!(names(&c), ["b_folder"]);
        let c = Chooser::new(ChooserKind::Save, "t", d.clone(), "out.tif");
        assert_eq!(names(&c), ["b_folder", "notes.txt", "s2.tif", "s10.tif"]);
        assert_eq!(c.choice(), Some(d.join("out.tif")));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_choice_must_exist_to_open_and_an_unreadable_folder_is_said() {
        let d = tree("choice");
        let mut c = Chooser::new(ChooserKind::File(vec![]), "t", d.clone(), "missing.tif");
        assert_eq!(c.choice(), None);
        c.name = "s2.tif".into();
        assert_eq!(c.choice(), Some(d.join("s2.tif")));
        c.go_to(d.join("no such folder"));
        assert_eq!(c.dir, d, "stays where it was");
        assert!(
            c.error
                .as_deref()
                .is_some_and(|e| e.contains("no such folder"))
        );
        let mut f = Chooser::new(ChooserKind::Folder, "t", d.clone(), "");
        assert_eq!(f.choice(), Some(d.clone()), "the shown folder itself");
        f.go_to(d.join("b_folder"));
        assert_eq!(f.choice(), Some(d.join("b_folder")));
        let _ = std::fs::remove_dir_all(&d);
    }
}
