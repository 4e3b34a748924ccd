//! `unet-studio bench`: forward and training-step time per tile, achieved GFLOP/s, and the
//! machine's fp32 GEMM rate measured in the same run as the reference.

use std::time::Instant;

use anyhow::Result;
use burn::module::Module as _;
use burn::optim::GradientsParams;
use burn::prelude::*;
use clap::Args;

use crate::data::Plane;
use crate::ml::device::{ComputeDevice, cpu_device};
use crate::ml::infer::plane_tensor;
use crate::ml::train::target_tensors;
use crate::ml::{
    DeviceChoice, OptimizerConfig, Preset, UNetConfig, select_device, weighted_cross_entropy,
};

/// Arguments of `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Only this preset (default: the three reference rows).
    #[arg(long)]
    preset: Option<Preset>,
    /// Input tile edge (with --preset).
    #[arg(long)]
    tile: Option<usize>,
    /// auto | gpu | cpu: auto measures the CPU and, when an adapter exists, the GPU.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Timed repetitions per measurement (the best is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// One JSON object per row instead of a table.
    #[arg(long)]
    json: bool,
}

/// One measured row.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchRow {
    /// Preset name.
    pub preset: String,
    /// Input tile edge.
    pub tile_in: usize,
    /// Output tile edge.
    pub tile_out: usize,
    /// Device description.
    pub device: String,
    /// Best forward time, ms.
    pub fwd_ms: f64,
    /// Best training step (forward, backward, optimiser) time, ms.
    pub train_ms: f64,
    /// FLOPs of one forward pass, in GFLOP.
    pub gflop_fwd: f64,
    /// Achieved forward GFLOP/s.
    pub fwd_gflops: f64,
    /// Achieved training GFLOP/s, counting the step as 3 forward passes.
    pub train_gflops: f64,
    /// fp32 GEMM GFLOP/s of this device measured in this run.
    pub gemm_gflops: f64,
    /// `fwd_gflops / gemm_gflops`.
    pub fwd_ratio: f64,
    /// `train_gflops / gemm_gflops`.
    pub train_ratio: f64,
    /// Peak resident memory of the process so far, MB.
    pub peak_rss_mb: f64,
    /// Whether the figures may be quoted as performance (false for software GPUs).
    pub performance_claim: bool,
}

/// Peak resident set size of this process in MB (Linux; 0 elsewhere).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn best_ms(repeats: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm-up: kernels, allocations, autotuning
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(best)
}

/// Waits for the device by reading a (tiny) tensor back.
fn sync(t: Tensor<1>) -> Result<()> {
    crate::ml::infer::tensor_values(t)?;
    Ok(())
}

/// fp32 GEMM rate of the device (best of square sizes 512..2048).
pub fn gemm_gflops(device: &Device, repeats: usize) -> Result<f64> {
    let mut best: f64 = 0.0;
    for n in [512usize, 1024, 2048] {
        let a = Tensor::<2>::ones([n, n], device);
        let b = Tensor::<2>::ones([n, n], device);
        let ms = best_ms(repeats, || {
            sync(a.clone().matmul(b.clone()).slice([0..1, 0..1]).reshape([1]))
        })?;
        best = best.max(2.0 * (n * n * n) as f64 / (ms * 1e-3) / 1e9);
    }
    Ok(best)
}

