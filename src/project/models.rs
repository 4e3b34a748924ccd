//! The networks an app session works with: a loaded model with its decision rule, and the
//! versions trained on a stack (each saved in its own folder with its metadata).

use crate::data::Plane;
use crate::ml::checkpoint::CheckpointMeta;
use crate::ml::config::TrainConfig;
use crate::ml::{Checkpoint, MlError, UNet, UNetConfig, save_checkpoint};
use crate::postprocess::{Decision, GapClosing};
use std::path::PathBuf;

/// A network the app can predict with.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    /// Weights (on the compute device, validation mode).
    pub model: UNet,
    /// Its config.
    pub unet: UNetConfig,
    /// Iterations it was trained for.
    pub iteration: u64,
    /// Where it was loaded from or saved to.
    pub path: Option<PathBuf>,
    /// Its decision rule (threshold of the cell probability or the argmax, gap closing),
    /// stored with the model.
    pub decision: Decision,
    /// Gap closing settings turned off in the app, to turn them on again.
    pub unused_gap_closing: Option<GapClosing>,
    /// The test-time views the decision rule was chosen with (`None`: one).
    pub threshold_views: Option<u8>,
    /// How it was trained (with the class weights a fine-tune of it keeps), when known.
    pub trained_with: Option<TrainConfig>,
}

impl LoadedModel {
    /// The network of a checkpoint on `device`, loaded from `path`.
    pub fn from_checkpoint(
        ckpt: &Checkpoint,
        device: &burn::prelude::Device,
        path: Option<PathBuf>,
    ) -> Result<Self, MlError> {
        Ok(Self {
            model: ckpt.model(device)?,
            unet: ckpt.meta.unet.clone(),
            iteration: ckpt.meta.iteration,
            path,
            decision: ckpt.meta.decision(),
            unused_gap_closing: ckpt.meta.gap_closing_off,
            threshold_views: ckpt.meta.threshold_views,
            trained_with: ckpt.meta.train.clone(),
        })
    }

    /// Its metadata, dated now, with `note`: what saving it or starting a fine-tune from it
    /// keeps (threshold, views, how it was trained).
    pub fn meta(&self, note: impl Into<String>) -> CheckpointMeta {
        CheckpointMeta {
            train: self.trained_with.clone(),
            threshold: self.decision.threshold,
            threshold_views: self.threshold_views,
            gap_closing: self.decision.gap_closing,
            gap_closing_off: self.unused_gap_closing,
            ..CheckpointMeta::new(self.unet.clone(), self.iteration, note)
        }
    }

    /// The checkpoint of this network in memory (see [`Self::meta`]).
    pub fn checkpoint(&self, note: impl Into<String>) -> Result<Checkpoint, MlError> {
        Checkpoint::of_model(self.meta(note), &self.model)
    }

    /// Turns gap closing off, or on again with the settings it had (or those of
    /// [`Decision::UNTUNED`]).
    pub fn toggle_gap_closing(&mut self) {
        match self.decision.gap_closing.take() {
            Some(g) => self.unused_gap_closing = Some(g),
            None => {
                self.decision.gap_closing = self
                    .unused_gap_closing
                    .take()
                    .or(Decision::UNTUNED.gap_closing)
            }
        }
    }

    /// The class of every pixel of `probs` by this model's decision rule.
    pub fn classes(&self, probs: &[Plane<f32>]) -> Plane<u16> {
        self.decision.classes(probs)
    }
}

/// One saved model version (every training run in the app makes one).
#[derive(Clone, Debug)]
pub struct VersionInfo {
    /// Its folder (`<labels>.model/versions/vNNNN`).
    pub dir: PathBuf,
    /// Its metadata (config, iterations, losses, labels hash, date).
    pub meta: CheckpointMeta,
}

/// The saved versions under a model folder, oldest first.
pub fn list_versions(model_dir: &std::path::Path) -> Vec<VersionInfo> {
    let Ok(entries) = std::fs::read_dir(model_dir.join("versions")) else {
        return Vec::new();
    };
    let mut v: Vec<VersionInfo> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter_map(|dir| {
            let meta = crate::ml::load_checkpoint(&dir).ok()?.meta;
            Some(VersionInfo { dir, meta })
        })
        .collect();
    v.sort_by(|a, b| a.dir.cmp(&b.dir));
    v
}

/// Saves `model` as the next version under `model_dir` and as its current model.
pub fn save_version(
    model_dir: &std::path::Path,
    meta: &CheckpointMeta,
    model: &UNet,
) -> Result<Vec<VersionInfo>, MlError> {
    let n = list_versions(model_dir).len() + 1;
    let dir = model_dir.join("versions").join(format!("v{n:04}"));
    save_checkpoint(&dir, meta, model, None)?;
    save_checkpoint(model_dir, meta, model, None)?;
    Ok(list_versions(model_dir))
}
