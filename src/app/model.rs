//! The state of the model panel ([`ModelState`]): the network, the loss curves, the overlay
//! and the maps it shows. What it does is in `actions/model.rs` (its jobs report through
//! [`super::jobs`]); what it draws is in [`crate::ui::panels`].

use crate::data::Plane;
use crate::ml::memory::largest_fitting_tile;
use crate::ml::{ComputeDevice, MlError, Preset, TrainEvent, TrainOutcome, UNetConfig};
use crate::preprocess::WeightMapConfig;
use crate::project::models::{LoadedModel, VersionInfo};

/// A finished prediction: the output tile finally used, the probabilities per predicted
/// slice, and the shown slice's probabilities in the GPU's buffer when burn computes on the
/// display's device.
pub struct Prediction {
    /// The output tile finally used.
    pub tile: usize,
    /// `(slice, probabilities)` of each predicted slice.
    pub slices: Vec<(usize, Vec<Plane<f32>>)>,
    /// `(slice, buffer)` of the shown slice when kept on the GPU.
    pub on_gpu: Option<(usize, crate::ml::resident::GpuPlanes)>,
}

/// See [`Prediction`].
pub(crate) type PredictResult = Result<Prediction, MlError>;

/// A training job's result: the run and the versions now saved.
pub(crate) type TrainResult = Result<(TrainOutcome, Vec<VersionInfo>), MlError>;

/// What the overlay shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlay {
    /// Nothing.
    None,
    /// Probability of the selected class.
    Probability,
    /// Where the argmax is the selected class.
    Mask,
    /// Entropy of the class distribution, normalised to 0..1: where labels would help most.
    Uncertainty,
    /// The paper's weight map of the painted labels (w_c plus the border term).
    WeightMap,
}

/// Key of a computed weight map: slice, label edits, w0, sigma.
pub(crate) type WeightKey = (usize, u64, u32, u32);

/// Key of computed gap-closing lines: slice, probabilities' generation, the gap closing's
/// seed threshold and smallest seed.
pub(crate) type GapKey = (usize, u64, u32, u32);

pub(crate) fn weight_key(slice: usize, edits: u64, cfg: &WeightMapConfig) -> WeightKey {
    (slice, edits, cfg.w0.to_bits(), cfg.sigma_px.to_bits())
}

/// Training and prediction state of the app.
pub struct ModelState {
    /// The current network.
    pub model: Option<LoadedModel>,
    /// The running (or last) training started from the current network.
    pub fine_tuning: bool,
    /// `[iteration of the run, Rand error]` of each validation on whole slices (a fine-tune:
    /// against the starting model's segmentation with the labels over it).
    pub val_rand: Vec<[f64; 2]>,
    /// Where training and prediction run.
    pub compute: ComputeDevice,
    /// Preset of a network trained from scratch.
    pub preset: Preset,
    /// Iterations of one training run.
    pub iterations: u64,
    /// Seed of tile sampling and augmentation (fixed: the same labels train the same model).
    pub seed: u64,
    /// `(iteration, loss)` of the running (or last) training.
    pub losses: Vec<[f64; 2]>,
    /// `(iteration, validation loss)`.
    pub val_losses: Vec<[f64; 2]>,
    /// Training speed.
    pub its_per_s: f32,
    /// Probabilities per slice (class `k` at index `k - 1`), from the current network.
    pub probabilities: Vec<Option<Vec<Plane<f32>>>>,
    /// The last prediction's probabilities of the shown slice in the GPU's buffer (burn on the
    /// display's device), with the slice and the generation they belong to: the viewer copies
    /// them into its textures on the GPU.
    pub(crate) on_gpu: Option<(usize, u64, crate::ml::resident::GpuPlanes)>,
    /// Overlay mode.
    pub overlay: Overlay,
    /// Class the probability / mask overlays show.
    pub overlay_class: u8,
    /// Overlay opacity.
    pub overlay_opacity: f32,
    /// Bumped whenever probabilities change, so the viewer re-uploads the map.
    pub generation: u64,
    /// Saved versions of the model of this stack, oldest first.
    pub history: Vec<VersionInfo>,
    /// Weight-map parameters of the weight-map view (and of training).
    pub weights: WeightMapConfig,
    /// The weight map last computed, with its key.
    pub weight_map: Option<(WeightKey, Plane<f32>)>,
    /// The gap-closing lines last computed (1 on a line), with their key.
    pub gap_lines: Option<(GapKey, Plane<u8>)>,
    /// Config of the network being trained (for previews before the first model exists).
    pub(crate) training_unet: Option<UNetConfig>,
    /// Output tile edges of training and prediction: the largest that fit the device's
    /// memory (at most [`MAX_TRAIN_TILE_CPU`] for training on the CPU, to keep iterations
    /// short), reduced after an out-of-memory failure.
    pub tile_train: Option<usize>,
    /// See `tile_train`.
    pub tile_predict: Option<usize>,
    /// What happened to the tile sizes, for the model panel.
    pub tile_note: String,
    /// Views averaged by a prediction (test-time augmentation: 1 = off, up to the 8 flips
    /// and quarter turns).
    pub tta_views: usize,
    /// Channels of the stack a new network reads (0-based; empty: all, up to 4).
    pub train_channels: Vec<usize>,
    /// Time limit of a training run in minutes (0: none; the learning-rate schedule follows
    /// whichever of it and the iterations ends first).
    pub minutes: f64,
}

/// Largest output tile of training on the CPU: 100 px keeps an iteration of the lite net near
/// 0.1 s on two cores, so the preview moves while one watches.
pub const MAX_TRAIN_TILE_CPU: usize = 100;

