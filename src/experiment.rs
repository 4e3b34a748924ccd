//! The EM experiment of the U-Net paper (ISBI 2012, Table 1) on the slices at hand: trains
//! with the paper's recipe, the same without elastic deformation, without border weights, and
//! from simulated sparse scribbles, and scores held-out slices with the challenge's measures.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::{ImageBuffer, Luma};
use imageproc::distance_transform::euclidean_squared_distance_transform;

use crate::data::{LabelEncoding, LabelSlice, Plane, load_stack};
use crate::metrics::{
    MaskScores, ThresholdScores, challenge_thresholds, mask_scores, threshold_scores,
};
use crate::ml::checkpoint::save_checkpoint;
use crate::ml::infer::predict_probabilities_tta;
use crate::ml::train::HeldOutSlice;
use crate::ml::unet::UNet;
use crate::ml::{
    CancelToken, ComputeDevice, MlError, OptimizerConfig, Preset, StartFrom, TrainConfig,
    TrainEvent, TrainSet, UNetConfig, train,
};
use crate::postprocess::Decision;
use crate::preprocess::{AugmentConfig, D4, Rng, WeightMapConfig, normalize_percentile};
use crate::project::sets::labels_for;

/// Simulated sparse labelling: short brush strokes (3 px wide) that follow the structures of
/// each class, drawn until about `px_per_class` pixels of every class are labelled. Strokes
/// start at least 1.5 px inside a class and only ever paint pixels of that class, so the
/// scribbles are correct labels, as a careful person would paint them.
pub fn simulate_scribbles(classes: &Plane<u8>, px_per_class: usize, seed: u64) -> Plane<u8> {
    let (w, h) = (classes.width, classes.height);
    let mut out = Plane::filled(w, h, 0u8);
    let mut rng = Rng::new(seed);
    let max_class = classes.data.iter().copied().max().unwrap_or(0);
    for k in 1..=max_class {
        // Distance to the nearest pixel of another class (or unlabelled).
        let others: ImageBuffer<Luma<u8>, Vec<u8>> =
            ImageBuffer::from_fn(w as u32, h as u32, |x, y| {
                Luma([u8::from(classes.at(x as usize, y as usize) != k)])
            });
        let dist = euclidean_squared_distance_transform(&others);
        let inside = |x: isize, y: isize| {
            x >= 0
                && y >= 0
                && (x as usize) < w
                && (y as usize) < h
                && dist.get_pixel(x as u32, y as u32)[0] >= 2.25
        };
        let starts: Vec<usize> = (0..w * h)
            .filter(|&i| inside((i % w) as isize, (i / w) as isize))
            .collect();
        if starts.is_empty() {
            continue;
        }
        let mut painted = 0usize;
        let mut attempts = 0;
        while painted < px_per_class && attempts < 200 {
            attempts += 1;
            let s = starts[rng.below(starts.len())];
            let (mut x, mut y) = ((s % w) as f64, (s / w) as f64);
            let mut heading = rng.uniform() * std::f64::consts::TAU;
            for _ in 0..60 {
                // Paint a 3x3 brush, on pixels of this class only.
                for dy in -1..=1isize {
                    for dx in -1..=1isize {
                        let (px, py) = (x.round() as isize + dx, y.round() as isize + dy);
                        if px >= 0 && py >= 0 && (px as usize) < w && (py as usize) < h {
                            let (px, py) = (px as usize, py as usize);
                            if classes.at(px, py) == k && out.at(px, py) == 0 {
                                out.set(px, py, k);
                                painted += 1;
                            }
                        }
                    }
                }
                if painted >= px_per_class {
                    break;
                }
                // Follow the structure: the first of a few headings near the current one
                // whose next step stays inside the class.
                let turn = (rng.uniform() - 0.5) * 0.6;
                let next = [0.0, 0.4, -0.4, 0.8, -0.8].iter().find_map(|d| {
                    let a = heading + turn + d;
                    let (nx, ny) = (x + 1.5 * a.cos(), y + 1.5 * a.sin());
                    inside(nx.round() as isize, ny.round() as isize).then_some((nx, ny, a))
                });
                let Some((nx, ny, a)) = next else { break };
                x = nx;
                y = ny;
                heading = a;
            }
        }
    }
    out
}

