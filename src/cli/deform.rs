//! `unet-studio deform`: a seeded elastic deformation of an image and its labels.

use super::common::{bytes_per_pixel, check_task_memory, resolved};
use crate::data::{
    MaskStyle, Plane, TiffAxes, load_label_stack, load_stack, write_f32_tiff, write_mask_coloured,
};
use crate::preprocess::{DeformationField, ElasticConfig, Interpolation, warp_f32, warp_nearest};
use crate::project::sets::{check_fit, sizes};
use anyhow::{Context as _, Result, bail};
use clap::Args;
use std::path::{Path, PathBuf};

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

pub(crate) fn cmd_deform(a: DeformArgs) -> Result<()> {
    // The paper's grid is 3x3 and sigma 10 px; past these bounds the field only costs memory
    // and time (a grid of 100000 took 8 GB).
    if !(2..=64).contains(&a.grid) {
        bail!(
            "--grid {} is outside 2..=64 control points per side",
            a.grid
        );
    }
    if !(a.sigma.is_finite() && (0.0..=1000.0).contains(&a.sigma)) {
        bail!("--sigma {} is outside 0..=1000 px", a.sigma);
    }
    check_task_memory(&a.image, bytes_per_pixel::DEFORM, "deform")?;
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
            check_fit((lp, &sizes(&raw)), (&a.image, &stack.slice_sizes()))?;
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
        .all_planes()?
        .iter()
        .map(|s| warp_f32(s, &dx, &dy, interp))
        .collect();
    std::fs::create_dir_all(&a.output_dir)
        .with_context(|| format!("creating {}", a.output_dir.display()))?;
    write_f32_tiff(
        &a.output_dir.join("image.tif"),
        &warped,
        stack.channels,
        &TiffAxes::of(&stack),
    )?;
    if let Some(raw) = &labels {
        let out: Vec<Plane<u16>> = raw
            .iter()
            .map(|r| warp_nearest(r, &dx, &dy).map(|v| v.min(u32::from(u16::MAX)) as u16))
            .collect();
        let axes = TiffAxes::of(&stack);
        write_mask_coloured(
            &a.output_dir.join("labels.tif"),
            &out,
            MaskStyle::Classes,
            &[],
            &axes,
        )?;
    }
    write_f32_tiff(
        &a.output_dir.join("field.tif"),
        &[dx, dy],
        2,
        &TiffAxes::default(),
    )?;
    let json = serde_json::to_vec_pretty(&field)?;
    crate::data::write_atomic(&a.output_dir.join("field.json"), &json)?;
    eprintln!(
        "wrote {} (largest control displacement {:.1} px)",
        a.output_dir.display(),
        field.max_control_displacement()
    );
    Ok(())
}
