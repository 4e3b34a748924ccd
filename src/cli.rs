//! The command-line front end (the application edge: `anyhow` errors, progress bars).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::{
    LabelEncoding, LabelSlice, MaskStyle, Plane, encode_labels, load_label_stack, load_stack,
    write_f32_tiff, write_mask,
};
use crate::ml::config::LrSchedule;
use crate::ml::infer::decide_classes;
use crate::ml::train::{HeldOutSlice, resume_dir};
use crate::ml::{
    CancelToken, DeviceChoice, OptimizerConfig, Preset, StartFrom, TrainConfig, TrainEvent,
    TrainSet, UNetConfig, effective_tile, load_checkpoint, predict_fitting, select_device,
    train_fitting,
};
use crate::postprocess::{GapClosing, close_gaps};
use crate::preprocess::{
    AugmentConfig, D4, DeformationField, ElasticConfig, Interpolation, TileGeometry,
    WeightMapConfig, class_weights, normalize_percentile, warp_f32, warp_nearest, weight_map,
};

/// unet-studio: U-Net segmentation for microscopy (Ronneberger et al. 2015).
///
/// Without a subcommand the desktop app opens PATH (or the bundled sample).
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; the desktop app when absent.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Image file, multipage TIFF or folder to open in the app.
    pub path: Option<PathBuf>,
    /// Labels to import into the app (instead of the saved ones).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Encoding of --labels: classes | binary | instances.
    #[arg(long, default_value = "classes")]
    pub label_encoding: LabelEncoding,
    /// Model folder to load into the app.
    #[arg(long)]
    pub model: Option<PathBuf>,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train (or fine-tune, or resume) a U-Net on images and labels.
    Train(TrainArgs),
    /// Segment images with a trained model (overlap-tile).
    Predict(PredictArgs),
    /// Compute the paper's weight map of label images.
    Weights(WeightsArgs),
    /// Draw a seeded elastic deformation and apply it to an image (and labels).
    Deform(DeformArgs),
    /// Compare a predicted mask with ground truth (prints JSON).
    Eval(EvalArgs),
    /// Measure forward and training-step speed against the machine's GEMM peak.
    Bench(crate::bench::BenchArgs),
    /// Reproduce the paper's EM experiment (ISBI 2012) with ablations and sparse labels.
    Experiment(ExperimentArgs),
    /// Simulate sparse labels: brush strokes drawn inside full labels (for experiments).
    Scribble(ScribbleArgs),
}

#[derive(Args, Debug)]
pub struct ScribbleArgs {
    /// Full label image(s).
    #[arg(long)]
    labels: PathBuf,
    /// classes | binary | instances.
    #[arg(long, default_value = "classes")]
    label_encoding: LabelEncoding,
    /// Labelled pixels per class and slice.
    #[arg(long, default_value_t = 300)]
    px: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sparse labels to write (classes convention: 0 = unlabelled): .png or .tif.
    #[arg(long)]
    output: PathBuf,
}

#[derive(Args, Debug)]
pub struct ExperimentArgs {
    /// Folder with images/ and labels/ (ISBI 2012 slices: label 0 = membrane, 255 = cell).
    #[arg(long)]
    data: PathBuf,
    /// Folder for the models of every run and results.md.
    #[arg(long)]
    out: PathBuf,
    /// Iterations of each run.
    #[arg(long, default_value_t = 2000)]
    iterations: u64,
    /// paper | lite.
    #[arg(long, default_value = "lite")]
    preset: Preset,
    /// The last N slices are held out for evaluation.
    #[arg(long, default_value_t = 5)]
    val_slices: usize,
    /// Output tile edge for training.
    #[arg(long, default_value_t = 196)]
    tile: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Scribble pixels per class and slice for the sparse run.
    #[arg(long, default_value_t = 300)]
    scribble_px: usize,
    /// Also train the paper preset for the wall time of the first run.
    #[arg(long)]
    paper_same_time: bool,
    /// Learning rate (Adam with a cosine schedule; the sgd run: SGD, momentum 0.99).
    #[arg(long, default_value_t = 0.001)]
    lr: f64,
    /// Time budget of each run in minutes (the schedule follows it).
    #[arg(long)]
    minutes: Option<f64>,
    /// Validate on the held-out slices every N iterations, keeping the best network.
    #[arg(long, default_value_t = 250)]
    val_every: u64,
    /// Test-time augmentation views when scoring (1 = off, up to 8).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=8))]
    tta: u8,
    /// Also write the report here (for example docs/results.md).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Only these runs (comma separated): full, no-elastic, no-border, sparse, sgd.
    /// Default: all but sgd.
    #[arg(long, value_delimiter = ',')]
    runs: Vec<String>,
    /// Score the models already in --out instead of training (training times are not known
    /// then and shown as "-").
    #[arg(long)]
    score_only: bool,
    /// auto | gpu | cpu.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

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
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Model folder (or model.unet file).
    #[arg(long)]
    model: PathBuf,
    /// Image file, multipage TIFF or folder.
    #[arg(long)]
    input: PathBuf,
    /// Mask to write: .png (one per slice) or .tif (multipage).
    #[arg(long)]
    output: PathBuf,
    /// Also write class probabilities as a float TIFF.
    #[arg(long)]
    probabilities: Option<PathBuf>,
    /// Write 0/255 instead of class ids.
    #[arg(long)]
    binary: bool,
    /// Test-time augmentation: the mean over this many of the 8 flips and quarter turns
    /// (1 = off; each view costs one prediction). Default: the views the model's threshold
    /// was chosen with, else 8.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=8))]
    tta: Option<u8>,
    /// Decision threshold of the cell (class 2) probability of a two-class model (default:
    /// the one stored with the model, else the most probable class).
    #[arg(long)]
    threshold: Option<f32>,
    /// Post-processing of a two-class model's mask: close gaps in membranes with watershed
    /// lines between confident cell cores (cell probability > 0.9).
    #[arg(long)]
    close_gaps: bool,
    /// Output tile edge in pixels (rounded to a valid size).
    #[arg(long, default_value_t = 388)]
    tile: usize,
    /// auto | gpu | cpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
}