/// Settings of an experiment.
#[derive(Clone, Debug)]
pub struct ExperimentConfig {
    /// Folder with `images/` and `labels/` (ISBI 2012 layout: label 0 = membrane, 255 = cell).
    pub data: PathBuf,
    /// Where models and the report go.
    pub out: PathBuf,
    /// Iterations of each run.
    pub iterations: u64,
    /// Network preset of the main runs.
    pub preset: Preset,
    /// The last this many slices are held out for evaluation.
    pub val_slices: usize,
    /// Output tile edge for training.
    pub tile: usize,
    /// Seed of everything.
    pub seed: u64,
    /// Scribble pixels per class and slice for the sparse run.
    pub scribble_px: usize,
    /// Also train the `paper` preset for the wall time of the first run.
    pub paper_same_time: bool,
    /// Learning rate of the default recipe (Adam, cosine schedule); the `sgd` run uses it
    /// too.
    pub lr: f64,
    /// Time budget of each run in minutes (`None`: iterations only).
    pub minutes: Option<f64>,
    /// Validate on the held-out slices every this many iterations (0: at the end only); the
    /// run keeps the network with the lowest Rand error there, and its threshold.
    pub val_every: u64,
    /// Views of the test-time augmentation when scoring (1 = off, up to 8).
    pub tta: usize,
    /// Which runs (keys of [`RUN_KEYS`]); empty: all but `sgd`.
    pub runs: Vec<String>,
    /// Score the models an earlier run left in `out` instead of training.
    pub score_only: bool,
}

/// Keys of the runs an experiment can make, in order.
pub const RUN_KEYS: &[&str] = &["full", "no-elastic", "no-border", "sparse", "sgd"];

/// One trained and scored configuration.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunResult {
    /// Short name.
    pub name: String,
    /// Preset used.
    pub preset: String,
    /// Iterations done.
    pub iterations: u64,
    /// Wall time of the training.
    pub train_seconds: f64,
    /// Labelled training pixels.
    pub train_pixels: usize,
    /// Scores of the cell probabilities on the held-out slices over the challenge's
    /// thresholds.
    pub scores: ThresholdScores,
    /// The model's decision rule (chosen on the held-out slices at the end of training).
    pub decision: Decision,
    /// Scores of the mask `predict --binary` writes (the model's decision rule).
    pub mask: MaskScores,
    /// Model folder.
    pub model: PathBuf,
}

/// Images and binary labels of the data folder, split into training and held-out slices.
pub struct SplitData {
    /// Normalised training images.
    pub train_images: Vec<Plane<f32>>,
    /// Their full labels.
    pub train_labels: Vec<LabelSlice>,
    /// Normalised held-out images.
    pub val_images: Vec<Plane<f32>>,
    /// Their cell (foreground) masks.
    pub val_truth: Vec<Plane<bool>>,
}

/// Loads `data/images` and `data/labels` and holds out the last `val_slices` slices.
pub fn load_split(data: &Path, val_slices: usize) -> Result<SplitData, MlError> {
    let images_dir = data.join("images");
    let stack = load_stack(&images_dir)?;
    if stack.channels != 1 {
        return Err(MlError::Channels(format!(
            "{}: {}; the EM experiment uses grey images",
            images_dir.display(),
            stack.shape_text()
        )));
    }
    let labels = labels_for(
        &data.join("labels"),
        LabelEncoding::Binary,
        (&images_dir, &stack.slice_sizes()),
    )?;
    if val_slices == 0 || val_slices >= labels.len() {
        return Err(MlError::NoLabels(format!(
            "{}: {} slices; need more slices than the {val_slices} held out",
            data.display(),
            labels.len()
        )));
    }
    let n_train = labels.len() - val_slices;
    let images: Vec<Plane<f32>> = stack
        .all_planes()?
        .iter()
        .map(normalize_percentile)
        .collect();
    Ok(SplitData {
        train_images: images[..n_train].to_vec(),
        train_labels: labels[..n_train].to_vec(),
        val_images: images[n_train..].to_vec(),
        val_truth: labels[n_train..]
            .iter()
            .map(|l| l.classes.map(|c| c == 2))
            .collect(),
    })
}

