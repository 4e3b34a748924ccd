//! Checkpoints: network config, weights and optimizer state in one file, written atomically,
//! plus a human-readable `config.json` beside it.
//!
//! Layout of `MODEL_DIR/model.unet`: the magic `UNETSTD1`, then three length-prefixed
//! (u64 little-endian) sections: JSON metadata, the weights (burnpack), the optimizer state
//! (burnpack, possibly empty).

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module as _;
use burn::optim::ModuleOptimizer;
use burn::prelude::Device;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;

use crate::data::write_atomic;
use crate::ml::config::TrainConfig;
use crate::ml::error::MlError;
use crate::ml::unet::{UNet, UNetConfig};
use crate::postprocess::{Decision, GapClosing};

const MAGIC: &[u8; 8] = b"UNETSTD1";
/// The checkpoint file inside a model folder.
pub const CHECKPOINT_FILE: &str = "model.unet";
/// The human-readable copy of the metadata.
pub const CONFIG_FILE: &str = "config.json";

/// Everything about a model version except its tensors.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointMeta {
    /// The network.
    pub unet: UNetConfig,
    /// How it was trained (absent for an untrained network).
    pub train: Option<TrainConfig>,
    /// Training iterations done so far (over all resumed runs).
    pub iteration: u64,
    /// Seconds since the Unix epoch when written.
    pub created_unix_s: u64,
    /// Last training loss (running mean) and validation loss, when known.
    pub train_loss: Option<f32>,
    /// See `train_loss`.
    pub val_loss: Option<f32>,
    /// FNV-1a hash of the training labels, to tell which labels a version was trained on.
    pub labels_hash: Option<String>,
    /// Free-form note (for example the device that trained it).
    pub note: String,
    /// Decision threshold of the cell (class 2) probability of a two-class model, chosen on
    /// validation slices; `None`: the most probable class.
    #[serde(default)]
    pub threshold: Option<f32>,
    /// The test-time views the threshold was chosen with (`None`: one, the plain
    /// prediction); `predict` averages as many by default.
    #[serde(default)]
    pub threshold_views: Option<u8>,
    /// Gap closing after the threshold, chosen on validation slices with the threshold
    /// (`None`: none); `predict --binary`, the app's mask and exports apply it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_closing: Option<GapClosing>,
    /// The gap-closing settings of a model whose gap closing was switched off in the app,
    /// kept to switch it on again as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_closing_off: Option<GapClosing>,
}

impl CheckpointMeta {
    /// Metadata of a network at `iteration` without training details, dated now.
    pub fn new(unet: UNetConfig, iteration: u64, note: impl Into<String>) -> Self {
        Self {
            unet,
            train: None,
            iteration,
            created_unix_s: now_unix_s(),
            train_loss: None,
            val_loss: None,
            labels_hash: None,
            note: note.into(),
            threshold: None,
            threshold_views: None,
            gap_closing: None,
            gap_closing_off: None,
        }
    }

    /// How the model turns probabilities into classes.
    pub fn decision(&self) -> Decision {
        Decision {
            threshold: self.threshold,
            gap_closing: self.gap_closing,
        }
    }
}

/// A loaded checkpoint.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Metadata.
    pub meta: CheckpointMeta,
    /// Burnpack bytes of the weights.
    pub weights: Vec<u8>,
    /// Burnpack bytes of the optimizer state (empty when none was saved).
    pub optimizer: Vec<u8>,
}

impl Checkpoint {
    /// The checkpoint of `model` in memory (its weights can then go to another device with
    /// [`Self::model`], or start a fine-tuning run).
    pub fn of_model(meta: CheckpointMeta, model: &UNet) -> Result<Self, MlError> {
        let bytes = encode_checkpoint(&meta, model, None)?;
        decode_checkpoint(Path::new("memory"), &bytes)
    }

    /// The network with these weights on `device`.
    pub fn model(&self, device: &Device) -> Result<UNet, MlError> {
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(self.weights.clone()))
            .map_err(|e| MlError::Checkpoint(format!("weights: {e}")))?;
        self.meta
            .unet
            .init(device)
            .try_load_record(record)
            .map_err(|e| MlError::Checkpoint(format!("weights do not fit the config: {e}")))
    }

    /// Restores the optimizer state into `optim` (unchanged when none was saved).
    pub fn restore_optimizer(&self, optim: ModuleOptimizer) -> Result<ModuleOptimizer, MlError> {
        if self.optimizer.is_empty() {
            return Ok(optim);
        }
        optim
            .from_bytes(Bytes::from_bytes_vec(self.optimizer.clone()))
            .map_err(|e| MlError::Checkpoint(format!("optimizer state: {e}")))
    }
}