#[derive(Args, Debug)]
pub struct WeightsArgs {
    /// Label image(s).
    #[arg(long)]
    labels: PathBuf,
    /// classes | binary | instances.
    #[arg(long, default_value = "classes")]
    label_encoding: LabelEncoding,
    /// Float TIFF to write.
    #[arg(long)]
    output: PathBuf,
    /// Border amplitude.
    #[arg(long, default_value_t = 10.0)]
    w0: f32,
    /// Border width in pixels.
    #[arg(long, default_value_t = 5.0)]
    sigma: f32,
}

#[derive(Args, Debug)]
pub struct DeformArgs {
    /// Image to deform.
    #[arg(long)]
    image: PathBuf,
    /// Labels to deform with the same field (nearest neighbour).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Seed of the field.
    #[arg(long)]
    seed: u64,
    /// Folder for image.tif, labels.tif, field.tif (dx, dy) and field.json.
    #[arg(long)]
    output_dir: PathBuf,
    /// Standard deviation of the control displacements in pixels.
    #[arg(long, default_value_t = 10.0)]
    sigma: f32,
    /// Control points per side.
    #[arg(long, default_value_t = 3)]
    grid: usize,
    /// Use bilinear instead of bicubic interpolation for the image.
    #[arg(long)]
    bilinear: bool,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Predicted mask(s) in the classes convention (0/255 masks are read as binary), or a
    /// float TIFF of cell probabilities (one page per slice, or `predict --probabilities`
    /// output with one page per class and slice).
    #[arg(long, required_unless_present = "model", conflicts_with = "model")]
    prediction: Option<PathBuf>,
    /// Predict with this model instead (needs --images) and score its probabilities and the
    /// mask `predict --binary` would write.
    #[arg(long, requires = "images")]
    model: Option<PathBuf>,
    /// Images to predict with --model.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Test-time augmentation views with --model (1 = off, up to 8; default as `predict`).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=8))]
    tta: Option<u8>,
    /// auto | gpu | cpu (with --model).
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Ground-truth label image(s).
    #[arg(long)]
    truth: PathBuf,
    /// classes | binary | instances (of the truth).
    #[arg(long, default_value = "classes")]
    label_encoding: LabelEncoding,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let Some(command) = cli.command else {
        let open = match cli.path {
            Some(p) => crate::app::OpenRequest {
                images: p,
                labels: cli.labels.map(|l| (l, cli.label_encoding)),
                model: cli.model,
                ..Default::default()
            },
            None => crate::app::OpenRequest::sample(),
        };
        return run_gui(open);
    };
    match command {
        Command::Train(a) => cmd_train(a),
        Command::Predict(a) => cmd_predict(a),
        Command::Weights(a) => cmd_weights(a),
        Command::Deform(a) => cmd_deform(a),
        Command::Eval(a) => cmd_eval(a),
        Command::Bench(a) => crate::bench::run(a),
        Command::Experiment(a) => cmd_experiment(a),
        Command::Scribble(a) => cmd_scribble(a),
    }
}

/// Loads label images and encodes them.
pub fn load_labels(path: &Path, encoding: LabelEncoding) -> Result<Vec<LabelSlice>> {
    let raw = load_label_stack(path)?;
    raw.iter()
        .enumerate()
        .map(|(i, r)| {
            encode_labels(r, encoding).with_context(|| format!("{}: slice {i}", path.display()))
        })
        .collect()
}

