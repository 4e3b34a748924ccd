//! `unet-studio predict`: masks, probabilities or instances of a stack with a trained model.

use super::common::{
    bar, bytes_per_pixel, check_output, check_task_memory_plus, default_views, resolved, say,
    valid_tile,
};
use crate::data::io::{encode_f32_tiff, encode_mask, write_outputs};
use crate::data::io::{load_collection, unify_channels};
use crate::data::{MaskStyle, Stack, TiffAxes};
use crate::ml::{CancelToken, DeviceChoice, effective_tile, load_checkpoint, select_device};
use crate::postprocess::{Decision, GapClosing};
use crate::preprocess::D4;
use crate::project::sets::{input_channels, picked};
use crate::project::tasks::{SliceProgress, StreamedOutputs, predict_slices, predict_streamed};
use anyhow::{Context as _, Result, bail};
use clap::Args;
use std::path::PathBuf;

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
    /// Also write class probabilities as a float TIFF (for a collection: a folder, one
    /// `<image>.probabilities.tif` per image).
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
    /// lines between confident cell cores (the model's seed threshold, else cell probability
    /// > 0.9). Default: as the model chose on its validation slices.
    #[arg(long, conflicts_with = "no_close_gaps")]
    close_gaps: bool,
    /// No gap closing, even where the model chose it.
    #[arg(long)]
    no_close_gaps: bool,
    /// Output tile edge in pixels (rounded to a valid size).
    #[arg(long, default_value_t = 388)]
    tile: usize,
    /// auto | gpu | cpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Channels of the images that feed the network (0-based, comma-separated; default: the
    /// ones the model names, or all when it takes as many as the images have).
    #[arg(long, value_delimiter = ',')]
    channels: Vec<usize>,
    /// Read, predict and write one slice at a time (a single TIFF file): memory for one
    /// slice, not the stack. Chosen by itself when a TIFF stack does not fit in memory.
    #[arg(long)]
    plane_by_plane: bool,
}

/// The progress bar, and the masks (and probabilities) of the slices predicted so far.
struct Report<'a> {
    pb: &'a indicatif::ProgressBar,
    decision: Decision,
    keep_probabilities: bool,
    masks: Vec<crate::data::Plane<u16>>,
    prob_pages: Vec<crate::data::Plane<f32>>,
}
impl SliceProgress for Report<'_> {
    fn retry(&mut self, _: usize, from: usize, to: usize) {
        say(
            self.pb,
            format!("out of device memory with {from} px tiles: retrying with {to} px"),
        );
    }
    fn slice(&mut self, _: usize, probs: Vec<crate::data::Plane<f32>>) {
        self.masks.push(self.decision.classes(&probs));
        if self.keep_probabilities {
            self.prob_pages.extend(probs);
        }
        self.pb.inc(1);
    }
}

pub(crate) fn cmd_predict(a: PredictArgs) -> Result<()> {
    let mut ckpt = load_checkpoint(&a.model)?;
    // The stack, and the network's pass over one tile (its activations).
    let geom = ckpt.meta.unet.geometry();
    let network_bytes = geom
        .input_size(valid_tile(&geom, a.tile)?)
        .and_then(|input| ckpt.meta.unet.memory_estimate(input, false))
        .map_or(0, |m| m.total_bytes);
    if a.plane_by_plane || too_large_tiff(&a.input, network_bytes)? {
        return plane_by_plane(&a, ckpt, network_bytes);
    }
    check_task_memory_plus(&a.input, bytes_per_pixel::PREDICT, network_bytes, "predict")?;
    // A file, a folder of equal images (one stack), or a collection of images that differ:
    // one mask each, written into the folder --output.
    let mut images = load_collection(&a.input)?;
    unify_channels(&mut images)?;
    set_channels(&a, &mut ckpt.meta.unet)?;
    let pick = input_channels(&ckpt.meta.unet, images[0].channels, &a.input)?;
    let outputs = check_outputs(&a, &images)?;
    let run = prepare(&a, &ckpt)?;
    let pb = bar(
        images.iter().map(Stack::slices).sum::<usize>() as u64,
        "predict",
    );
    let mut files = Vec::new();
    for (stack, (mask_path, prob_path)) in images.iter().zip(&outputs) {
        let tile = effective_tile(&geom, valid_tile(&geom, a.tile)?, stack.width, stack.height);
        let mut report = Report {
            pb: &pb,
            decision: run.decision,
            keep_probabilities: a.probabilities.is_some(),
            masks: Vec::new(),
            prob_pages: Vec::new(),
        };
        predict_slices(
            (&run.model, &ckpt.meta.unet),
            &picked(stack, &pick)?,
            tile,
            &run.views,
            (&run.device.device, &CancelToken::new()),
            &mut report,
        )?;
        let axes = TiffAxes::of(stack);
        files.extend(encode_mask(
            mask_path,
            &report.masks,
            run.style,
            &[],
            &axes,
        )?);
        if let Some(p) = prob_path {
            let bytes = encode_f32_tiff(p, &report.prob_pages, ckpt.meta.unet.classes, &axes)?;
            files.push((p.clone(), bytes));
        }
    }
    pb.finish_and_clear();
    // Every mask and the probabilities of one run are written all or nothing.
    write_outputs(&a.output, &files)?;
    for (w, _) in &files {
        eprintln!("wrote {}", w.display());
    }
    Ok(())
}

