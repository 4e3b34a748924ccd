//! `unet-studio train`: train, fine-tune or resume a U-Net from the command line.

use super::common::{bar, bytes_per_pixel, check_task_memory, say, valid_tile};
use crate::data::{LabelEncoding, Stack};
use crate::ml::config::LrSchedule;
use crate::ml::train::resume_dir;
use crate::ml::{
    CancelToken, DeviceChoice, OptimizerConfig, Preset, StartFrom, TrainConfig, TrainEvent,
    TrainSet, load_checkpoint, select_device, train_fitting,
};
use crate::preprocess::{AugmentConfig, WeightMapConfig};
use crate::project::sets::{
    check_plausible_classes, held_out_slices, images_and_labels, input_channels, new_network,
    picked, recipe, train_set,
};
use indicatif::ProgressBar;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Image file, multipage TIFF or folder.
    #[arg(long)]
    images: PathBuf,
    /// Label image(s), same layout as --images.
    #[arg(long)]
    labels: PathBuf,
    /// classes | binary | instances.
    #[arg(long, default_value = "classes")]
    label_encoding: LabelEncoding,
    /// Model folder to write (config.json, model.unet).
    #[arg(long)]
    out: PathBuf,
    /// Start from this model's weights (fine-tune).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Continue the run saved in --out (weights, optimiser state, iteration count).
    #[arg(long)]
    resume: bool,
    /// paper | lite.
    #[arg(long, default_value = "lite")]
    preset: Preset,
    /// Iterations (one tile each) of this run; with --resume, this many more.
    #[arg(long, default_value_t = 1000)]
    iterations: u64,
    /// Time budget in minutes: the run ends after this long or after --iterations,
    /// whichever comes first (the learning-rate schedule follows the budget).
    #[arg(long)]
    minutes: Option<f64>,
    /// Output tile edge in pixels (rounded to a valid size).
    #[arg(long)]
    tile: Option<usize>,
    /// auto | gpu | cpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Fully labelled slices held out for validation (images; with --val-labels, same
    /// encoding as --labels): the run keeps the network with the lowest Rand error on them
    /// and stores the decision threshold that gives it.
    #[arg(long, requires = "val_labels")]
    val_images: Option<PathBuf>,
    /// Labels of --val-images.
    #[arg(long, requires = "val_images")]
    val_labels: Option<PathBuf>,
    /// Seed of sampling, augmentation and the validation split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of labelled 64-px blocks held out for validation.
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f32,
    /// adam | sgd (the paper's: momentum 0.99).
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// Learning rate (default 0.001 from scratch, 0.0001 when fine-tuning with --init).
    #[arg(long)]
    lr: Option<f64>,
    /// Learning-rate schedule: cosine (warm-up, then decay to 1 %) | constant.
    #[arg(long, default_value = "cosine")]
    schedule: String,
    /// Keep the last network, not the one of the best validation.
    #[arg(long)]
    keep_last: bool,
    /// Turn off the class-frequency balancing of the weight map (w_c = 1).
    #[arg(long)]
    no_class_balance: bool,
    /// Class weights w_c of classes 1, 2, ... instead of the labels' frequencies (default with
    /// --init: the ones the model was trained with, when it records them).
    #[arg(long, value_delimiter = ',')]
    class_weights: Vec<f32>,
    /// With --init: weight (relative to the class weights) of the model's own predictions on
    /// the unlabelled pixels, learnt as soft targets beside the labels (distillation) so that
    /// a fine-tune on a few strokes does not unlearn the rest of the image; 0 turns it off.
    #[arg(long, default_value_t = 0.2)]
    parent_weight: f32,
    /// Names of the classes, in class order (for example membrane,cell), saved with the
    /// model; the app names a new stack's classes after them.
    #[arg(long, value_delimiter = ',')]
    class_names: Vec<String>,
    /// Turn off the elastic deformation (ablation).
    #[arg(long)]
    no_elastic: bool,
    /// Turn off the border term of the weight map (ablation).
    #[arg(long)]
    no_border_weights: bool,
    /// Validate every N iterations.
    #[arg(long, default_value_t = 100)]
    val_every: u64,
    /// Checkpoint every N iterations.
    #[arg(long, default_value_t = 200)]
    checkpoint_every: u64,
    /// Channels of the images that feed a new network (0-based, comma-separated; default:
    /// all, up to 4). A fine-tune or resume reads the channels its model names.
    #[arg(long, value_delimiter = ',')]
    channels: Vec<usize>,
}