/// Prints a line above the progress bar, or plainly when the bar is hidden (no terminal).
fn say(pb: &ProgressBar, line: String) {
    if pb.is_hidden() {
        eprintln!("{line}");
    } else {
        pb.println(line);
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = if std::env::var_os("UNET_STUDIO_NO_PROGRESS").is_some() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len)
    };
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(what.to_string());
    pb.enable_steady_tick(Duration::from_millis(500));
    pb
}

/// Checks a requested output tile edge and rounds it to the nearest valid one, saying so.
fn valid_tile(geom: &TileGeometry, requested: usize) -> Result<usize> {
    let smallest = geom
        .valid_outputs(4 << geom.depth)
        .first()
        .copied()
        .unwrap_or(1);
    if requested < smallest {
        bail!(
            "--tile {requested} px is smaller than the smallest output tile ({smallest} px) of this net"
        );
    }
    let tile = geom.nearest_valid_output(requested);
    if tile != requested {
        eprintln!("tile: {requested} px is not a valid output size for this net; using {tile} px");
    }
    Ok(tile)
}

fn cmd_train(a: TrainArgs) -> Result<()> {
    let stack = load_stack(&a.images)?;
    let labels = load_labels(&a.labels, a.label_encoding)?;
    if labels.len() != stack.slices.len() {
        bail!(
            "{} has {} slices but {} has {}",
            a.images.display(),
            stack.slices.len(),
            a.labels.display(),
            labels.len()
        );
    }
    for (i, l) in labels.iter().enumerate() {
        if (l.classes.width, l.classes.height) != (stack.width, stack.height) {
            bail!(
                "{}: slice {i} is {}x{} but the images ({}) are {}x{}",
                a.labels.display(),
                l.classes.width,
                l.classes.height,
                a.images.display(),
                stack.width,
                stack.height
            );
        }
    }
    if labels.iter().all(|l| l.labelled_count() == 0) {
        bail!(
            "{}: no labelled pixels (every value is 0 = unlabelled in the '{}' encoding)",
            a.labels.display(),
            a.label_encoding
        );
    }
    check_plausible_classes(&a.labels, &labels, a.label_encoding)?;
    let held_out = match (&a.val_images, &a.val_labels) {
        (Some(images), Some(labels)) => held_out_slices(images, labels, a.label_encoding)?,
        _ => Vec::new(),
    };
    let set = TrainSet {
        images: stack.slices.iter().map(normalize_percentile).collect(),
        labels,
        held_out,
    };
    let device = select_device(a.device)?;
    eprintln!("device: {}", device.description);
    if let Some(r) = &device.fallback_reason {
        eprintln!("  (CPU chosen: {r})");
    }
    let fine_tune = a.init.is_some();
    let optimizer = match a.optimizer.to_ascii_lowercase().as_str() {
        "sgd" => OptimizerConfig::Sgd {
            lr: a.lr.unwrap_or(0.001),
            momentum: 0.99,
        },
        "adam" => OptimizerConfig::Adam {
            lr: a.lr.unwrap_or(if fine_tune { 1e-4 } else { 1e-3 }),
        },
        other => bail!("unknown optimizer '{other}': use adam or sgd"),
    };
    let schedule = match a.schedule.to_ascii_lowercase().as_str() {
        "cosine" => LrSchedule::cosine(),
        "constant" => LrSchedule::Constant,
        other => bail!("unknown schedule '{other}': use cosine or constant"),
    };
    let start = if a.resume {
        let dir = resume_dir(&a.out);
        StartFrom::Resume(Box::new(load_checkpoint(&dir).with_context(|| {
            format!("--resume: no checkpoint to resume in {}", a.out.display())
        })?))
    } else if let Some(init) = &a.init {
        StartFrom::FineTune(Box::new(load_checkpoint(init)?))
    } else {
        StartFrom::Scratch(UNetConfig::preset(a.preset, set.classes()))
    };
    let start = if a.class_names.is_empty() {
        start
    } else {
        start.with_class_names(a.class_names.clone())
    };
    let unet = start.unet().clone();
    let requested = a.tile.unwrap_or(match a.preset {
        Preset::Lite => 196,
        Preset::Paper => 388,
    });
    let tile = valid_tile(&unet.geometry(), requested)?;
    let augment = AugmentConfig {
        elastic: !a.no_elastic,
        ..AugmentConfig::default()
    };
    let inherited = match &start {
        StartFrom::FineTune(c) | StartFrom::Resume(c) => c
            .meta
            .train
            .as_ref()
            .map(|t| t.class_weights.clone())
            .unwrap_or_default(),
        StartFrom::Scratch(_) => Vec::new(),
    };
    let weights = WeightMapConfig {
        border: !a.no_border_weights,
        balance_classes: !a.no_class_balance,
        ..WeightMapConfig::default()
    };
    let class_weights = if a.class_weights.is_empty() {
        inherited
    } else {
        a.class_weights.clone()
    };
    let cfg = TrainConfig {
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
        ..TrainConfig::default()
    };
    let cancel = CancelToken::new();
    let pb = bar(a.iterations, "train");
    let mut on_event = |e: TrainEvent| match e {
        TrainEvent::Started {
            tile_in,
            tile_out,
            train_pixels,
            val_pixels,
            first_iteration,
            ..
        } => say(
            &pb,
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
            best,
        } => say(
            &pb,
            format!(
                "iteration {iteration}: validation{}{}{}",
                if loss.is_finite() {
                    format!(" loss {loss:.4}, wrong px {pixel_error:.4} (held-out blocks)")
                } else {
                    String::new()
                },
                rand_error
                    .map(|r| format!(" Rand error {r:.4} (held-out slices, best threshold)"))
                    .unwrap_or_default(),
                if best { " (best so far)" } else { "" }
            ),
        ),
        TrainEvent::Checkpoint { iteration, path } => say(
            &pb,
            format!("iteration {iteration}: saved {}", path.display()),
        ),
        TrainEvent::Threshold {
            threshold,
            views,
            rand_error,
            other_views,
            other_rand_error,
        } => say(
            &pb,
            format!(
                "predict will use {views} view(s) and threshold {threshold:.2}: Rand error {rand_error:.4} on the held-out slices ({other_views} view(s): {other_rand_error:.4})"
            ),
        ),
        TrainEvent::Snapshot { .. } | TrainEvent::TileReduced { .. } => {}
    };
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
        "done: iteration {}, mean loss of the last {} steps {:.4}{}; model (iteration {}{}) in {}",
        out.iteration,
        tail.len(),
        tail.iter().sum::<f32>() / tail.len().max(1) as f32,
        out.validation
            .filter(|(l, _)| l.is_finite())
            .map(|(l, e)| format!(", validation loss {l:.4} wrong px {e:.4}"))
            .unwrap_or_default(),
        out.model_iteration,
        out.threshold
            .map(|t| format!(", threshold {t:.2}"))
            .unwrap_or_default(),
        a.out.display()
    );
    Ok(())
}

