//! `unet-studio weights`: the paper's weight map of label images.

use super::common::{bytes_per_pixel, check_output, check_task_memory};
use crate::data::{LabelEncoding, Plane, write_f32_tiff};
use crate::preprocess::{WeightMapConfig, class_weights, weight_map};
use crate::project::sets::load_labels;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

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

pub(crate) fn cmd_weights(a: WeightsArgs) -> Result<()> {
    check_task_memory(&a.labels, bytes_per_pixel::WEIGHTS, "weights")?;
    let labels = load_labels(&a.labels, a.label_encoding)?;
    check_output(
        &a.output,
        &["tif", "tiff"],
        std::slice::from_ref(&a.output),
        &[&a.labels],
    )?;
    let classes = crate::data::labels::class_count(&labels);
    let cfg = WeightMapConfig {
        w0: a.w0,
        sigma_px: a.sigma,
        ..WeightMapConfig::default()
    };
    let cw = class_weights(&labels, classes);
    let maps: Vec<Plane<f32>> = labels.iter().map(|l| weight_map(l, &cw, &cfg)).collect();
    write_f32_tiff(&a.output, &maps, 1, &crate::data::TiffAxes::default())?;
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