/// Simulated scribbles of every training slice, with the painted parts of the objects (for
/// the weight map).
fn sparse_labels(cfg: &ExperimentConfig, full: &[LabelSlice]) -> Vec<LabelSlice> {
    full.iter()
        .enumerate()
        .map(|(i, l)| {
            let classes = simulate_scribbles(&l.classes, cfg.scribble_px, cfg.seed + i as u64);
            // Objects for the weight map: the painted parts of the full objects.
            let objects = Plane {
                width: l.objects.width,
                height: l.objects.height,
                data: l
                    .objects
                    .data
                    .iter()
                    .zip(&classes.data)
                    .map(|(&o, &c)| if c >= 2 { o } else { 0 })
                    .collect(),
            };
            LabelSlice { classes, objects }
        })
        .collect()
}

/// The runs of the experiment, in the order of [`RUN_KEYS`]: name, preset, config, labels.
fn run_list<'a>(
    cfg: &ExperimentConfig,
    base: &TrainConfig,
    full: &'a [LabelSlice],
    sparse: &'a [LabelSlice],
) -> Vec<(&'static str, Preset, TrainConfig, &'a [LabelSlice])> {
    vec![
        ("full labels, paper recipe", cfg.preset, base.clone(), full),
        (
            "no elastic deformation",
            cfg.preset,
            TrainConfig {
                augment: AugmentConfig {
                    elastic: false,
                    ..AugmentConfig::default()
                },
                ..base.clone()
            },
            full,
        ),
        (
            "no border weights (w0 = 0)",
            cfg.preset,
            TrainConfig {
                weights: WeightMapConfig {
                    border: false,
                    ..WeightMapConfig::default()
                },
                ..base.clone()
            },
            full,
        ),
        ("sparse scribbles", cfg.preset, base.clone(), sparse),
        (
            "full labels, the paper's SGD (momentum 0.99)",
            cfg.preset,
            TrainConfig {
                optimizer: OptimizerConfig::Sgd {
                    lr: cfg.lr,
                    momentum: 0.99,
                },
                ..base.clone()
            },
            full,
        ),
    ]
}

/// Runs every configuration, one after the other; `log` receives progress lines.
pub fn run_experiment(
    cfg: &ExperimentConfig,
    device: &ComputeDevice,
    cancel: &CancelToken,
    log: &mut dyn FnMut(String),
) -> Result<Vec<RunResult>, MlError> {
    let split = load_split(&cfg.data, cfg.val_slices)?;
    let sparse = sparse_labels(cfg, &split.train_labels);
    let base = TrainConfig {
        iterations: cfg.iterations,
        tile_out: cfg.tile,
        optimizer: OptimizerConfig::Adam { lr: cfg.lr },
        seed: cfg.seed,
        val_fraction: 0.0,
        val_every: cfg.val_every,
        checkpoint_every: 0,
        minutes: cfg.minutes,
        ..TrainConfig::default()
    };
    let runs = run_list(cfg, &base, &split.train_labels, &sparse);
    let wanted = |i: usize| {
        let key = RUN_KEYS[i];
        if cfg.runs.is_empty() {
            key != "sgd"
        } else {
            cfg.runs.iter().any(|r| r == key)
        }
    };
    let mut results = Vec::new();
    let mut first_seconds = None;
    for (i, (name, preset, tcfg, labels)) in runs.iter().enumerate() {
        if !wanted(i) {
            continue;
        }
        let r = one_run(
            cfg, device, &split, labels, name, *preset, tcfg, None, i, cancel, log,
        )?;
        first_seconds.get_or_insert(r.train_seconds);
        results.push(r);
    }
    if cfg.paper_same_time
        && let Some(budget) = first_seconds
    {
        let tcfg = TrainConfig {
            iterations: u64::MAX / 2,
            ..base.clone()
        };
        let r = one_run(
            cfg,
            device,
            &split,
            &split.train_labels,
            "paper preset, same wall time",
            Preset::Paper,
            &tcfg,
            Some(budget),
            results.len(),
            cancel,
            log,
        )?;
        results.push(r);
    }
    Ok(results)
}

