//! `unet-studio experiment`: the paper's EM experiment with ablations and sparse labels.

use crate::ml::{CancelToken, DeviceChoice, Preset, select_device};
use anyhow::{Result, bail};
use clap::Args;
use std::path::PathBuf;

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

pub(crate) fn cmd_experiment(a: ExperimentArgs) -> Result<()> {
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
