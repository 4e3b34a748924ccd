//! Helpers shared by the GUI tests: a copy of the sample and the app in a kittest harness.
#![allow(dead_code)]

pub mod engine;

use std::path::{Path, PathBuf};

use eframe::egui;
use egui_kittest::Harness;
use unet_studio::app::{OpenRequest, StudioApp};
use unet_studio::data::LabelEncoding;

/// A copy of the bundled sample (images and scribbles) in the temporary folder.
pub fn copy_sample(tag: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/isbi2012");
    // No process id in the name: paths appear in the snapshot.
    let dst = std::env::temp_dir().join(format!("unet-gui-{tag}"));
    let _ = std::fs::remove_dir_all(&dst);
    for sub in ["images", "scribbles"] {
        std::fs::create_dir_all(dst.join(sub)).unwrap();
        for e in std::fs::read_dir(src.join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dst.join(sub).join(e.file_name())).unwrap();
        }
    }
    dst
}

/// The app on the CPU after opening the copy with its scribbles.
pub fn harness(dir: &Path) -> Harness<'static, StudioApp> {
    let req = OpenRequest {
        images: dir.join("images"),
        labels: Some((dir.join("scribbles"), LabelEncoding::Classes)),
        model: None,
        ..Default::default()
    };
    harness_for(req, dir.join("config"))
}

/// The app on the CPU with its own configuration folder, after opening `req`.
pub fn harness_for(req: OpenRequest, config: PathBuf) -> Harness<'static, StudioApp> {
    let mut h = Harness::builder()
        .with_size(egui::vec2(1100.0, 760.0))
        .wgpu()
        .build_eframe(move |cc| {
            StudioApp::with_options(
                cc,
                Some(req),
                unet_studio::ml::device::cpu_device(),
                Some(config),
            )
        });
    h.state_mut().finish_jobs();
    h.run_steps(4);
    h
}

/// A Python with tifffile (`UNET_STUDIO_PYTHON`, `python3`, `/usr/bin/python3`), or `None`
/// when there is none and `UNET_STUDIO_REQUIRE_TIFFFILE` is not set (CI sets it).
pub fn tifffile_python() -> Option<std::ffi::OsString> {
    let python = std::env::var_os("UNET_STUDIO_PYTHON")
        .into_iter()
        .chain(["python3".into(), "/usr/bin/python3".into()])
        .find(|python| {
            std::process::Command::new(python)
                .args(["-c", "import tifffile"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if python.is_none() {
        assert!(
            std::env::var_os("UNET_STUDIO_REQUIRE_TIFFFILE").is_none(),
            "python3 with tifffile is required here"
        );
        eprintln!("python3 tifffile not installed: cross-check skipped");
    }
    python
}

/// Runs `script` with `arg` under a Python with tifffile; its standard output, or `None`
/// when there is no such Python (see [`tifffile_python`]).
pub fn run_tifffile(script: &str, arg: &str) -> Option<String> {
    let python = tifffile_python()?;
    let out = std::process::Command::new(&python)
        .args(["-c", script, arg])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tifffile: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Paints a short horizontal stroke of the active class through image pixel `(x, y)`.
pub fn paint_at(h: &mut Harness<'static, StudioApp>, x: f32, y: f32) {
    let rect = h.state().canvas_rect;
    let p = h.state().image_to_screen(rect, x, y);
    h.drag_at(p);
    h.step();
    h.hover_at(p + egui::vec2(20.0, 0.0));
    h.step();
    h.drop_at(p + egui::vec2(20.0, 0.0));
    h.run_steps(2);
}

/// Runs the real binary with `args`: whether it succeeded, and its standard error.
pub fn run_cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_unet-studio"))
        .args(args)
        .env("UNET_STUDIO_NO_PROGRESS", "1")
        .output()
        .expect("run the binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `predict` from the command line on the CPU: whether it succeeded, and its standard error.
pub fn quick_predict(model: &Path, input: &Path, output: &Path, extra: &[&str]) -> (bool, String) {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let (model, input, output) = (s(model), s(input), s(output));
    let mut args = vec![
        "predict", "--model", &model, "--input", &input, "--output", &output, "--device", "cpu",
    ];
    args.extend(extra);
    run_cli(&args)
}

/// A quick `train` from the command line (3 iterations of 36 px tiles on the CPU, no
/// validation or checkpoints): whether it succeeded, and its standard error.
pub fn quick_train(images: &Path, labels: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let (images, labels, out) = (s(images), s(labels), s(out));
    let mut args = vec![
        "train",
        "--images",
        &images,
        "--labels",
        &labels,
        "--out",
        &out,
        "--iterations",
        "3",
        "--tile",
        "36",
        "--device",
        "cpu",
        "--val-every",
        "0",
        "--checkpoint-every",
        "0",
    ];
    args.extend(extra);
    run_cli(&args)
}