#[allow(clippy::too_many_arguments)]
fn one_run(
    cfg: &ExperimentConfig,
    device: &ComputeDevice,
    split: &SplitData,
    labels: &[LabelSlice],
    name: &str,
    preset: Preset,
    tcfg: &TrainConfig,
    budget_s: Option<f64>,
    index: usize,
    cancel: &CancelToken,
    log: &mut dyn FnMut(String),
) -> Result<RunResult, MlError> {
    let set = TrainSet {
        images: split.train_images.iter().map(|i| vec![i.clone()]).collect(),
        labels: labels.to_vec(),
        held_out: split
            .val_images
            .iter()
            .zip(&split.val_truth)
            .map(|(image, cell)| HeldOutSlice {
                image: vec![image.clone()],
                cell: cell.clone(),
            })
            .collect(),
    };
    let dir = cfg.out.join(format!("run{index}"));
    let unet = UNetConfig::preset(preset, 2);
    let (model, iteration, train_seconds, train_pixels, decision) = if cfg.score_only {
        let ckpt = crate::ml::load_checkpoint(&dir)?;
        let model = ckpt.model(&device.device)?;
        let pixels = set.labels.iter().map(LabelSlice::labelled_count).sum();
        (
            model,
            ckpt.meta.iteration,
            f64::NAN,
            pixels,
            ckpt.meta.decision(),
        )
    } else {
        train_and_save(
            &set,
            tcfg,
            &unet,
            &dir,
            (name, budget_s),
            device,
            cancel,
            log,
        )?
    };
    let (scores, mask) = score(
        cfg,
        &split.val_images,
        &split.val_truth,
        (&model, &unet),
        decision,
        device,
        cancel,
    )?;
    log(format!(
        "{name}: kept the network of iteration {} ({train_seconds:.0} s of training); Rand error {:.4} (t {}), pixel error {:.4} (t {}), V_rand thinned error {:.4}, warping {:.6}, wrong px {:.4}",
        iteration,
        scores.rand_error.value,
        scores.rand_error.threshold,
        scores.pixel_error.value,
        scores.pixel_error.threshold,
        scores.vrand_thinned_error.value,
        scores.warping_error.value,
        scores.wrong_px.value
    ));
    log(format!(
        "{name}: the mask ({}): Rand error {:.4}, pixel error {:.4}, V_rand thinned error {:.4}, wrong px {:.4}",
        decision.describe(),
        mask.rand_error,
        mask.pixel_error,
        mask.vrand_thinned_error,
        mask.wrong_px
    ));
    Ok(RunResult {
        name: name.to_string(),
        preset: preset.to_string(),
        iterations: iteration,
        train_seconds,
        train_pixels,
        scores,
        decision,
        mask,
        model: dir,
    })
}

