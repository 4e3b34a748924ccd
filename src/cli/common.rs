//! What the subcommands share: progress bars, tile and output checks, the memory check.

use crate::preprocess::TileGeometry;
use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Prints a line above the progress bar, or plainly when the bar is hidden (no terminal).
pub(crate) fn say(pb: &ProgressBar, line: String) {
    if pb.is_hidden() {
        eprintln!("{line}");
    } else {
        pb.println(line);
    }
}

pub(crate) fn bar(len: u64, what: &str) -> ProgressBar {
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
pub(crate) fn valid_tile(geom: &TileGeometry, requested: usize) -> Result<usize> {
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

/// The test-time views of a prediction: as asked, else the views the model's threshold was
/// chosen with (one for a threshold of an older model), else all 8.
pub(crate) fn default_views(asked: Option<u8>, meta: &crate::ml::CheckpointMeta) -> usize {
    let n = asked.unwrap_or(match (meta.threshold, meta.threshold_views) {
        (Some(_), views) => views.unwrap_or(1),
        (None, _) => 8,
    });
    usize::from(n.clamp(1, 8))
}

pub(crate) use crate::data::io::resolved;

/// Checks an output before any work is done: its ending is one of `endings`, its folder
/// exists, and none of the files it stands for (`files`) is an input or lies in an input
/// folder (where the next run would read it as a slice). Messages name both paths.
pub(crate) fn check_output(
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

/// Bytes per pixel of the stack that each command holds at its peak (measured on a stack of
/// 8 pages of 16384 x 16384 before these checks: `predict` 6, `weights` 10, `deform` 8.4;
/// `train` and `eval` past 11), so that it is refused before decoding when the machine
/// cannot hold it.
pub(crate) mod bytes_per_pixel {
    /// `predict`: the stack, the masks, one slice's probabilities at a time.
    pub const PREDICT: u64 = 8;
    /// `weights`: labels, objects and the weight map.
    pub const WEIGHTS: u64 = 12;
    /// `deform`: image and labels, before and after, and the displacement field.
    pub const DEFORM: u64 = 12;
    /// `train`: images, labels, weight maps and held-out masks.
    pub const TRAIN: u64 = 24;
    /// `eval`: the prediction (or its probabilities) and the truth.
    pub const EVAL: u64 = 16;
}

/// Refuses `what` when the stack at `path`, at `per_pixel` bytes per pixel, needs more memory
/// than the machine has (from the files' headers: nothing is decoded).
pub(crate) fn check_task_memory(path: &Path, per_pixel: u64, what: &str) -> Result<()> {
    check_task_memory_plus(path, per_pixel, 0, what)
}

/// [`check_task_memory`] with `extra` bytes the command needs besides the stack (the
/// network's working memory).
pub(crate) fn check_task_memory_plus(
    path: &Path,
    per_pixel: u64,
    extra: u64,
    what: &str,
) -> Result<()> {
    let info = crate::data::io::probe_stack(path)?;
    let need = (info.pixels as u64)
        .saturating_mul(per_pixel)
        .saturating_add(extra);
    crate::data::io::check_memory(path, need, what)?;
    Ok(())
}