/// The checkpoint path of a model folder.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

/// Serialises a model (and optionally its optimizer) into checkpoint bytes.
pub fn encode_checkpoint(
    meta: &CheckpointMeta,
    model: &UNet,
    optim: Option<&ModuleOptimizer>,
) -> Result<Vec<u8>, MlError> {
    let json = serde_json::to_vec_pretty(meta).map_err(|e| MlError::Checkpoint(e.to_string()))?;
    let weights = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| MlError::Checkpoint(format!("weights: {e}")))?;
    let optimizer = match optim {
        Some(o) => o
            .into_bytes()
            .map_err(|e| MlError::Checkpoint(format!("optimizer state: {e}")))?
            .to_vec(),
        None => Vec::new(),
    };
    let mut out = Vec::with_capacity(8 + 24 + json.len() + weights.len() + optimizer.len());
    out.extend_from_slice(MAGIC);
    for section in [&json[..], &weights[..], &optimizer[..]] {
        out.extend_from_slice(&(section.len() as u64).to_le_bytes());
        out.extend_from_slice(section);
    }
    Ok(out)
}

/// Parses checkpoint bytes; `path` is only used in messages.
pub fn decode_checkpoint(path: &Path, bytes: &[u8]) -> Result<Checkpoint, MlError> {
    let bad = |m: &str| MlError::Checkpoint(format!("{}: {m}", path.display()));
    if bytes.len() < 8 || &bytes[..8] != MAGIC {
        return Err(bad("not a unet-studio checkpoint (wrong magic)"));
    }
    let mut rest = &bytes[8..];
    let mut sections = Vec::with_capacity(3);
    for name in ["metadata", "weights", "optimizer"] {
        if rest.len() < 8 {
            return Err(bad(&format!("truncated before the {name} section")));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&rest[..8]);
        let len = u64::from_le_bytes(len);
        rest = &rest[8..];
        if len > rest.len() as u64 {
            return Err(bad(&format!("the {name} section is truncated")));
        }
        let (s, r) = rest.split_at(len as usize);
        sections.push(s.to_vec());
        rest = r;
    }
    let meta: CheckpointMeta =
        serde_json::from_slice(&sections[0]).map_err(|e| bad(&format!("metadata: {e}")))?;
    meta.unet
        .validate()
        .map_err(|e| bad(&format!("network config: {e}")))?;
    if let Some(t) = meta.threshold
        && !(t > 0.0 && t < 1.0)
    {
        return Err(bad(&format!("threshold {t} is not between 0 and 1")));
    }
    meta.decision().check().map_err(|e| bad(&e))?;
    let optimizer = sections.pop().unwrap_or_default();
    let weights = sections.pop().unwrap_or_default();
    Ok(Checkpoint {
        meta,
        weights,
        optimizer,
    })
}

/// Writes a checkpoint into `dir` atomically (the previous one stays intact until the new
/// one is complete), then refreshes `config.json`.
pub fn save_checkpoint(
    dir: &Path,
    meta: &CheckpointMeta,
    model: &UNet,
    optim: Option<&ModuleOptimizer>,
) -> Result<PathBuf, MlError> {
    let bytes = encode_checkpoint(meta, model, optim)?;
    let path = checkpoint_path(dir);
    write_atomic(&path, &bytes)?;
    let json = serde_json::to_vec_pretty(meta).map_err(|e| MlError::Checkpoint(e.to_string()))?;
    write_atomic(&dir.join(CONFIG_FILE), &json)?;
    Ok(path)
}

/// Loads the checkpoint of a model folder (or a checkpoint file given directly).
pub fn load_checkpoint(path: &Path) -> Result<Checkpoint, MlError> {
    let file = if path.is_dir() {
        checkpoint_path(path)
    } else {
        path.to_path_buf()
    };
    let bytes = fs::read(&file).map_err(|e| crate::data::DataError::Io {
        path: file.clone(),
        source: e,
    })?;
    decode_checkpoint(&file, &bytes)
}

/// Seconds since the Unix epoch.
pub fn now_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// FNV-1a 64-bit hash, as 16 hex digits.
pub fn fnv1a_hex(chunks: impl IntoIterator<Item = impl AsRef<[u8]>>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for c in chunks {
        for &b in c.as_ref() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    format!("{h:016x}")
}
