//! Training and prediction from the app: background jobs around the engine, the loss curve, live previews, versions.

use crate::app::jobs::{JobKind, Message};
use crate::app::model::{Overlay, PredictResult, Prediction, TrainResult, weight_key};
use crate::app::studio::StudioApp;
use crate::data::{LabelEncoding, LabelSlice, Plane};
use crate::ml::checkpoint::{CheckpointMeta, now_unix_s};
use crate::ml::resident::GpuPlanes;
use crate::ml::{
    MlError, StartFrom, TrainConfig, TrainEvent, UNet, save_checkpoint, train_fitting,
};
use crate::postprocess::Decision;
use crate::preprocess::{D4, class_weights, weight_map};
use crate::project::document::train_labels;
use crate::project::models::{LoadedModel, save_version};
use crate::project::sets::{JobSlices, input_channels, new_network, normalized, recipe, train_set};
use crate::project::tasks::{SliceProgress, predict_slices};
use std::path::PathBuf;

/// The painted slices a training run reads (in its job) and their labels.
type PaintedSet = (JobSlices, Vec<LabelSlice>);

impl StudioApp {
    /// Starts training on the painted labels of all slices: fine-tunes the current network,
    /// or starts from scratch with the chosen preset.
    pub fn start_training(&mut self) {
        if self.training() {
            return;
        }
        let Some(doc) = &self.doc else { return };
        let (start, set, pick) = match self.training_start(doc) {
            Ok(both) => both,
            Err(e) => {
                self.error = Some(e);
                return;
            }
        };
        // The model learns what the classes are called in this stack.
        let start = start.with_class_names(doc.classes.iter().map(|c| c.name.clone()).collect());
        let unet = start.unet().clone();
        self.models.training_unet = Some(unet.clone());
        let iterations = self.models.iterations.max(1);
        let tile = self.models.tile_for(&unet, true);
        self.models.tile_train = Some(tile);
        // The command line's recipe (learning rate, inherited class weights), with the app's
        // budget and a validation on held-out blocks of the strokes.
        let cfg = TrainConfig {
            iterations,
            tile_out: tile,
            seed: self.models.seed,
            val_fraction: 0.1,
            val_block_px: 64,
            val_every: (iterations / 5).max(1),
            checkpoint_every: 0,
            preview_every: (iterations / 10).max(10),
            weights: self.models.weights,
            minutes: (self.models.minutes > 0.0).then_some(self.models.minutes),
            ..recipe(&start)
        };
        let device = self.models.compute.clone();
        let model_dir = doc.model_dir();
        // Fine-tuning continues the count of the model it started from.
        let base_iteration = self.models.model.as_ref().map_or(0, |m| m.iteration);
        let fine_tune = matches!(start, StartFrom::FineTune(_));
        self.models.fine_tuning = fine_tune;
        self.models.losses.clear();
        self.models.val_losses.clear();
        self.models.val_rand.clear();
        self.status = format!("training on {}", device.description);
        // In a collection, the labels of the other images join the shown one's.
        let collection = self.collection.clone();
        if let Some((c, _)) = &collection {
            self.status.push_str(&format!(
                " with the labels of {} image(s) of the collection",
                c.images_with_work()
            ));
        }
        self.jobs.spawn(JobKind::Train, "train", move |ctx| {
            let run = || {
                let (images, labels) = set;
                let images = images.read()?;
                let images: Vec<Vec<&Plane<f32>>> =
                    images.iter().map(|i| i.iter().collect()).collect();
                let mut set = train_set(&images, labels, Vec::new());
                if let Some((c, shown)) = &collection {
                    for other in c.labelled_images(*shown)? {
                        for (slice, labels) in other.slices.iter().zip(other.labels) {
                            let planes: Vec<&Plane<f32>> =
                                pick.iter().filter_map(|&ch| slice.get(ch)).collect();
                            set.images.push(normalized(&planes));
                            set.labels.push(labels);
                        }
                    }
                }
                // Out of device memory: the same run again with a smaller tile.
                let out = train_fitting(
                    &set,
                    &cfg,
                    start,
                    &device,
                    None,
                    &ctx.cancel,
                    &mut |from, to| ctx.send(Message::Train(TrainEvent::TileReduced { from, to })),
                    &mut |e| ctx.send(Message::Train(e)),
                )?;
                // Keep the result on disk too (atomically): a crash later loses nothing.
                let mut out = out;
                out.iteration += base_iteration;
                out.model_iteration += base_iteration;
                let meta = CheckpointMeta {
                    unet: out.unet.clone(),
                    train: Some(out.config.clone()),
                    iteration: out.model_iteration,
                    created_unix_s: now_unix_s(),
                    train_loss: out.losses.last().copied(),
                    val_loss: out.validation.map(|v| v.0),
                    labels_hash: Some(set.labels_hash()),
                    note: format!("trained in the app on {}", device.description),
                    threshold: out.decision.threshold,
                    threshold_views: out.threshold_views,
                    gap_closing: out.decision.gap_closing,
                    gap_closing_off: None,
                };
                // A fine-tune that kept its starting network adds no version.
                let history = if fine_tune && out.model_iteration == base_iteration {
                    crate::project::models::list_versions(&model_dir)
                } else {
                    save_version(&model_dir, &meta, &out.model)?
                };
                Ok((out, history))
            };
            Message::Trained(Box::new(run()))
        });
    }

