//! `unet-studio scribble`: simulated sparse labels, brush strokes drawn inside full labels.

use crate::data::{LabelEncoding, MaskStyle, Plane, write_mask};
use crate::project::sets::load_labels;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

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

pub(crate) fn cmd_scribble(a: ScribbleArgs) -> Result<()> {
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