/// Refuses labels whose classes look like a misread encoding: only 0 and 255 in the
/// `classes` encoding (a binary mask: 255 classes would be trained), or more than 32 classes.
fn check_plausible_classes(
    path: &Path,
    labels: &[LabelSlice],
    encoding: LabelEncoding,
) -> Result<()> {
    if encoding != LabelEncoding::Classes {
        return Ok(());
    }
    let mut used = [false; 256];
    for l in labels {
        for &c in &l.classes.data {
            used[usize::from(c)] = true;
        }
    }
    let classes: Vec<usize> = (1..256).filter(|&c| used[c]).collect();
    if classes == [255] {
        bail!(
            "{}: the labels hold only 0 and 255, which the 'classes' encoding reads as unlabelled and class 255 (a 255-class network); for a binary mask use --label-encoding binary (0 = class 1, 255 = class 2)",
            path.display()
        );
    }
    if let Some(&max) = classes.last()
        && max > 32
    {
        bail!(
            "{}: class {max} in the 'classes' encoding would train a {max}-class network; classes are 1, 2, 3, ... (0 = unlabelled); for instance ids use --label-encoding instances",
            path.display()
        );
    }
    Ok(())
}

/// Fully labelled held-out slices for validation: normalised images and their cell masks.
fn held_out_slices(
    images: &Path,
    labels: &Path,
    encoding: LabelEncoding,
) -> Result<Vec<HeldOutSlice>> {
    let stack = load_stack(images)?;
    let labels_read = load_labels(labels, encoding)?;
    if labels_read.len() != stack.slices.len() {
        bail!(
            "{} has {} slices but {} has {}",
            images.display(),
            stack.slices.len(),
            labels.display(),
            labels_read.len()
        );
    }
    let mut out = Vec::new();
    for (i, (img, l)) in stack.slices.iter().zip(&labels_read).enumerate() {
        if (l.classes.width, l.classes.height) != (img.width, img.height) {
            bail!(
                "{}: slice {i} is {}x{} but its image is {}x{}",
                labels.display(),
                l.classes.width,
                l.classes.height,
                img.width,
                img.height
            );
        }
        if l.classes.data.contains(&0) {
            bail!(
                "{}: slice {i} has unlabelled pixels; validation slices need full labels",
                labels.display()
            );
        }
        out.push(HeldOutSlice {
            image: normalize_percentile(img),
            cell: l.classes.map(|c| c >= 2),
        });
    }
    Ok(out)
}

/// The test-time views of a prediction: as asked, else the views the model's threshold was
/// chosen with (one for a threshold of an older model), else all 8.
fn default_views(asked: Option<u8>, meta: &crate::ml::CheckpointMeta) -> usize {
    let n = asked.unwrap_or(match (meta.threshold, meta.threshold_views) {
        (Some(_), views) => views.unwrap_or(1),
        (None, _) => 8,
    });
    usize::from(n.clamp(1, 8))
}