    /// Where a run from the app starts and what it trains on: the current model fine-tuned
    /// when it reads this stack's channels and predicts every class painted, otherwise a new
    /// network of the chosen preset reading the ticked channels; the painted labels with the
    /// channels the network reads. The error says what to do.
    fn training_start(
        &self,
        doc: &crate::project::Document,
    ) -> Result<(StartFrom, PaintedSet, Vec<usize>), String> {
        let (slices, labels) = train_labels(&doc.labels);
        let others = self
            .collection
            .as_ref()
            .is_some_and(|(c, _)| c.images_with_work() > 0);
        if labels.iter().map(LabelSlice::labelled_count).sum::<usize>() == 0 && !others {
            return Err("paint some labels first: every pixel is unlabelled".into());
        }
        let classes_used = crate::data::labels::class_count(&labels);
        let channels = doc.stack.channels;
        let fits = |m: &LoadedModel| {
            m.unet.classes >= classes_used && input_channels(&m.unet, channels, &doc.source).is_ok()
        };
        let start = match &self.models.model {
            Some(m) if fits(m) => StartFrom::FineTune(Box::new(
                m.checkpoint("")
                    .map_err(|e| format!("cannot fine-tune the current model: {e}"))?,
            )),
            _ => {
                let classes = classes_used.max(doc.classes.len());
                let models = &self.models;
                let unet = new_network(
                    models.preset,
                    classes,
                    &models.train_channels,
                    channels,
                    &doc.source,
                );
                StartFrom::Scratch(unet.map_err(|e| e.to_string())?)
            }
        };
        let pick =
            input_channels(start.unet(), channels, &doc.source).map_err(|e| e.to_string())?;
        // The painted slices only, read by the training job.
        let images = JobSlices::of(&doc.stack, &pick, &slices).map_err(|e| e.to_string())?;
        Ok((start, (images, labels), pick))
    }

    /// Makes a saved version the current model again (roll back), in the background.
    pub fn use_version(&mut self, dir: PathBuf) {
        if self.jobs.running(JobKind::LoadModel) || self.training() {
            return;
        }
        let device = self.models.compute.device.clone();
        let current = self.doc.as_ref().map(|d| d.model_dir());
        self.jobs.spawn(JobKind::LoadModel, "load model", move |_| {
            let load = || {
                let ckpt = crate::ml::load_checkpoint(&dir)?;
                let loaded = LoadedModel::from_checkpoint(&ckpt, &device, Some(dir))?;
                // The chosen version becomes the one reopened with the stack.
                if let Some(cur) = current {
                    save_checkpoint(&cur, &ckpt.meta, &loaded.model, None)?;
                }
                Ok(loaded)
            };
            Message::ModelLoaded(Box::new(load()))
        });
    }

    /// Turns gap closing of the current model on or off; the mask overlay and exports follow,
    /// and the choice is kept with the stack's model (saved in the background to the stack's
    /// model folder, which the stack reopens with; never into a bundled model).
    pub fn toggle_gap_closing(&mut self) {
        let Some(m) = &mut self.models.model else {
            return;
        };
        m.toggle_gap_closing();
        self.models.generation += 1;
        if let Some(dir) = self.doc.as_ref().map(|d| d.model_dir())
            && !self.training()
        {
            self.save_model_to(dir);
        }
    }