/// What a prediction runs with: the decision rule, the device and the network on it, the
/// views averaged, the mask's style.
struct Run {
    decision: Decision,
    device: crate::ml::ComputeDevice,
    model: crate::ml::UNet,
    views: Vec<D4>,
    style: MaskStyle,
}

/// The [`Run`] of `a` with the model `ckpt` (the rule and the device are said on stderr).
fn prepare(a: &PredictArgs, ckpt: &crate::ml::Checkpoint) -> Result<Run> {
    let decision = decision_of(a, &ckpt.meta)?;
    let device = select_device(a.device)?;
    eprintln!("device: {}", device.description);
    let model = ckpt.model(&device.device)?;
    Ok(Run {
        decision,
        model,
        device,
        views: D4::all()[..default_views(a.tta, &ckpt.meta)].to_vec(),
        style: if a.binary {
            MaskStyle::Binary
        } else {
            MaskStyle::Classes
        },
    })
}

/// `--channels`, checked against what the model takes.
fn set_channels(a: &PredictArgs, unet: &mut crate::ml::UNetConfig) -> Result<()> {
    if !a.channels.is_empty() {
        if a.channels.len() != unet.in_channels {
            bail!(
                "--channels {:?}: the model takes {} channel(s)",
                a.channels,
                unet.in_channels
            );
        }
        unet.input_channels = a.channels.clone();
    }
    Ok(())
}

/// Whether `input` is one TIFF file of several slices that does not fit in memory whole (it
/// is then predicted plane by plane).
fn too_large_tiff(input: &std::path::Path, network_bytes: u64) -> Result<bool> {
    let is_tiff = input.is_file()
        && matches!(
            crate::data::ImageFormat::from_path(input),
            Some(crate::data::ImageFormat::Tiff)
        );
    if !is_tiff {
        return Ok(false);
    }
    let info = crate::data::io::probe_stack(input)?;
    let need = (info.pixels as u64)
        .saturating_mul(bytes_per_pixel::PREDICT)
        .saturating_add(network_bytes);
    Ok(info.slices > 1 && crate::data::io::check_memory(input, need, "predict").is_err())
}

