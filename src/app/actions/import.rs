//! File > Import labels: reading the file in the background, then replacing or merging the labels (one undo step).

use crate::app::import::ImportResult;
use crate::app::jobs::{JobKind, Message};
use crate::app::studio::StudioApp;
use crate::project::sets::labels_for;
use std::path::PathBuf;

impl StudioApp {
    /// Reads the import window's file in the background; `poll_import` applies it.
    pub fn start_import(&mut self) {
        let Some(doc) = &self.doc else { return };
        if self.jobs.running(JobKind::Import) {
            return;
        }
        let path = PathBuf::from(self.import.path.trim());
        let encoding = self.import.encoding;
        let images = (doc.source.clone(), doc.stack.slice_sizes());
        self.status = format!("importing labels from {}", path.display());
        self.jobs.spawn(JobKind::Import, "import labels", move |_| {
            let read = labels_for(&path, encoding, (&images.0, &images.1));
            let planes = read.map(|l| l.into_iter().map(|l| l.classes).collect());
            Message::Imported(planes.map(|p| (path, p)))
        });
    }

    /// Labels read for an import replace or merge with the painted ones (one undo step).
    pub(crate) fn apply_import(&mut self, res: ImportResult) {
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
