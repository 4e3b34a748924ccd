//! Export: the background job that writes masks, instances, probabilities or labels, and its result.

use crate::app::export::{ExportKind, write_export, written};
use crate::app::jobs::{JobKind, Message};
use crate::app::studio::StudioApp;
use crate::data::io::{MaskStream, TiffStream};
use crate::data::{DataError, MaskStyle, Plane, Planes, TiffAxes};
use crate::ml::MlError;
use crate::postprocess::Decision;
use crate::preprocess::D4;
use crate::project::sets::input_channels;
use crate::project::tasks::{StreamedOutputs, predict_streamed};
use std::path::PathBuf;

impl StudioApp {
    /// Exports to `path` in the background. Masks, instances and probabilities need every
    /// slice predicted ("Predict stack"); the error says so otherwise. A stack read slice by
    /// slice is predicted by the export itself, one slice at a time.
    pub fn export(&mut self, kind: ExportKind, path: PathBuf) {
        let Some(doc) = &self.doc else { return };
        // A stack larger than memory: every slice read, predicted and written one at a time;
        // its labels written page by page.
        if doc.stack.on_demand() {
            if kind == ExportKind::Labels {
                let labels = doc.labels.clone();
                let n = labels.len();
                self.status = format!("exporting to {}", path.display());
                self.jobs.spawn(JobKind::Export, "export", move |_| {
                    Message::Exported(
                        crate::project::work::write_label_file(&path, &labels)
                            .map(|files| (files, format!("{n} label slices"))),
                    )
                });
            } else {
                self.export_streamed(kind, path);
            }
            return;
        }
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

    /// Exports masks or probabilities of a stack read on demand: a background job reads each
    /// slice, predicts it with the current model and appends it to the files, which are
    /// renamed into place at the end (a cancelled or failed export leaves nothing behind).
    fn export_streamed(&mut self, kind: ExportKind, path: PathBuf) {
        let (Some(doc), Some(m)) = (&self.doc, &self.models.model) else {
            self.error = Some("export needs a model: train one or open one first".into());
            return;
        };
        let Planes::OnDemand(cache) = &doc.stack.planes else {
            return;
        };
        // The mask's style, or `None` for the probabilities.
        let style = match kind {
            ExportKind::MaskClasses => Some(MaskStyle::Classes),
            ExportKind::MaskBinary => Some(MaskStyle::Binary),
            ExportKind::Probabilities => None,
            ExportKind::Instances | ExportKind::Labels => {
                self.error = Some(
                    "instance labels of a stack read slice by slice are not exported: export the masks"
                        .into(),
                );
                return;
            }
        };
        let pick = match input_channels(&m.unet, doc.stack.channels, &doc.source) {
            Ok(p) => p,
            Err(e) => {
                self.error = Some(format!("cannot predict with this model: {e}"));
                return;
            }
        };
        let (w, h, n) = (doc.stack.width, doc.stack.height, doc.slices());
        let (model, unet, decision) = (m.model.clone(), m.unet.clone(), m.decision);
        let cache = std::sync::Arc::clone(cache);
        let axes = TiffAxes::of(&doc.stack);
        let device = self.models.compute.device.clone();
        let tile = self.models.tile_for(&unet, false);
        let views: Vec<D4> = D4::all()[..self.models.tta_views.clamp(1, 8)].to_vec();
        self.status = format!("exporting to {} (slice by slice)", path.display());
        self.jobs.spawn(JobKind::Export, "export", move |ctx| {
            let run = || -> Result<(Vec<PathBuf>, String), MlError> {
                let classes = unet.classes;
                let (mask, probs) = match style {
                    Some(style) => (
                        Some(MaskStream::create(&path, (w, h, n), classes, style, &axes)?),
                        None,
                    ),
                    None => {
                        let p =
                            TiffStream::probabilities(&path, (w, h, n * classes), classes, &axes)?;
                        (None, Some(p))
                    }
                };
                let mut out = StreamedOutputs::new(decision, mask, probs);
                ctx.progress(0.0, format!("0 of {n} slices"));
                predict_streamed(
                    (&model, &unet),
                    (n, &pick),
                    &mut |s| cache.slice(s),
                    tile,
                    &views,
                    (&device, &ctx.cancel),
                    &mut out,
                    &mut |done, _| {
                        ctx.progress(done as f32 / n as f32, format!("{done} of {n} slices"));
                    },
                )?;
                let files = match &out.mask {
                    Some(m) => m.targets(),
                    None => vec![path.clone()],
                };
                out.commit()?;
                Ok((files, format!("{n} slices, predicted one at a time")))
            };
            Message::Exported(run().map_err(|e| match e {
                MlError::Data(d) => d,
                other => DataError::invalid(&path, other.to_string()),
            }))
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
