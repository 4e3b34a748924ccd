//! The command-line front end (the application edge: `anyhow` errors, progress bars).

mod bench;
mod common;
mod deform;
mod eval;
mod experiment;
mod gui;
mod predict;
mod scribble;
mod train;
mod weights;

use crate::data::LabelEncoding;
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

pub use deform::DeformArgs;
pub use eval::EvalArgs;
pub use experiment::ExperimentArgs;
pub use gui::run_gui;
pub use predict::PredictArgs;
pub use scribble::ScribbleArgs;
pub use train::TrainArgs;
pub use weights::WeightsArgs;

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
    /// Where the app trains and predicts: auto (the display's GPU, unless it is a software
    /// renderer such as lavapipe: the CPU backend is faster then), gpu (the display's GPU,
    /// even a software one), cpu.
    #[arg(long, default_value = "auto")]
    pub device: crate::ml::DeviceChoice,
    /// Read a multipage TIFF slice by slice (as a stack larger than memory is read anyway):
    /// the app then holds the shown slice and the painted ones, not the whole stack.
    #[arg(long)]
    pub slice_by_slice: bool,
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
    Bench(bench::BenchArgs),
    /// Reproduce the paper's EM experiment (ISBI 2012) with ablations and sparse labels.
    Experiment(ExperimentArgs),
    /// Simulate sparse labels: brush strokes drawn inside full labels (for experiments).
    Scribble(ScribbleArgs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let Some(command) = cli.command else {
        let open = match cli.path {
            Some(p) => crate::app::OpenRequest {
                images: p,
                labels: cli.labels.map(|l| (l, cli.label_encoding)),
                model: cli.model,
                slice_by_slice: cli.slice_by_slice,
                ..Default::default()
            },
            None => crate::app::OpenRequest::sample(),
        };
        return run_gui(open, cli.device);
    };
    match command {
        Command::Train(a) => train::cmd_train(a),
        Command::Predict(a) => predict::cmd_predict(a),
        Command::Weights(a) => weights::cmd_weights(a),
        Command::Deform(a) => deform::cmd_deform(a),
        Command::Eval(a) => eval::cmd_eval(a),
        Command::Bench(a) => bench::run(a),
        Command::Experiment(a) => experiment::cmd_experiment(a),
        Command::Scribble(a) => scribble::cmd_scribble(a),
    }
}