/// A path made absolute and, as far as it exists, free of `..` and links, for comparing
/// outputs with inputs.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or(abs.clone()),
        _ => abs,
    }
}

/// Checks an output before any work is done: its ending is one of `endings`, its folder
/// exists, and none of the files it stands for (`files`) is an input or lies in an input
/// folder (where the next run would read it as a slice). Messages name both paths.
fn check_output(
    output: &Path,
    endings: &[&str],
    files: &[PathBuf],
    inputs: &[&Path],
) -> Result<()> {
    let ending = output
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if !ending.as_deref().is_some_and(|e| endings.contains(&e)) {
        bail!(
            "{}: cannot write this kind of file; use {}",
            output.display(),
            endings
                .iter()
                .map(|e| format!(".{e}"))
                .collect::<Vec<_>>()
                .join(" or ")
        );
    }
    let parent = output.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(p) = parent
        && !p.is_dir()
    {
        bail!(
            "{}: the folder {} {}",
            output.display(),
            p.display(),
            if p.exists() {
                "is a file"
            } else {
                "does not exist"
            }
        );
    }
    for input in inputs {
        let inp = resolved(input);
        for f in files {
            let f = resolved(f);
            if f == inp {
                bail!(
                    "{} would overwrite the input {}; choose another output",
                    output.display(),
                    input.display()
                );
            }
            if input.is_dir() && f.parent() == Some(inp.as_path()) {
                bail!(
                    "{} would be written into the input folder {}, where the next run would read it as a slice; choose another folder",
                    output.display(),
                    input.display()
                );
            }
        }
    }
    Ok(())
}