/// Trains one run from scratch (stopped by `cancel` or after `budget_s`) and saves its kept
/// network in `dir`; returns the network, its iteration, the training time, the training
/// pixels and the threshold.
#[allow(clippy::too_many_arguments)]
fn train_and_save(
    set: &TrainSet,
    tcfg: &TrainConfig,
    unet: &UNetConfig,
    dir: &Path,
    (name, budget_s): (&str, Option<f64>),
    device: &ComputeDevice,
    cancel: &CancelToken,
    log: &mut dyn FnMut(String),
) -> Result<(UNet, u64, f64, usize, Decision), MlError> {
    let t0 = Instant::now();
    let run_cancel = CancelToken::new();
    let mut train_pixels = 0;
    let mut last_log = Instant::now();
    let outcome = train(
        set,
        tcfg,
        StartFrom::Scratch(unet.clone()),
        device,
        None,
        &run_cancel,
        &mut |e| match e {
            TrainEvent::Started {
                train_pixels: p, ..
            } => train_pixels = p,
            TrainEvent::Iteration {
                iteration,
                loss,
                its_per_s,
            } => {
                if cancel.is_cancelled()
                    || budget_s.is_some_and(|b| t0.elapsed().as_secs_f64() >= b)
                {
                    run_cancel.cancel();
                }
                if last_log.elapsed().as_secs() >= 30 {
                    last_log = Instant::now();
                    log(format!(
                        "  [{name}] iteration {iteration}: loss {loss:.4}, {its_per_s:.2} it/s"
                    ));
                }
            }
            _ => {}
        },
    )?;
    let train_seconds = t0.elapsed().as_secs_f64();
    // Keep the weights only (no optimiser state): this is what gets shipped.
    let meta = crate::ml::CheckpointMeta {
        unet: unet.clone(),
        train: Some(tcfg.clone()),
        iteration: outcome.model_iteration,
        created_unix_s: crate::ml::checkpoint::now_unix_s(),
        train_loss: outcome.losses.last().copied(),
        val_loss: None,
        labels_hash: Some(set.labels_hash()),
        note: format!("experiment run '{name}' on {}", device.description),
        threshold: outcome.decision.threshold,
        threshold_views: outcome.threshold_views,
        gap_closing: outcome.decision.gap_closing,
        gap_closing_off: None,
    };
    save_checkpoint(dir, &meta, &outcome.model, None)?;
    Ok((
        outcome.model,
        outcome.model_iteration,
        train_seconds,
        train_pixels,
        outcome.decision,
    ))
}

/// The challenge's scores of the network on the validation slices: over thresholds of its
/// probabilities, and of its mask by the `decision` rule.
#[allow(clippy::too_many_arguments)]
fn score(
    cfg: &ExperimentConfig,
    images: &[Plane<f32>],
    truth: &[Plane<bool>],
    (model, unet): (&UNet, &UNetConfig),
    decision: Decision,
    device: &ComputeDevice,
    cancel: &CancelToken,
) -> Result<(ThresholdScores, MaskScores), MlError> {
    let mut p_fg = Vec::new();
    let mut masks = Vec::new();
    for img in images {
        let mut probs = predict_probabilities_tta(
            model,
            unet,
            std::slice::from_ref(img),
            unet.geometry().nearest_valid_output(388),
            &device.device,
            cancel,
            &mut |_, _| {},
            &D4::all()[..cfg.tta.clamp(1, 8)],
        )?;
        masks.push(decision.classes(&probs).map(|c| c >= 2));
        p_fg.push(probs.swap_remove(1));
    }
    let scores = threshold_scores(&p_fg, truth, &challenge_thresholds(), true);
    let mask = mask_scores(&masks, truth, None);
    Ok((scores, mask))
}