/// `predict` of a TIFF read, predicted and written one slice at a time: memory for one slice
/// (its channels, probabilities and mask) and the network; outputs staged and renamed into
/// place at the end, all or nothing.
fn plane_by_plane(
    a: &PredictArgs,
    mut ckpt: crate::ml::Checkpoint,
    network_bytes: u64,
) -> Result<()> {
    let mut input = crate::data::io::TiffSlices::open(&a.input)?;
    let (w, h, n) = (input.width, input.height, input.slices());
    let classes = ckpt.meta.unet.classes;
    let slice_bytes = (w * h) as u64 * (4 * (input.channels + classes) as u64 + 2);
    crate::data::io::check_memory(
        &a.input,
        slice_bytes.saturating_add(network_bytes),
        "predict (one slice at a time)",
    )?;
    eprintln!("{} slices, predicted one at a time", n);
    set_channels(a, &mut ckpt.meta.unet)?;
    let pick = input_channels(&ckpt.meta.unet, input.channels, &a.input)?;
    check_stack_outputs(a, n)?;
    let run = prepare(a, &ckpt)?;
    let axes = input.axes();
    let mask =
        crate::data::io::MaskStream::create(&a.output, (w, h, n), classes, run.style, &axes)?;
    let probs = a
        .probabilities
        .as_ref()
        .map(|p| crate::data::io::TiffStream::probabilities(p, (w, h, n * classes), classes, &axes))
        .transpose()?;
    let mut out = StreamedOutputs::new(run.decision, Some(mask), probs);
    let geom = ckpt.meta.unet.geometry();
    let tile = effective_tile(&geom, valid_tile(&geom, a.tile)?, w, h);
    let pb = bar(n as u64, "predict");
    predict_streamed(
        (&run.model, &ckpt.meta.unet),
        (n, &pick),
        &mut |s| input.slice(s).map(Into::into),
        tile,
        &run.views,
        (&run.device.device, &CancelToken::new()),
        &mut out,
        &mut |_, retried| {
            if let Some((from, to)) = retried {
                say(
                    &pb,
                    format!("out of device memory with {from} px tiles: retrying with {to} px"),
                );
            }
            pb.inc(1);
        },
    )?;
    pb.finish_and_clear();
    out.commit()?;
    eprintln!("wrote {}", a.output.display());
    if let Some(p) = &a.probabilities {
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

/// The model's decision rule with the threshold and gap closing asked for.
fn decision_of(a: &PredictArgs, meta: &crate::ml::CheckpointMeta) -> Result<Decision> {
    let mut decision = meta.decision();
    if a.threshold.is_some() {
        decision.threshold = a.threshold;
    }
    if a.no_close_gaps {
        decision.gap_closing = None;
    } else if a.close_gaps {
        if meta.unet.classes != 2 {
            bail!(
                "--close-gaps needs a two-class model (membrane, cell); {} predicts {} classes",
                a.model.display(),
                meta.unet.classes
            );
        }
        decision.gap_closing = decision.gap_closing.or(Some(GapClosing::default()));
    }
    decision
        .check()
        .map_err(|e| anyhow::anyhow!("--threshold: {e}"))?;
    eprintln!("mask: {}", decision.describe());
    Ok(decision)
}

/// `--output` (and `--probabilities`) of one stack of `slices` slices, checked before any
/// computation.
fn check_stack_outputs(a: &PredictArgs, slices: usize) -> Result<()> {
    let inputs = [a.input.as_path(), a.model.as_path()];
    let mask_files = match crate::data::ImageFormat::from_path(&a.output) {
        Some(crate::data::ImageFormat::Png) => crate::data::io::png_slice_paths(&a.output, slices),
        _ => vec![a.output.clone()],
    };
    check_output(&a.output, &["tif", "tiff", "png"], &mask_files, &inputs)?;
    if let Some(p) = &a.probabilities {
        check_output(p, &["tif", "tiff"], std::slice::from_ref(p), &inputs)?;
        if mask_files.contains(p) {
            bail!("--probabilities {} is also the mask output", p.display());
        }
    }
    Ok(())
}

/// Where the masks (and probabilities) go, checked before any computation: `--output` (and
/// `--probabilities`) for one stack; for a collection, one `<image>.tif` per image in the
/// folder `--output` (and one `<image>.probabilities.tif` in the folder `--probabilities`).
fn check_outputs(a: &PredictArgs, images: &[Stack]) -> Result<Vec<(PathBuf, Option<PathBuf>)>> {
    let inputs = [a.input.as_path(), a.model.as_path()];
    if let [stack] = images {
        check_stack_outputs(a, stack.slices())?;
        return Ok(vec![(a.output.clone(), a.probabilities.clone())]);
    }
    let folders = std::iter::once(("--output", &a.output, "masks")).chain(
        a.probabilities
            .iter()
            .map(|p| ("--probabilities", p, "probabilities")),
    );
    for (flag, folder, what) in folders {
        if crate::data::ImageFormat::from_path(folder).is_some() {
            bail!(
                "{} is a collection of {} images of different sizes or channels: {flag} must be a folder for their {what}, not {}",
                a.input.display(),
                images.len(),
                folder.display()
            );
        }
        if resolved(folder) == resolved(&a.input) {
            bail!(
                "{flag} {} is the input folder: the {what} would be read as images next time; choose another folder",
                folder.display()
            );
        }
        std::fs::create_dir_all(folder)
            .with_context(|| format!("creating the folder {} ({flag})", folder.display()))?;
    }
    images
        .iter()
        .map(|s| {
            let source = s.sources.first().cloned().unwrap_or_default();
            let stem = source.file_stem().unwrap_or_default().to_string_lossy();
            let mask = a.output.join(format!("{stem}.tif"));
            check_output(&mask, &["tif"], std::slice::from_ref(&mask), &inputs)?;
            let probs = a
                .probabilities
                .as_ref()
                .map(|p| p.join(format!("{stem}.probabilities.tif")));
            if let Some(p) = &probs {
                check_output(p, &["tif"], std::slice::from_ref(p), &inputs)?;
            }
            Ok((mask, probs))
        })
        .collect()
}