/// Measures one configuration.
pub fn bench_row(
    preset: Preset,
    tile_in: usize,
    dev: &ComputeDevice,
    gemm: f64,
    repeats: usize,
) -> Result<BenchRow> {
    let cfg = UNetConfig::preset(preset, 2);
    let tile_out = cfg
        .geometry()
        .output_size(tile_in)
        .ok_or_else(|| anyhow::anyhow!("{tile_in} px is not a valid input size"))?;
    let gflop = cfg.forward_flops(tile_in).unwrap_or(0.0) / 1e9;
    let image = Plane::filled(tile_in, tile_in, 0.5f32);
    let model = cfg.init(&dev.device);
    let x = plane_tensor(&image, &dev.device);
    let fwd_ms = best_ms(repeats, || {
        sync(
            model
                .forward(x.clone())
                .slice([0..1, 0..1, 0..1, 0..1])
                .reshape([1]),
        )
    })?;
    drop(model);
    let ad = dev.device.clone().autodiff();
    let mut model = cfg.init(&ad);
    let mut optim = OptimizerConfig::paper().init_optimizer();
    let classes = Plane::filled(tile_out, tile_out, 1u8);
    let weights = Plane::filled(tile_out, tile_out, 1.0f32);
    let train_ms = best_ms(repeats, || {
        let (t, w) = target_tensors(&classes, &weights, 2, &ad);
        let loss = weighted_cross_entropy(model.forward(plane_tensor(&image, &ad)), t, w);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-6, model.clone(), grads);
        // Wait for the update itself, not only the loss.
        let p = model.valid().num_params() as f32;
        sync(Tensor::<1>::from_floats([p], &dev.device))
    })?;
    let fwd_gflops = gflop / (fwd_ms * 1e-3);
    let train_gflops = 3.0 * gflop / (train_ms * 1e-3);
    Ok(BenchRow {
        preset: preset.to_string(),
        tile_in,
        tile_out,
        device: dev.description.clone(),
        fwd_ms,
        train_ms,
        gflop_fwd: gflop,
        fwd_gflops,
        train_gflops,
        gemm_gflops: gemm,
        fwd_ratio: fwd_gflops / gemm,
        train_ratio: train_gflops / gemm,
        peak_rss_mb: peak_rss_mb(),
        performance_claim: !dev.software,
    })
}

/// Runs `bench`.
pub fn run(a: BenchArgs) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "note: this binary was built with debug assertions (the dev profile); its figures \
             are about 2x slower than a release build: use `cargo run --release -- bench`"
        );
    }
    let rows_to_run: Vec<(Preset, usize)> = match a.preset {
        Some(p) => vec![(p, a.tile.unwrap_or(572))],
        None => vec![
            (Preset::Lite, 572),
            (Preset::Paper, 572),
            (Preset::Lite, 252),
        ],
    };
    let mut devices = vec![];
    match a.device {
        DeviceChoice::Cpu => devices.push(cpu_device()),
        DeviceChoice::Gpu => devices.push(select_device(DeviceChoice::Gpu)?),
        DeviceChoice::Auto => {
            devices.push(cpu_device());
            if let Ok(g) = select_device(DeviceChoice::Gpu) {
                devices.push(g);
            }
        }
    }
    if !a.json {
        println!(
            "{:<6} {:>9} {:<34} {:>9} {:>10} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8}",
            "preset",
            "tile",
            "device",
            "fwd ms",
            "train ms",
            "GFLOP",
            "fwd GF/s",
            "GEMM GF/s",
            "fwd/pk",
            "trn/pk",
            "RSS MB"
        );
    }
    for dev in &devices {
        let gemm = gemm_gflops(&dev.device, a.repeats)?;
        // A software GPU adapter runs the small row only: minutes per paper-size step, and
        // its figures are correctness checks, not performance.
        let rows: Vec<(Preset, usize)> = if dev.software && a.preset.is_none() {
            vec![(Preset::Lite, 252)]
        } else {
            rows_to_run.clone()
        };
        for &(preset, tile) in &rows {
            let row = bench_row(preset, tile, dev, gemm, a.repeats)?;
            if a.json {
                println!("{}", serde_json::to_string(&row)?);
            } else {
                let mut device = row.device.clone();
                device.truncate(34);
                println!(
                    "{:<6} {:>9} {:<34} {:>9.1} {:>10.1} {:>8.1} {:>8.1} {:>9.1} {:>8.2} {:>8.2} {:>8.0}{}",
                    row.preset,
                    format!("{}->{}", row.tile_in, row.tile_out),
                    device,
                    row.fwd_ms,
                    row.train_ms,
                    row.gflop_fwd,
                    row.fwd_gflops,
                    row.gemm_gflops,
                    row.fwd_ratio,
                    row.train_ratio,
                    row.peak_rss_mb,
                    if row.performance_claim {
                        ""
                    } else {
                        "  (software GPU: correctness only, not a performance figure)"
                    }
                );
            }
        }
    }
    Ok(())
}
