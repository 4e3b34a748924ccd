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
    /// Also run the same rows with PyTorch through this Python interpreter (one with `torch`
    /// installed) on the CPU, with as many threads, and compare.
    #[arg(long, value_name = "PYTHON")]
    pytorch: Option<std::path::PathBuf>,
}

/// The PyTorch version of the reference rows (`benches/pytorch_unet.py`).
const PYTORCH_SCRIPT: &str = include_str!("../../benches/pytorch_unet.py");

/// One row measured with PyTorch.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct ReferenceRow {
    /// Preset name.
    pub preset: String,
    /// Input tile edge.
    pub tile_in: usize,
    /// Output tile edge.
    pub tile_out: usize,
    /// Trainable parameters of PyTorch's network (must equal ours).
    pub params: usize,
    /// Best forward time, ms.
    pub fwd_ms: f64,
    /// Best training step time, ms.
    pub train_ms: f64,
    /// PyTorch's fp32 GEMM GFLOP/s in its run.
    pub gemm_gflops: f64,
    /// PyTorch version.
    pub torch: String,
    /// Threads PyTorch used.
    pub threads: usize,
}

/// Runs the embedded `benches/pytorch_unet.py` with `python` for `rows` and reads its rows;
/// checks that each network has our parameter count and output size, so that both measure the
/// same net.
pub fn pytorch_rows(
    python: &std::path::Path,
    rows: &[(Preset, usize)],
    threads: usize,
    repeats: usize,
) -> Result<Vec<ReferenceRow>> {
    use std::io::Write as _;
    let spec = rows
        .iter()
        .map(|(p, t)| format!("{p}:{t}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut child = std::process::Command::new(python)
        .args(["-", "--threads", &threads.to_string()])
        .args(["--repeats", &repeats.to_string(), "--rows", &spec])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("--pytorch: cannot run {}: {e}", python.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(PYTORCH_SCRIPT.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("").trim();
        anyhow::bail!(
            "--pytorch: {} failed ({}): {last}",
            python.display(),
            out.status
        );
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let r: ReferenceRow = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("--pytorch: unexpected output line {line:?}: {e}"))?;
        let preset: Preset = r
            .preset
            .parse()
            .map_err(|e| anyhow::anyhow!("--pytorch: {e}"))?;
        let cfg = UNetConfig::preset(preset, 2);
        let ours = (cfg.parameter_count(), cfg.geometry().output_size(r.tile_in));
        if ours != (r.params, Some(r.tile_out)) {
            anyhow::bail!(
                "--pytorch: its {} net at {} px has {} parameters and a {} px output, ours {} \
                 and {:?}: not the same network",
                r.preset,
                r.tile_in,
                r.params,
                r.tile_out,
                ours.0,
                ours.1
            );
        }
        found.push(r);
    }
    if found.len() != rows.len() {
        anyhow::bail!(
            "--pytorch: expected {} rows, got {}",
            rows.len(),
            found.len()
        );
    }
    Ok(found)
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
    /// fp32 GEMM GFLOP/s of this device measured in this run: the higher of the rates
    /// measured right before and right after this row ([`run`]).
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

impl BenchRow {
    /// The row with `gemm` GFLOP/s as its reference rate (and the ratios to it).
    pub fn with_reference(self, gemm: f64) -> Self {
        Self {
            gemm_gflops: gemm,
            fwd_ratio: self.fwd_gflops / gemm,
            train_ratio: self.train_gflops / gemm,
            ..self
        }
    }
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

fn best_ms(repeats: usize, mut f: impl FnMut() -> Result<()> + Send) -> Result<f64> {
    crate::ml::in_compute_pool(&mut f)?; // warm-up: kernels, allocations, autotuning
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        // Where training and prediction run their steps (see there).
        crate::ml::in_compute_pool(&mut f)?;
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

/// Measures one configuration; its ratios are to `gemm` GFLOP/s ([`BenchRow::with_reference`]).
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
    let mut model = Some(cfg.init(&ad));
    let mut optim = OptimizerConfig::paper().init_optimizer();
    let classes = Plane::filled(tile_out, tile_out, 1u8);
    let weights = Plane::filled(tile_out, tile_out, 1.0f32);
    let train_ms = best_ms(repeats, || {
        // Moved, as training does: the optimiser then updates the weights in place.
        let m = model
            .take()
            .ok_or_else(|| anyhow::anyhow!("the model was lost in a step"))?;
        let (t, w) = target_tensors(&classes, &weights, 2, &ad);
        let loss = weighted_cross_entropy(m.forward(plane_tensor(&image, &ad)), t, w);
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        let m = model.insert(optim.step(1e-6, m, grads));
        // Wait for the update itself, not only the loss.
        let p = m.valid().num_params() as f32;
        sync(Tensor::<1>::from_floats([p], &dev.device))
    })?;
    let fwd_gflops = gflop / (fwd_ms * 1e-3);
    let train_gflops = 3.0 * gflop / (train_ms * 1e-3);
    let row = BenchRow {
        preset: preset.to_string(),
        tile_in,
        tile_out,
        device: dev.description.clone(),
        fwd_ms,
        train_ms,
        gflop_fwd: gflop,
        fwd_gflops,
        train_gflops,
        gemm_gflops: f64::NAN,
        fwd_ratio: f64::NAN,
        train_ratio: f64::NAN,
        peak_rss_mb: peak_rss_mb(),
        performance_claim: !dev.software,
    };
    Ok(row.with_reference(gemm))
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
    let mut cpu_rows = Vec::new();
    for dev in &devices {
        // The reference of each row is the higher of the GEMM rates measured right before
        // and right after it. On this project's VMs the rate of the same product moved by up
        // to 30 % within a second (the host's load and clocks): a single measurement before
        // all rows, a minute before the last, made their ratios depend on the phase each
        // happened to fall in (0.47-0.72 for the same 252 px step in ten runs).
        let mut gemm_before = gemm_gflops(&dev.device, a.repeats)?;
        // A software GPU adapter runs the small row only: minutes per paper-size step, and
        // its figures are correctness checks, not performance.
        let rows: Vec<(Preset, usize)> = if dev.software && a.preset.is_none() {
            vec![(Preset::Lite, 252)]
        } else {
            rows_to_run.clone()
        };
        for &(preset, tile) in &rows {
            let row = bench_row(preset, tile, dev, gemm_before, a.repeats)?;
            let gemm_after = gemm_gflops(&dev.device, a.repeats)?;
            let row = row.with_reference(gemm_before.max(gemm_after));
            gemm_before = gemm_after;
            if !dev.is_gpu {
                cpu_rows.push(row.clone());
            }
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
    if let Some(python) = &a.pytorch {
        let threads = rayon::current_num_threads();
        let reference = pytorch_rows(python, &rows_to_run, threads, a.repeats)?;
        print_comparison(&cpu_rows, &reference, a.json)?;
    }
    Ok(())
}

/// The CPU rows against PyTorch's: times and how many times faster this build is.
fn print_comparison(ours: &[BenchRow], reference: &[ReferenceRow], json: bool) -> Result<()> {
    if !json {
        if let Some(r) = reference.first() {
            println!(
                "\nagainst PyTorch {} on the CPU ({} threads, this run; its GEMM {:.1} GF/s):",
                r.torch, r.threads, r.gemm_gflops
            );
        }
        println!(
            "{:<6} {:>9} {:>9} {:>11} {:>8} {:>10} {:>12} {:>8}",
            "preset",
            "tile",
            "fwd ms",
            "PyTorch ms",
            "speed-up",
            "train ms",
            "PyTorch ms",
            "speed-up"
        );
    }
    for r in reference {
        let Some(o) = ours
            .iter()
            .find(|o| o.preset == r.preset && o.tile_in == r.tile_in)
        else {
            continue;
        };
        let (fwd, train) = (r.fwd_ms / o.fwd_ms, r.train_ms / o.train_ms);
        if json {
            let v = serde_json::json!({
                "preset": o.preset, "tile_in": o.tile_in, "tile_out": o.tile_out,
                "device": "cpu", "reference": format!("PyTorch {}", r.torch),
                "fwd_ms": o.fwd_ms, "reference_fwd_ms": r.fwd_ms, "fwd_speedup": fwd,
                "train_ms": o.train_ms, "reference_train_ms": r.train_ms, "train_speedup": train,
            });
            println!("{v}");
        } else {
            println!(
                "{:<6} {:>9} {:>9.1} {:>11.1} {:>7.2}x {:>10.1} {:>12.1} {:>7.2}x",
                o.preset,
                format!("{}->{}", o.tile_in, o.tile_out),
                o.fwd_ms,
                r.fwd_ms,
                fwd,
                o.train_ms,
                r.train_ms,
                train
            );
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// A stand-in interpreter: a shell script that swallows the script on stdin and prints
    /// `out` (or fails with `err` on stderr).
    fn fake_python(tag: &str, out: &str, fail: Option<&str>) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("unet-bench-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("python");
        let body = match fail {
            Some(err) => format!(
                "#!/bin/sh\ncat > /dev/null\necho 'Traceback' >&2\necho '{err}' >&2\nexit 1\n"
            ),
            None => format!("#!/bin/sh\ncat > /dev/null\ncat <<'END'\n{out}END\n"),
        };
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn line(preset: &str, tile: usize, out: usize, params: usize) -> String {
        format!(
            "{{\"preset\": \"{preset}\", \"tile_in\": {tile}, \"tile_out\": {out}, \
             \"params\": {params}, \"fwd_ms\": 91.9, \"train_ms\": 198.7, \"gflop_fwd\": 18.88, \
             \"gemm_gflops\": 225.7, \"torch\": \"2.15.0\", \"threads\": 2}}\n"
        )
    }

    #[test]
    fn a_row_is_measured_against_the_reference_it_is_given() {
        let row = BenchRow {
            preset: "lite".into(),
            tile_in: 252,
            tile_out: 68,
            device: "CPU".into(),
            fwd_ms: 10.0,
            train_ms: 40.0,
            gflop_fwd: 1.9,
            fwd_gflops: 190.0,
            train_gflops: 142.5,
            gemm_gflops: 250.0,
            fwd_ratio: 0.76,
            train_ratio: 0.57,
            peak_rss_mb: 0.0,
            performance_claim: true,
        };
        let row = row.with_reference(285.0);
        assert_eq!(row.gemm_gflops, 285.0);
        assert!((row.fwd_ratio - 2.0 / 3.0).abs() < 1e-12);
        assert!((row.train_ratio - 0.5).abs() < 1e-12);
        assert_eq!(row.fwd_ms, 10.0);
    }

    #[test]
    fn pytorch_rows_are_read_and_checked_against_our_network() {
        let lite = UNetConfig::preset(Preset::Lite, 2).parameter_count();
        let rows = [(Preset::Lite, 572), (Preset::Lite, 252)];
        let good = line("lite", 572, 388, lite) + &line("lite", 252, 68, lite);
        let python = fake_python("good", &good, None);
        let got = pytorch_rows(&python, &rows, 2, 1).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[1].tile_in, got[1].tile_out), (252, 68));
        assert!((got[0].train_ms - 198.7).abs() < 1e-9);

        // Another network (one parameter more) is refused, naming both counts.
        let other = line("lite", 572, 388, lite + 1) + &line("lite", 252, 68, lite);
        let python = fake_python("other", &other, None);
        let err = pytorch_rows(&python, &rows, 2, 1).unwrap_err().to_string();
        assert!(err.contains("not the same network"), "{err}");
        assert!(err.contains(&(lite + 1).to_string()), "{err}");

        // A missing row, an interpreter without torch, and no interpreter at all.
        let python = fake_python("short", &line("lite", 572, 388, lite), None);
        let err = pytorch_rows(&python, &rows, 2, 1).unwrap_err().to_string();
        assert!(err.contains("expected 2 rows, got 1"), "{err}");
        let msg = "ModuleNotFoundError: No module named torch";
        let python = fake_python("notorch", "", Some(msg));
        let err = pytorch_rows(&python, &rows, 2, 1).unwrap_err().to_string();
        assert!(err.contains(msg), "{err}");
        let err = pytorch_rows(std::path::Path::new("/nonexistent/python3"), &rows, 2, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot run /nonexistent/python3"), "{err}");
    }
}