    /// Saves the current network (config and weights) as a model folder `dir`, in the
    /// background; File-level counterpart of the automatic saves beside the labels, for
    /// sharing a model or using it from the command line.
    pub fn save_model_to(&mut self, dir: PathBuf) {
        let Some(m) = &self.models.model else { return };
        let meta = m.meta("saved from the unet-studio app");
        let model = m.model.clone();
        self.jobs.spawn(JobKind::SaveModel, "save model", move |_| {
            Message::ModelSaved(save_checkpoint(&dir, &meta, &model, None).map(|_| dir))
        });
    }

    /// Forgets the current model: the next training starts from scratch. Saved versions stay.
    pub fn reset_model(&mut self) {
        if self.training() {
            return;
        }
        self.models.model = None;
        self.models.probabilities.iter_mut().for_each(|p| *p = None);
        self.models.generation += 1;
        self.status = "model reset: Train starts from scratch".into();
    }

    /// Stops training after the current iteration; the network trained so far is kept.
    pub fn stop_training(&mut self) {
        if self.training() {
            self.jobs.cancel(JobKind::Train);
            self.status = "stopping training…".into();
        }
    }

    /// Pauses training after the current iteration, or resumes it.
    pub fn toggle_pause_training(&mut self) {
        if self.training() {
            let pause = !self.jobs.is_paused(JobKind::Train);
            self.jobs.set_paused(JobKind::Train, pause);
            self.status = if pause {
                "training paused (Resume goes on, Stop keeps the network trained so far)".into()
            } else {
                "training resumed".into()
            };
        }
    }

    /// Whether training runs but is paused.
    pub fn training_paused(&self) -> bool {
        self.jobs.is_paused(JobKind::Train)
    }

    /// Whether a paused training has finished its last iteration and waits.
    pub fn training_held(&self) -> bool {
        self.jobs.is_held(JobKind::Train)
    }

    /// Predicts the shown slice in the background (overlap-tile).
    pub fn predict_slice(&mut self) {
        self.predict_with(None, false);
    }

    /// Predicts every slice of the stack in the background.
    pub fn predict_stack(&mut self) {
        self.predict_with(None, true);
    }