pub(crate) fn cmd_train(a: TrainArgs) -> Result<()> {
    let (set, start) = training_set(&a)?;
    let device = select_device(a.device)?;
    eprintln!("device: {}", device.description);
    if let Some(r) = &device.fallback_reason {
        eprintln!("  (CPU chosen: {r})");
    }
    if a.init.is_some() && set.held_out.is_empty() && !a.keep_last {
        eprintln!(
            "validation: the starting model's segmentation of the training slices, corrected by the labels (no --val-images)"
        );
    }
    let cfg = train_config(&a, &start)?;
    let cancel = CancelToken::new();
    let pb = bar(a.iterations, "train");
    let mut on_event = |e: TrainEvent| report(&pb, e);
    let out = train_fitting(
        &set,
        &cfg,
        start,
        &device,
        Some(&a.out),
        &cancel,
        &mut |from, to| {
            say(
                &pb,
                format!("out of device memory with {from} px tiles: starting again with {to} px"),
            )
        },
        &mut on_event,
    )?;
    pb.finish_and_clear();
    let tail = &out.losses[out.losses.len().saturating_sub(20)..];
    eprintln!(
        "done: iteration {}, {}{}; model (iteration {}{}) in {}",
        out.iteration,
        if tail.is_empty() {
            "no training steps".to_string()
        } else {
            format!(
                "mean loss of the last {} steps {:.4}",
                tail.len(),
                tail.iter().sum::<f32>() / tail.len() as f32
            )
        },
        out.validation
            .filter(|(l, _)| l.is_finite())
            .map(|(l, e)| format!(", validation loss {l:.4} wrong px {e:.4}"))
            .unwrap_or_default(),
        out.model_iteration,
        if out.decision == Default::default() {
            String::new()
        } else {
            format!(", mask: {}", out.decision.describe())
        },
        a.out.display()
    );
    Ok(())
}

/// The images (normalised, the channels the network reads) and labels of `--images` /
/// `--labels`, checked against each other, with the held-out slices of `--val-images` /
/// `--val-labels`, and where the run starts.
fn training_set(a: &TrainArgs) -> Result<(TrainSet, StartFrom)> {
    check_task_memory(&a.images, bytes_per_pixel::TRAIN, "train")?;
    // A file, a folder of equal images (one stack), or a collection of images that differ
    // (one stack each, their labels file by file).
    let (images, labels) = images_and_labels(&a.images, &a.labels, a.label_encoding)?;
    let stack = &images[0];
    if labels.iter().all(|l| l.labelled_count() == 0) {
        bail!(
            "{}: no labelled pixels (every value is 0 = unlabelled in the '{}' encoding)",
            a.labels.display(),
            a.label_encoding
        );
    }
    check_plausible_classes(&a.labels, &labels, a.label_encoding)?;
    let classes = crate::data::labels::class_count(&labels);
    let start = start_from(a, classes, stack)?;
    let pick = input_channels(start.unet(), stack.channels, &a.images)?;
    if !a.channels.is_empty() && a.channels != pick {
        bail!(
            "--channels {:?}: the model of --init/--resume reads channels {pick:?}",
            a.channels
        );
    }
    if images.len() > 1 {
        eprintln!(
            "{}: a collection of {} images of different sizes or channels, {} channel(s) each; the network reads channel(s) {pick:?}",
            a.images.display(),
            images.len(),
            stack.channels
        );
    } else if stack.channels > 1 {
        eprintln!(
            "{}: {}; the network reads channel(s) {pick:?}",
            a.images.display(),
            stack.shape_text()
        );
    }
    let held_out = match (&a.val_images, &a.val_labels) {
        (Some(images), Some(labels)) => held_out_slices(images, labels, a.label_encoding, &pick)?,
        _ => Vec::new(),
    };
    let mut inputs = Vec::new();
    for s in &images {
        inputs.extend(picked(s, &pick)?);
    }
    Ok((train_set(&inputs, labels, held_out), start))
}

/// Where the run starts: `--resume`, `--init` or a fresh network of `--preset` for `classes`
/// classes reading the `--channels` of `stack`.
fn start_from(a: &TrainArgs, classes: usize, stack: &Stack) -> Result<StartFrom> {
    let start = if a.resume {
        let dir = resume_dir(&a.out);
        StartFrom::Resume(Box::new(load_checkpoint(&dir).with_context(|| {
            format!("--resume: no checkpoint to resume in {}", a.out.display())
        })?))
    } else if let Some(init) = &a.init {
        StartFrom::FineTune(Box::new(load_checkpoint(init)?))
    } else {
        StartFrom::Scratch(new_network(
            a.preset,
            classes,
            &a.channels,
            stack.channels,
            &a.images,
        )?)
    };
    Ok(if a.class_names.is_empty() {
        start
    } else {
        start.with_class_names(a.class_names.clone())
    })
}

