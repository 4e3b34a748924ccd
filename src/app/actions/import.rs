//! File > Import labels: reading the file in the background, then replacing or merging the labels (one undo step).

use crate::app::studio::StudioApp;
use crate::jobs::Job;
use crate::project::work::read_labels;
use std::path::PathBuf;

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

    pub(crate) fn poll_import(&mut self) {
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