    pub(crate) fn predict_with(&mut self, preview: Option<UNet>, all: bool) {
        if self.jobs.running(JobKind::Predict) {
            return;
        }
        let (Some(doc), Some(m)) = (&self.doc, &self.models.model) else {
            return;
        };
        let preview_run = preview.is_some();
        let model = preview.unwrap_or_else(|| m.model.clone());
        let unet = m.unet.clone();
        let slices: Vec<usize> = if all {
            (0..doc.slices()).collect()
        } else {
            vec![self.view.slice]
        };
        let pick = match input_channels(&unet, doc.stack.channels, &doc.source) {
            Ok(p) => p,
            Err(e) => {
                self.error = Some(format!("cannot predict with this model: {e}"));
                return;
            }
        };
        if all && doc.stack.on_demand() {
            self.error = Some(
                "this stack is larger than memory and read slice by slice: predict the shown slice, or export masks, which predicts every slice one at a time"
                    .into(),
            );
            return;
        }
        // The channels the network reads, of each slice to predict (read by the job from a
        // stack read on demand).
        let images = match JobSlices::of(&doc.stack, &pick, &slices) {
            Ok(i) => i,
            Err(e) => {
                self.error = Some(format!("cannot read the stack: {e}"));
                return;
            }
        };
        let device = self.models.compute.device.clone();
        let tile = self.models.tile_for(&unet, false);
        self.models.tile_predict = Some(tile);
        // Live previews during training stay single-view; the user's predictions average
        // the chosen number of flips and quarter turns.
        let views_n = if preview_run {
            1
        } else {
            self.models.tta_views
        };
        let views: Vec<D4> = D4::all()[..views_n.clamp(1, 8)].to_vec();
        let (shown, shares_display) = (self.view.slice, self.models.compute.is_gpu);
        self.jobs.spawn(JobKind::Predict, "predict", move |ctx| {
            /// Progress of the job, and the probabilities by stack slice.
            struct Report<'a, 'b> {
                ctx: &'a crate::jobs::JobContext<Message>,
                slices: &'b [usize],
                out: Vec<(usize, Vec<Plane<f32>>)>,
                /// The shown slice, kept on the GPU for the viewer (burn on the display's
                /// device only).
                keep: Option<usize>,
                on_gpu: Option<(usize, GpuPlanes)>,
            }
            impl SliceProgress for Report<'_, '_> {
                fn retry(&mut self, i: usize, from: usize, to: usize) {
                    let n = self.slices.len();
                    self.ctx.progress(
                        i as f32 / n as f32,
                        format!("out of memory with {from} px tiles: retrying with {to} px"),
                    );
                }
                fn tiles(&mut self, i: usize, done: usize, total: usize) {
                    let n = self.slices.len();
                    let f = (i as f32 + done as f32 / total.max(1) as f32) / n as f32;
                    self.ctx.progress(f, format!("slice {} of {n}", i + 1));
                }
                fn slice(&mut self, i: usize, probs: Vec<Plane<f32>>) {
                    self.out.push((self.slices[i], probs));
                }
                fn keep_on_gpu(&self, i: usize) -> bool {
                    self.keep == Some(self.slices[i])
                }
                fn slice_on_gpu(&mut self, i: usize, planes: GpuPlanes) {
                    self.on_gpu = Some((self.slices[i], planes));
                }
            }
            let images = match images.read() {
                Ok(i) => i,
                Err(e) => return Message::Predicted(Err(e.into())),
            };
            let mut report = Report {
                ctx,
                slices: &slices,
                out: Vec::with_capacity(slices.len()),
                keep: shares_display.then_some(shown),
                on_gpu: None,
            };
            let raw: Vec<Vec<&Plane<f32>>> = images.iter().map(|i| i.iter().collect()).collect();
            let res = predict_slices(
                (&model, &unet),
                &raw,
                tile,
                &views,
                (&device, &ctx.cancel),
                &mut report,
            );
            Message::Predicted(res.map(|tile| Prediction {
                tile,
                slices: report.out,
                on_gpu: report.on_gpu,
            }))
        });
    }

    /// Starts computing the gap-closing lines of the shown slice's mask when the mask overlay
    /// needs them (the model's rule closes gaps) and they are missing or stale. Runs in the
    /// background; the shader draws the mask over them.
    pub(crate) fn refresh_gap_lines(&mut self) {
        if self.models.overlay != Overlay::Mask || self.jobs.running(JobKind::GapLines) {
            return;
        }
        let slice = self.view.slice;
        let Some(key) = self.models.gap_key(slice) else {
            return;
        };
        if self
            .models
            .gap_lines
            .as_ref()
            .is_some_and(|(k, _)| *k == key)
        {
            return;
        }
        let (Some(probs), Some(cfg)) = (
            self.models
                .probabilities
                .get(slice)
                .and_then(Option::as_ref),
            self.models
                .model
                .as_ref()
                .and_then(|m| m.decision.gap_closing),
        ) else {
            return;
        };
        let Some(p_cell) = probs.get(1).cloned() else {
            return;
        };
        self.jobs
            .spawn(JobKind::GapLines, "closing gaps", move |_| {
                let lines = crate::postprocess::gap_lines(&p_cell, &cfg);
                Message::GapLines(key, lines.map(u8::from))
            });
    }

    /// Starts computing the weight map of the shown slice when the view needs one that is
    /// missing or stale (labels edited, w0 or sigma changed). Runs in the background.
    pub(crate) fn refresh_weight_map(&mut self) {
        if self.models.overlay != Overlay::WeightMap || self.jobs.running(JobKind::WeightMap) {
            return;
        }
        let Some(doc) = &self.doc else { return };
        let cfg = self.models.weights;
        let key = weight_key(self.view.slice, doc.edits, &cfg);
        if self
            .models
            .weight_map
            .as_ref()
            .is_some_and(|(k, _)| *k == key)
        {
            return;
        }
        let (_, all) = train_labels(&doc.labels);
        let shown = doc.labels.get(self.view.slice).cloned();
        let classes = doc.classes.len().max(2);
        self.jobs.spawn(JobKind::WeightMap, "weight map", move |_| {
            // Class balance over all painted slices, as training computes it.
            let cw = class_weights(&all, classes);
            let map = shown
                .and_then(|p| {
                    crate::data::encode_labels(&p.map(u32::from), LabelEncoding::Classes).ok()
                })
                .map(|l| weight_map(&l, &cw, &cfg))
                .unwrap_or_else(|| Plane::filled(0, 0, 0.0));
            Message::WeightMap(key, map)
        });
    }