fn cmd_predict(a: PredictArgs) -> Result<()> {
    let ckpt = load_checkpoint(&a.model)?;
    let stack = load_stack(&a.input)?;
    let mask_files = match crate::data::ImageFormat::from_path(&a.output) {
        Some(crate::data::ImageFormat::Png) => {
            crate::data::io::png_slice_paths(&a.output, stack.slices.len())
        }
        _ => vec![a.output.clone()],
    };
    check_output(
        &a.output,
        &["tif", "tiff", "png"],
        &mask_files,
        &[&a.input, &a.model],
    )?;
    if let Some(p) = &a.probabilities {
        check_output(
            p,
            &["tif", "tiff"],
            std::slice::from_ref(p),
            &[&a.input, &a.model],
        )?;
        if mask_files.contains(p) {
            bail!("--probabilities {} is also the mask output", p.display());
        }
    }
    let device = select_device(a.device)?;
    eprintln!("device: {}", device.description);
    let model = ckpt.model(&device.device)?;
    let geom = ckpt.meta.unet.geometry();
    let mut tile = effective_tile(&geom, valid_tile(&geom, a.tile)?, stack.width, stack.height);
    let cancel = CancelToken::new();
    let pb = bar(stack.slices.len() as u64, "predict");
    let mut masks = Vec::new();
    let mut prob_pages = Vec::new();
    let views = &D4::all()[..default_views(a.tta, &ckpt.meta)];
    let threshold = a.threshold.or(ckpt.meta.threshold);
    if a.close_gaps && ckpt.meta.unet.classes != 2 {
        bail!(
            "--close-gaps needs a two-class model (membrane, cell); {} predicts {} classes",
            a.model.display(),
            ckpt.meta.unet.classes
        );
    }
    for slice in &stack.slices {
        // Out of device memory: this slice again with a smaller tile, kept for the next.
        let (used, probs) = predict_fitting(
            &model,
            &ckpt.meta.unet,
            &normalize_percentile(slice),
            tile,
            &device.device,
            &cancel,
            &mut |from, to| {
                say(
                    &pb,
                    format!("out of device memory with {from} px tiles: retrying with {to} px"),
                )
            },
            &mut |_, _| {},
            views,
        )?;
        tile = used;
        masks.push(match (&probs[..], a.close_gaps) {
            ([_, p_cell], true) => {
                close_gaps(p_cell, threshold.unwrap_or(0.5), &GapClosing::default())
                    .map(|c| if c { 2 } else { 1 })
            }
            _ => decide_classes(&probs, threshold),
        });
        if a.probabilities.is_some() {
            prob_pages.extend(probs);
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    let style = if a.binary {
        MaskStyle::Binary
    } else {
        MaskStyle::Classes
    };
    let written = write_mask(&a.output, &masks, style)?;
    for w in &written {
        eprintln!("wrote {}", w.display());
    }
    if let Some(p) = &a.probabilities {
        write_f32_tiff(p, &prob_pages, ckpt.meta.unet.classes)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

fn cmd_weights(a: WeightsArgs) -> Result<()> {
    let labels = load_labels(&a.labels, a.label_encoding)?;
    check_output(
        &a.output,
        &["tif", "tiff"],
        std::slice::from_ref(&a.output),
        &[&a.labels],
    )?;
    let classes = labels
        .iter()
        .map(|l| l.max_class() as usize)
        .max()
        .unwrap_or(0)
        .max(2);
    let cfg = WeightMapConfig {
        w0: a.w0,
        sigma_px: a.sigma,
        ..WeightMapConfig::default()
    };
    let cw = class_weights(&labels, classes);
    let maps: Vec<Plane<f32>> = labels.iter().map(|l| weight_map(l, &cw, &cfg)).collect();
    write_f32_tiff(&a.output, &maps, 1)?;
    let max = maps
        .iter()
        .flat_map(|m| m.data.iter().copied())
        .fold(0.0f32, f32::max);
    eprintln!(
        "wrote {} ({} slices; class weights {:?}; max weight {max:.3})",
        a.output.display(),
        maps.len(),
        &cw[1..]
    );
    Ok(())
}

fn cmd_deform(a: DeformArgs) -> Result<()> {
    let stack = load_stack(&a.image)?;
    let outputs: Vec<PathBuf> = ["image.tif", "labels.tif", "field.tif", "field.json"]
        .iter()
        .map(|n| a.output_dir.join(n))
        .collect();
    let mut inputs: Vec<&Path> = vec![&a.image];
    if let Some(l) = &a.labels {
        inputs.push(l);
    }
    for input in &inputs {
        let inp = resolved(input);
        let holder = if input.is_dir() {
            Some(inp.as_path())
        } else {
            inp.parent()
        };
        if holder == Some(resolved(&a.output_dir).as_path())
            || outputs.iter().any(|o| resolved(o) == inp)
        {
            bail!(
                "--output-dir {} holds the input {}; choose another folder",
                a.output_dir.display(),
                input.display()
            );
        }
    }
    // The labels are checked before anything is written.
    let labels = match &a.labels {
        Some(lp) => {
            let raw = load_label_stack(lp)?;
            if raw.len() != stack.slices.len() {
                bail!(
                    "{} has {} slices but {} has {}",
                    lp.display(),
                    raw.len(),
                    a.image.display(),
                    stack.slices.len()
                );
            }
            if let Some((i, r)) = raw
                .iter()
                .enumerate()
                .find(|(_, r)| (r.width, r.height) != (stack.width, stack.height))
            {
                bail!(
                    "{}: slice {i} is {}x{} but the image is {}x{}",
                    lp.display(),
                    r.width,
                    r.height,
                    stack.width,
                    stack.height
                );
            }
            Some(raw)
        }
        None => None,
    };
    let cfg = ElasticConfig {
        grid: a.grid,
        sigma_px: a.sigma,
    };
    let field = DeformationField::random(stack.width, stack.height, &cfg, a.seed);
    let (dx, dy) = field.dense();
    let interp = if a.bilinear {
        Interpolation::Bilinear
    } else {
        Interpolation::Bicubic
    };
    let warped: Vec<Plane<f32>> = stack
        .slices
        .iter()
        .map(|s| warp_f32(s, &dx, &dy, interp))
        .collect();
    std::fs::create_dir_all(&a.output_dir)
        .with_context(|| format!("creating {}", a.output_dir.display()))?;
    write_f32_tiff(&a.output_dir.join("image.tif"), &warped, 1)?;
    if let Some(raw) = &labels {
        let out: Vec<Plane<u16>> = raw
            .iter()
            .map(|r| warp_nearest(r, &dx, &dy).map(|v| v.min(u32::from(u16::MAX)) as u16))
            .collect();
        write_mask(&a.output_dir.join("labels.tif"), &out, MaskStyle::Classes)?;
    }
    write_f32_tiff(&a.output_dir.join("field.tif"), &[dx, dy], 2)?;
    let json = serde_json::to_vec_pretty(&field)?;
    crate::data::write_atomic(&a.output_dir.join("field.json"), &json)?;
    eprintln!(
        "wrote {} (largest control displacement {:.1} px)",
        a.output_dir.display(),
        field.max_control_displacement()
    );
    Ok(())
}

/// What `eval` prints: every measure with the definition it uses and its threshold.
#[derive(serde::Serialize)]
struct EvalReport {
    /// The definitions of the measures below.
    definitions: [&'static str; 4],
    /// Scores of a class mask (`--prediction` holding a mask).
    #[serde(skip_serializing_if = "Option::is_none")]
    mask: Option<crate::metrics::Evaluation>,
    /// Scores of cell probabilities over the challenge's thresholds.
    #[serde(skip_serializing_if = "Option::is_none")]
    probabilities: Option<crate::metrics::ThresholdScores>,
    /// The mask `predict --binary` writes with this model: its threshold (`None`: argmax)
    /// and its scores.
    #[serde(skip_serializing_if = "Option::is_none")]
    model_mask: Option<(Option<f32>, crate::metrics::MaskScores)>,
    /// The same mask after gap closing (`predict --close-gaps`), a post-processing step.
    #[serde(skip_serializing_if = "Option::is_none")]
    model_mask_closed_gaps: Option<crate::metrics::MaskScores>,
}

const EVAL_DEFINITIONS: [&str; 4] = [
    "pixel_error: 1 - F-score of cell pixels, counts pooled over slices (ISBI 2012 challenge, Fiji PixelError)",
    "rand_error: 1 - foreground-restricted Rand F-score of 4-connected cell segments, proposal membrane pixels as singletons, counts pooled over slices (ISBI 2012 challenge, Fiji RandError)",
    "vrand_thinned_error: 1 - the same Rand F-score after a seeded watershed thins the proposal's membranes to lines",
    "wrong_px: fraction of pixels whose class differs; thresholds: a pixel is cell when p > t",
];

fn cmd_eval(a: EvalArgs) -> Result<()> {
    let truth = load_labels(&a.truth, a.label_encoding)?;
    let classes = truth
        .iter()
        .map(|l| l.max_class() as usize)
        .max()
        .unwrap_or(0)
        .max(2);
    let truth_classes: Vec<Plane<u8>> = truth.iter().map(|l| l.classes.clone()).collect();
    let truth_cell: Vec<Plane<bool>> = truth.iter().map(|l| l.classes.map(|c| c >= 2)).collect();
    let mut report = EvalReport {
        definitions: EVAL_DEFINITIONS,
        mask: None,
        probabilities: None,
        model_mask: None,
        model_mask_closed_gaps: None,
    };
    if let (Some(model_dir), Some(images)) = (&a.model, &a.images) {
        let ckpt = load_checkpoint(model_dir)?;
        let stack = load_stack(images)?;
        check_same_slices(images, stack.slices.len(), &a.truth, truth.len())?;
        let device = select_device(a.device)?;
        let model = ckpt.model(&device.device)?;
        let geom = ckpt.meta.unet.geometry();
        let views = &D4::all()[..default_views(a.tta, &ckpt.meta)];
        let mut p_cell = Vec::new();
        let mut masks = Vec::new();
        for (i, slice) in stack.slices.iter().enumerate() {
            let tile = effective_tile(&geom, 388, slice.width, slice.height);
            let (_, probs) = predict_fitting(
                &model,
                &ckpt.meta.unet,
                &normalize_percentile(slice),
                tile,
                &device.device,
                &CancelToken::new(),
                &mut |_, _| {},
                &mut |_, _| {},
                views,
            )?;
            check_size(images, i, (slice.width, slice.height), &truth_classes[i])?;
            masks.push(decide_classes(&probs, ckpt.meta.threshold).map(|c| c >= 2));
            if let Some(p) = probs.get(1) {
                p_cell.push(p.clone());
            }
        }
        report.model_mask = Some((
            ckpt.meta.threshold,
            crate::metrics::mask_scores(&masks, &truth_cell, None),
        ));
        if p_cell.len() == masks.len() {
            let t = ckpt.meta.threshold.unwrap_or(0.5);
            let closed: Vec<Plane<bool>> = p_cell
                .iter()
                .map(|p| close_gaps(p, t, &GapClosing::default()))
                .collect();
            report.model_mask_closed_gaps =
                Some(crate::metrics::mask_scores(&closed, &truth_cell, None));
            report.probabilities = Some(crate::metrics::threshold_scores(
                &p_cell,
                &truth_cell,
                &crate::metrics::challenge_thresholds(),
                true,
            ));
        }
    } else if let Some(prediction) = &a.prediction {
        let stack = load_stack(prediction)?;
        if stack.kind == crate::data::PixelKind::F32 {
            let n = truth.len();
            let p_cell: Vec<Plane<f32>> = if stack.slices.len() == n {
                stack.slices
            } else if stack.slices.len() == 2 * n {
                // predict --probabilities: class 1 and class 2 of each slice in turn.
                stack.slices.into_iter().skip(1).step_by(2).collect()
            } else {
                bail!(
                    "{}: {} float pages, but {} has {n} slices (expected {n} cell probability pages, or {} of a two-class probability file)",
                    prediction.display(),
                    stack.slices.len(),
                    a.truth.display(),
                    2 * n
                );
            };
            for (i, p) in p_cell.iter().enumerate() {
                check_size(prediction, i, (p.width, p.height), &truth_classes[i])?;
            }
            report.probabilities = Some(crate::metrics::threshold_scores(
                &p_cell,
                &truth_cell,
                &crate::metrics::challenge_thresholds(),
                true,
            ));
        } else {
            let pred_raw = load_label_stack(prediction)?;
            check_same_slices(prediction, pred_raw.len(), &a.truth, truth.len())?;
            // A 0/255 mask is read as binary (0 -> class 1, 255 -> class 2).
            let is_binary = pred_raw
                .iter()
                .all(|p| p.data.iter().all(|&v| v == 0 || v == 255));
            let mut preds = Vec::new();
            for (i, p) in pred_raw.iter().enumerate() {
                check_size(prediction, i, (p.width, p.height), &truth_classes[i])?;
                preds.push(p.map(|v| {
                    if is_binary {
                        if v == 0 { 1 } else { 2 }
                    } else {
                        v.min(u32::from(u16::MAX)) as u16
                    }
                }));
            }
            report.mask = Some(crate::metrics::evaluate(&preds, &truth_classes, classes));
        }
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn check_same_slices(a: &Path, na: usize, b: &Path, nb: usize) -> Result<()> {
    if na != nb {
        bail!(
            "{} has {na} slices but {} has {nb}",
            a.display(),
            b.display()
        );
    }
    Ok(())
}

fn check_size(path: &Path, i: usize, size: (usize, usize), truth: &Plane<u8>) -> Result<()> {
    if size != (truth.width, truth.height) {
        bail!(
            "{}: slice {i} is {}x{} but the truth is {}x{}",
            path.display(),
            size.0,
            size.1,
            truth.width,
            truth.height
        );
    }
    Ok(())
}

fn cmd_experiment(a: ExperimentArgs) -> Result<()> {
    let cfg = crate::experiment::ExperimentConfig {
        data: a.data.clone(),
        out: a.out.clone(),
        iterations: a.iterations,
        preset: a.preset,
        val_slices: a.val_slices,
        tile: a.tile,
        seed: a.seed,
        scribble_px: a.scribble_px,
        paper_same_time: a.paper_same_time,
        lr: a.lr,
        minutes: a.minutes,
        val_every: a.val_every,
        tta: usize::from(a.tta),
        runs: a.runs.clone(),
        score_only: a.score_only,
    };
    if let Some(bad) = a
        .runs
        .iter()
        .find(|r| !crate::experiment::RUN_KEYS.contains(&r.as_str()))
    {
        bail!(
            "unknown run '{bad}': use {}",
            crate::experiment::RUN_KEYS.join(", ")
        );
    }
    let device = select_device(a.device)?;
    eprintln!("device: {}", device.description);
    let results =
        crate::experiment::run_experiment(&cfg, &device, &CancelToken::new(), &mut |l| {
            eprintln!("{l}")
        })?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let machine = format!(
        "{}, {} threads ({})",
        device.description,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        std::env::consts::ARCH
    );
    let report = crate::experiment::markdown_report(&cfg, &results, &command, &machine);
    crate::data::write_atomic(&a.out.join("results.md"), report.as_bytes())?;
    crate::data::write_atomic(
        &a.out.join("results.json"),
        &serde_json::to_vec_pretty(&results)?,
    )?;
    if let Some(r) = &a.report {
        crate::data::write_atomic(r, report.as_bytes())?;
    }
    println!("{report}");
    Ok(())
}

fn cmd_scribble(a: ScribbleArgs) -> Result<()> {
    let labels = load_labels(&a.labels, a.label_encoding)?;
    let sparse: Vec<Plane<u16>> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            crate::experiment::simulate_scribbles(&l.classes, a.px, a.seed + i as u64)
                .map(u16::from)
        })
        .collect();
    let written = write_mask(&a.output, &sparse, MaskStyle::Classes)?;
    let painted: usize = sparse
        .iter()
        .map(|p| p.data.iter().filter(|&&v| v > 0).count())
        .sum();
    for w in &written {
        eprintln!("wrote {}", w.display());
    }
    eprintln!("{painted} labelled pixels in {} slices", sparse.len());
    Ok(())
}

/// Opens the desktop app (eframe with the wgpu renderer).
pub fn run_gui(open: crate::app::OpenRequest) -> Result<()> {
    let mut wgpu_options = eframe::egui_wgpu::WgpuConfiguration::default();
    if let eframe::egui_wgpu::WgpuSetup::CreateNew(create) = &mut wgpu_options.wgpu_setup {
        create.device_descriptor = std::sync::Arc::new(crate::app::device_descriptor);
    }
    let options = eframe::NativeOptions {
        renderer: eframe::Renderer::Wgpu,
        wgpu_options,
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("unet-studio")
            .with_icon(
                eframe::icon_data::from_png_bytes(include_bytes!("../assets/icon.png"))
                    .unwrap_or_default(),
            )
            .with_inner_size([1280.0, 820.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    eframe::run_native(
        "unet-studio",
        options,
        Box::new(move |cc| Ok(Box::new(crate::app::StudioApp::new(cc, Some(open))))),
    )
    .map_err(|e| anyhow::anyhow!("the window could not be opened: {e}"))
}