/// The run's configuration from the flags (and, for a fine-tune or resume, the class weights
/// its checkpoint was trained with).
fn train_config(a: &TrainArgs, start: &StartFrom) -> Result<TrainConfig> {
    if !(a.parent_weight.is_finite() && (0.0..=10.0).contains(&a.parent_weight)) {
        bail!(
            "--parent-weight {} is outside 0..=10 (0 turns it off)",
            a.parent_weight
        );
    }
    let base = recipe(start);
    let optimizer = match a.optimizer.to_ascii_lowercase().as_str() {
        "sgd" => OptimizerConfig::Sgd {
            lr: a.lr.unwrap_or(0.001),
            momentum: 0.99,
        },
        "adam" => OptimizerConfig::Adam {
            lr: a.lr.unwrap_or(base.optimizer.lr()),
        },
        other => bail!("unknown optimizer '{other}': use adam or sgd"),
    };
    let schedule = match a.schedule.to_ascii_lowercase().as_str() {
        "cosine" => LrSchedule::cosine(),
        "constant" => LrSchedule::Constant,
        other => bail!("unknown schedule '{other}': use cosine or constant"),
    };
    let unet = start.unet().clone();
    let requested = a.tile.unwrap_or(match a.preset {
        Preset::Lite => 196,
        Preset::Paper => 388,
    });
    let tile = valid_tile(&unet.geometry(), requested)?;
    let augment = AugmentConfig {
        elastic: !a.no_elastic,
        ..base.augment
    };
    let weights = WeightMapConfig {
        border: !a.no_border_weights,
        balance_classes: !a.no_class_balance,
        ..base.weights
    };
    let class_weights = if a.class_weights.is_empty() {
        base.class_weights.clone()
    } else {
        a.class_weights.clone()
    };
    Ok(TrainConfig {
        iterations: a.iterations,
        tile_out: tile,
        optimizer,
        seed: a.seed,
        val_fraction: a.val_fraction,
        val_every: a.val_every,
        checkpoint_every: a.checkpoint_every,
        augment,
        weights,
        schedule,
        minutes: a.minutes,
        keep_best: !a.keep_last,
        class_weights,
        parent_weight: a.parent_weight,
        ..base
    })
}

/// Shows a training event on the progress bar.
fn report(pb: &ProgressBar, e: TrainEvent) {
    match e {
        TrainEvent::Started {
            tile_in,
            tile_out,
            train_pixels,
            val_pixels,
            first_iteration,
            ..
        } => say(
            pb,
            format!(
                "tile {tile_in} -> {tile_out} px, {train_pixels} training / {val_pixels} validation pixels, from iteration {first_iteration}"
            ),
        ),
        TrainEvent::Iteration {
            loss, its_per_s, ..
        } => {
            pb.inc(1);
            pb.set_message(format!("loss {loss:.4} {its_per_s:.2} it/s"));
        }
        TrainEvent::Validation {
            iteration,
            loss,
            pixel_error,
            rand_error,
            score,
            best,
        } => say(
            pb,
            format!(
                "iteration {iteration}: validation{}{}{}{}",
                if loss.is_finite() {
                    format!(" loss {loss:.4}, wrong px {pixel_error:.4} (held-out blocks)")
                } else {
                    String::new()
                },
                rand_error
                    .map(|r| format!(" Rand error {r:.4} (held-out slices)"))
                    .unwrap_or_default(),
                score
                    .filter(|s| rand_error.is_none_or(|r| r != *s))
                    .map(|s| format!(", Rand + pixel error {s:.4} (best rule)"))
                    .unwrap_or_default(),
                if best { " (best so far)" } else { "" }
            ),
        ),
        TrainEvent::Checkpoint { iteration, path } => say(
            pb,
            format!("iteration {iteration}: saved {}", path.display()),
        ),
        TrainEvent::Threshold {
            threshold,
            gap_closing,
            views,
            rand_error,
            pixel_error,
            other_views,
            other_rand_error,
            other_pixel_error,
        } => say(
            pb,
            format!(
                "predict will use {views} view(s), mask: {}: on the held-out slices Rand error {rand_error:.4}, pixel error {pixel_error:.4} ({other_views} view(s) at best: {other_rand_error:.4}, {other_pixel_error:.4})",
                crate::postprocess::Decision {
                    threshold: Some(threshold),
                    gap_closing
                }
                .describe()
            ),
        ),
        TrainEvent::Snapshot { .. } | TrainEvent::TileReduced { .. } => {}
    }
}
