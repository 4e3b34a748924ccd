//! Draining the jobs' messages once per frame and applying each in one `match`, then starting
//! what the new state needs (a live preview, a weight map, a deformation, a settings or label
//! save).

use crate::app::jobs::{JobKind, Message};
use crate::app::studio::StudioApp;
use crate::jobs::Delivered;
use crate::ml::{TrainEvent, UNet};

impl StudioApp {
    /// Applies what the jobs sent since the last frame, then starts the work the new state
    /// needs. Called once per frame.
    pub(crate) fn poll_jobs(&mut self) {
        let mut preview = None;
        for delivered in self.jobs.drain() {
            match delivered {
                Delivered::Message(m) => self.apply_message(m, &mut preview),
                // A job that ended without a result: say so, keep everything as it was.
                // The system dialog could not be shown: the built-in chooser takes the request
                // (its note says why).
                Delivered::Failed(JobKind::FileDialog, _) => self.dialogs.system_failed(),
                Delivered::Failed(kind, why) => {
                    self.error = Some(format!("{} failed: {why}", kind.what()));
                }
            }
        }
        if let Some(network) = preview {
            self.preview(network);
        }
        self.refresh_weight_map();
        self.refresh_gap_lines();
        self.refresh_augment();
        self.save_settings_if_changed();
        self.remember_recent();
        self.autosave();
    }

    /// One message: `preview` takes the latest training snapshot of this frame.
    fn apply_message(&mut self, m: Message, preview: &mut Option<UNet>) {
        match m {
            Message::Opened(res) => self.apply_open(*res),
            Message::LabelsSaved(res) => self.apply_save(res),
            Message::SettingsSaved(res) => {
                if let Err(e) = res {
                    self.error = Some(format!("saving settings failed: {e}"));
                }
            }
            Message::RecentFiles(Ok(list)) => self.recent = list,
            Message::RecentFiles(Err(e)) => self.status = format!("recent files: {e}"),
            Message::Exported(res) => self.apply_export(res),
            Message::Train(TrainEvent::Snapshot { model, .. }) => *preview = Some(*model),
            Message::Train(event) => self.models.train_event(event),
            Message::Trained(res) => self.finish_training(*res),
            Message::Predicted(res) => self.apply_prediction(res),
            Message::ModelLoaded(res) => self.apply_loaded_model(*res),
            Message::ModelSaved(Ok(dir)) => {
                self.status = format!("model saved to {}", dir.display());
            }
            Message::ModelSaved(Err(e)) => {
                self.error = Some(format!("saving the model failed: {e}"));
            }
            // The weight map has its own key for the viewer; the probabilities' generation (and
            // the gap-closing lines keyed by it) stay.
            Message::WeightMap(key, map) => self.models.weight_map = Some((key, map)),
            Message::GapLines(key, lines) => self.models.gap_lines = Some((key, lines)),
            Message::SliceRead(slice, res) => self.apply_slice_read(slice, res),
            Message::Deformed(sample) => self.apply_augment(*sample),
            Message::Compared(res) => self.apply_comparison(*res),
            Message::Imported(res) => self.apply_import(res),
            Message::Picked(path) => self.dialogs.system_answered(path),
        }
    }

    /// Whether a background job runs.
    pub fn busy(&self) -> bool {
        self.jobs.busy()
    }

    /// Whether training runs.
    pub fn training(&self) -> bool {
        self.jobs.running(JobKind::Train)
    }

    /// Whether a prediction, a model load or a model save runs.
    pub fn predicting(&self) -> bool {
        [JobKind::Predict, JobKind::LoadModel, JobKind::SaveModel]
            .into_iter()
            .any(|k| self.jobs.running(k))
    }

    /// Blocks until pending background jobs finish and applies their results (tests).
    pub fn finish_jobs(&mut self) {
        loop {
            self.poll_jobs();
            if !self.busy() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