/// The report: our runs beside the paper's Table 1.
pub fn markdown_report(
    cfg: &ExperimentConfig,
    results: &[RunResult],
    command: &str,
    machine: &str,
) -> String {
    let mut s = String::new();
    s += "| run | preset | kept iteration | training time | labelled px | warping error | Rand error | pixel error | V_rand thinned error | wrong px | mask: threshold | mask: Rand error | mask: pixel error |\n";
    s += "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    s += "| U-Net paper, ISBI 2012 test set (Table 1) | paper | - | ~10 h (Titan GPU) | all | 0.000353 | 0.0382 | 0.0611 | - | - | - | - | - |\n";
    for r in results {
        let time = if r.train_seconds.is_finite() {
            format!("{:.0} s", r.train_seconds)
        } else {
            "-".into()
        };
        s += &format!(
            "| {} | {} | {} | {time} | {} | {:.6} | {:.4} | {:.4} | {:.4} | {:.4} | {} | {:.4} | {:.4} |\n",
            r.name,
            r.preset,
            r.iterations,
            r.train_pixels,
            r.scores.warping_error.value,
            r.scores.rand_error.value,
            r.scores.pixel_error.value,
            r.scores.vrand_thinned_error.value,
            r.scores.wrong_px.value,
            match (r.decision.threshold, r.decision.gap_closing) {
                (None, None) => "argmax".to_string(),
                (t, None) => format!("{:.2}", t.unwrap_or(0.5)),
                (t, Some(g)) => format!(
                    "{:.2}, gaps closed (seeds {:.2})",
                    t.unwrap_or(0.5),
                    g.seed_threshold
                ),
            },
            r.mask.rand_error,
            r.mask.pixel_error
        );
    }
    s += &format!(
        "\nHeld out: the last {} slices of `{}`; trained on the others. Each measure is the best over the challenge's 11 thresholds (0, 0.1, ..., 1) of the cell probability, with the challenge's definitions (Fiji's Trainable_Segmentation): Rand error = 1 - foreground-restricted Rand F-score, pixel error = 1 - F-score of cell pixels, both pooled over the held-out slices; V_rand thinned error = the same Rand F-score after a seeded watershed thins the proposal's membranes; wrong px = fraction of wrong pixels. Warping error is the simplified variant of `src/metrics.rs` (raster-ordered simple-point warping). The mask columns score the mask `predict --binary` writes: the cell probability above the model's threshold, with gap closing (watershed lines between confident cell cores) when the run chose it, the rule chosen at the end of training by the lowest sum of Rand and pixel errors on the held-out slices (which also picked the kept network by its Rand error), so they are validation figures, not test figures. Probabilities are the mean over {} test-time views (flips and quarter turns). Adam with a cosine schedule from lr {} (the `sgd` run: SGD, momentum 0.99, same lr), output tile {} px, seed {}.\n\nCommand: `{command}`\n\nMachine: {machine}\n",
        cfg.val_slices,
        cfg.data.display(),
        cfg.tta.clamp(1, 8),
        cfg.lr,
        cfg.tile,
        cfg.seed
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scribbles_are_sparse_correct_and_stroke_shaped() {
        // Two classes: a thick vertical band of class 1 in a field of class 2.
        let (w, h) = (60usize, 60usize);
        let classes = Plane::from_vec(
            w,
            h,
            (0..w * h)
                .map(|i| if (20..30).contains(&(i % w)) { 1 } else { 2 })
                .collect(),
        )
        .unwrap();
        let s = simulate_scribbles(&classes, 120, 3);
        let painted: Vec<usize> = (0..w * h).filter(|&i| s.data[i] > 0).collect();
        // Correct: every painted pixel has its true class.
        assert!(painted.iter().all(|&i| s.data[i] == classes.data[i]));
        for k in [1u8, 2] {
            let n = s.data.iter().filter(|&&c| c == k).count();
            assert!((120..=140).contains(&n), "class {k}: {n} px");
        }
        // Sparse.
        assert!(painted.len() < w * h / 5);
        // Stroke-shaped: most painted pixels have painted neighbours (not scattered dots).
        let with_neighbour = painted
            .iter()
            .filter(|&&i| {
                let (x, y) = (i % w, i / w);
                crate::data::labels::neighbours8(x, y, w, h)
                    .filter(|&(nx, ny)| s.at(nx, ny) > 0)
                    .count()
                    >= 3
            })
            .count();
        assert!(with_neighbour * 10 >= painted.len() * 9);
    }
}