    /// A model version loaded in the background becomes the model.
    pub(crate) fn apply_loaded_model(&mut self, res: Result<LoadedModel, MlError>) {
        match res {
            Ok(m) => {
                self.status = format!(
                    "using model {}",
                    m.path
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                );
                self.models.set_model(m);
                self.models.probabilities.iter_mut().for_each(|p| *p = None);
                self.models.generation += 1;
                self.predict_slice();
            }
            Err(e) => self.error = Some(format!("loading the model failed: {e}")),
        }
    }

    /// Live preview: predicts the shown slice with the network as trained so far.
    pub(crate) fn preview(&mut self, network: UNet) {
        if self.models.model.is_some() {
            self.predict_with(Some(network), false);
        } else if let Some(unet) = self.models.training_unet.clone() {
            // No model yet: the preview network is the current one until training ends.
            self.models.model = Some(LoadedModel {
                model: network,
                decision: Decision::for_new_network(unet.classes),
                unused_gap_closing: None,
                unet,
                iteration: 0,
                path: None,
                threshold_views: None,
                trained_with: None,
            });
            self.predict_slice();
        }
    }

    /// A finished training: its network becomes the model (or the model stays, said so).
    pub(crate) fn finish_training(&mut self, res: TrainResult) {
        match res {
            Ok((out, history)) => {
                self.models.history = history;
                let ended = if out.cancelled { "stopped" } else { "finished" };
                let unchanged = self.models.fine_tuning
                    && self.models.model.as_ref().map(|m| m.iteration) == Some(out.model_iteration);
                self.status = if unchanged {
                    format!(
                        "training {ended} at iteration {}; the model is unchanged: every fine-tuned network segmented the labelled slices worse than it (measured against its own segmentation with your labels over it). Paint where the model is wrong to correct it",
                        out.iteration
                    )
                } else {
                    format!(
                        "training {ended} at iteration {}; kept the network of iteration {} (best validation)",
                        out.iteration, out.model_iteration
                    )
                };
                self.models.model = Some(LoadedModel {
                    model: out.model,
                    unet: out.unet,
                    iteration: out.model_iteration,
                    path: self.doc.as_ref().map(|d| d.model_dir()),
                    decision: out.decision,
                    unused_gap_closing: None,
                    threshold_views: out.threshold_views,
                    trained_with: Some(out.config),
                });
                self.predict_slice();
            }
            Err(e) => {
                self.error = Some(format!("training failed (the previous model is kept): {e}"))
            }
        }
    }

    /// Takes a finished prediction's probabilities.
    pub(crate) fn apply_prediction(&mut self, res: PredictResult) {
        match res {
            Ok(Prediction {
                tile,
                slices: results,
                on_gpu,
            }) => {
                if self.models.tile_predict.is_some_and(|t| t > tile) {
                    self.models.tile_note = format!(
                        "out of memory with {} px prediction tiles: now {tile} px",
                        self.models.tile_predict.unwrap_or(tile)
                    );
                    self.models.tile_predict = Some(tile);
                }
                let n = self.doc.as_ref().map_or(0, |d| d.slices());
                self.models.probabilities.resize(n, None);
                // A stack read slice by slice keeps the predictions of the slices just
                // predicted only (predicting slice after slice must not fill the memory).
                if self.doc.as_ref().is_some_and(|d| d.stack.on_demand()) {
                    self.models.probabilities.iter_mut().for_each(|p| *p = None);
                }
                for (slice, probs) in results {
                    if let Some(p) = self.models.probabilities.get_mut(slice) {
                        *p = Some(probs);
                    }
                }
                self.models.generation += 1;
                let generation = self.models.generation;
                self.models.on_gpu = on_gpu.map(|(slice, planes)| (slice, generation, planes));
            }
            Err(MlError::Cancelled) => {}
            Err(e) => self.error = Some(format!("prediction failed: {e}")),
        }
    }
}