/// Largest output tile otherwise: the paper's 388 px.
pub const MAX_TILE: usize = 388;

impl ModelState {
    /// Fresh state computing on `compute`.
    pub fn new(compute: ComputeDevice) -> Self {
        Self {
            model: None,
            compute,
            preset: Preset::Lite,
            iterations: 200,
            seed: 0,
            losses: Vec::new(),
            val_losses: Vec::new(),
            its_per_s: 0.0,
            probabilities: Vec::new(),
            on_gpu: None,
            overlay: Overlay::Probability,
            overlay_class: 2,
            overlay_opacity: 0.5,
            generation: 0,
            history: Vec::new(),
            weights: WeightMapConfig::default(),
            weight_map: None,
            gap_lines: None,
            training_unet: None,
            fine_tuning: false,
            val_rand: Vec::new(),
            tile_train: None,
            train_channels: Vec::new(),
            tile_predict: None,
            tile_note: String::new(),
            tta_views: 1,
            minutes: 0.0,
        }
    }

    /// Makes `m` the current model; predictions then use the views its threshold was chosen
    /// with (the "8 flips and rotations" box follows).
    pub fn set_model(&mut self, m: LoadedModel) {
        self.tta_views = usize::from(m.threshold_views.unwrap_or(1)).clamp(1, 8);
        self.model = Some(m);
    }

    /// The output tile for `unet` on the compute device: the largest that fits its memory,
    /// capped as described at [`Self::tile_train`], and never larger than one that already
    /// ran out of memory.
    pub(crate) fn tile_for(&self, unet: &UNetConfig, training: bool) -> usize {
        let cap = if training && !self.compute.is_gpu {
            MAX_TRAIN_TILE_CPU
        } else {
            MAX_TILE
        };
        let known = if training {
            self.tile_train
        } else {
            self.tile_predict
        };
        let cap = known.map_or(cap, |k| k.min(cap));
        largest_fitting_tile(unet, &self.compute.memory, training, cap)
    }

    /// Takes one event of the running training: the loss curves, the validation figures, a
    /// smaller tile after running out of memory (snapshots go to the live preview).
    pub(crate) fn train_event(&mut self, event: TrainEvent) {
        match event {
            TrainEvent::Iteration {
                iteration,
                loss,
                its_per_s,
            } => {
                // Iterations of this run (fine-tuning counts from 1 again).
                self.losses.push([iteration as f64, f64::from(loss)]);
                self.its_per_s = its_per_s;
            }
            TrainEvent::Validation {
                iteration,
                loss,
                rand_error,
                ..
            } => {
                self.val_losses.push([iteration as f64, f64::from(loss)]);
                if let Some(r) = rand_error {
                    self.val_rand.push([iteration as f64, r]);
                }
            }
            TrainEvent::TileReduced { from, to } => {
                self.tile_train = Some(to);
                self.tile_note =
                    format!("out of memory with {from} px training tiles: retrying with {to} px");
                self.losses.clear();
                self.val_losses.clear();
            }
            TrainEvent::Snapshot { .. }
            | TrainEvent::Started { .. }
            | TrainEvent::Checkpoint { .. }
            | TrainEvent::Threshold { .. } => {}
        }
    }

    /// Value range of the overlay map: (shown cold, shown hot).
    pub fn overlay_range(&self) -> (f32, f32) {
        match self.overlay {
            // The map's own maximum: sparse strokes peak near 1, dense labels near w0 + 1.
            Overlay::WeightMap => {
                let max = self
                    .weight_map
                    .as_ref()
                    .map_or(0.0, |(_, w)| w.data.iter().copied().fold(0.0f32, f32::max));
                (0.0, max.max(1.0))
            }
            _ => (0.0, 1.0),
        }
    }

    /// The weight map of `slice`, if the weight-map overlay is shown and it is computed (the
    /// viewer's map overlay; the network's overlays are computed by the shader from the
    /// probabilities).
    pub fn overlay_map(&self, slice: usize) -> Option<Vec<f32>> {
        if self.overlay != Overlay::WeightMap {
            return None;
        }
        self.weight_map
            .as_ref()
            .filter(|(k, _)| k.0 == slice)
            .map(|(_, m)| m.data.clone())
    }

    /// The slice whose current probabilities are also in the GPU's buffer, if any.
    pub fn slice_on_gpu(&self) -> Option<usize> {
        self.on_gpu
            .as_ref()
            .filter(|(_, g, _)| *g == self.generation)
            .map(|(s, _, _)| *s)
    }

    /// The threshold of class 2 the mask overlay draws by (the model's rule for two classes),
    /// or `None`: the most probable class.
    pub fn mask_threshold(&self) -> Option<f32> {
        let m = self.model.as_ref()?;
        m.decision.threshold_for(m.unet.classes)
    }

    /// The key of the gap-closing lines the mask of `slice` needs, if the model's rule closes
    /// gaps and the slice is predicted.
    pub(crate) fn gap_key(&self, slice: usize) -> Option<GapKey> {
        let g = self.model.as_ref()?.decision.gap_closing?;
        self.probabilities.get(slice)?.as_ref()?;
        Some((
            slice,
            self.generation,
            g.seed_threshold.to_bits(),
            g.min_seed_area,
        ))
    }

    /// The gap-closing lines of `slice` for the current rule and probabilities, if computed.
    pub fn gap_lines_of(&self, slice: usize) -> Option<&Plane<u8>> {
        let key = self.gap_key(slice)?;
        self.gap_lines
            .as_ref()
            .filter(|(k, _)| *k == key)
            .map(|(_, l)| l)
    }
}
