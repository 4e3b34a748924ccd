//! Export: the background job that writes masks, instances, probabilities or labels, and its result.

use crate::app::export::{ExportKind, write_export, written};
use crate::app::jobs::{JobKind, Message};
use crate::app::studio::StudioApp;
use crate::data::Plane;
use crate::data::{DataError, TiffAxes};
use crate::postprocess::Decision;
use std::path::PathBuf;

impl StudioApp {
    /// Exports to `path` in the background. Masks, instances and probabilities need every
    /// slice predicted ("Predict stack"); the error says so otherwise.
    pub fn export(&mut self, kind: ExportKind, path: PathBuf) {
        let Some(doc) = &self.doc else { return };
        let probs: Vec<Vec<Plane<f32>>> = if kind.needs_prediction() {
            let all: Option<Vec<_>> = (0..doc.slices())
                .map(|s| self.models.probabilities.get(s).cloned().flatten())
                .collect();
            match all {
                Some(p) => p,
                None => {
                    self.error = Some(
                        "export needs a prediction of every slice: press Predict stack first"
                            .into(),
                    );
                    return;
                }
            }
        } else {
            Vec::new()
        };
        let labels = doc.labels.clone();
        let colours: Vec<[u8; 3]> = doc.classes.iter().map(|c| c.color).collect();
        let decision = self
            .models
            .model
            .as_ref()
            .map_or_else(Decision::default, |m| m.decision);
        // Exports keep the stack's time axis and pixel size.
        let axes = TiffAxes::of(&doc.stack);
        self.status = format!("exporting to {}", path.display());
        self.jobs.spawn(JobKind::Export, "export", move |_| {
            Message::Exported(write_export(
                kind, &path, &probs, decision, &labels, &colours, &axes,
            ))
        });
    }

    /// An export ended: says what was written.
    pub(crate) fn apply_export(&mut self, res: Result<(Vec<PathBuf>, String), DataError>) {
        match res {
            Ok((files, summary)) => {
                self.status = format!("exported {summary}: {}", written(&files));
                self.last_export = Some(files);
            }
            Err(e) => self.error = Some(format!("export failed: {e}")),
        }
    }
}
