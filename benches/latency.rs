//! Input-to-frame latency of the interactions issue #20 measured by hand under Xvfb: a click
//! on a checkbox and on a tool, a slice change, and "New sample" in the augmentation view,
//! each from the input to the frame that shows it (egui update, uploads, draw, read back),
//! against an idle frame of the same 1600 x 1000 window, on the bundled sample with its model,
//! on the wgpu device (here Mesa lavapipe: a software figure, not a GPU claim).
//!
//! Run with `cargo bench --bench latency`.

use std::time::Instant;

use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable as _;
use unet_studio::app::{OpenRequest, StudioApp};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One frame (update, draw, read back) in milliseconds.
fn frame(h: &mut Harness<'static, StudioApp>) -> f64 {
    let t = Instant::now();
    h.step();
    h.render().expect("render");
    t.elapsed().as_secs_f64() * 1e3
}

/// The median time from `act` to the frame after it, over `n` repetitions.
fn latency(
    h: &mut Harness<'static, StudioApp>,
    n: usize,
    mut act: impl FnMut(&mut Harness<'static, StudioApp>),
) -> f64 {
    let v = (0..n)
        .map(|_| {
            frame(h);
            let t = Instant::now();
            act(h);
            h.step();
            h.render().expect("render");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median(v)
}

fn main() {
    let config = std::env::temp_dir().join(format!("unet-latency-bench-{}", std::process::id()));
    let req = OpenRequest::sample();
    let cfg = config.clone();
    let mut h = Harness::builder()
        .with_size(egui::vec2(1600.0, 1000.0))
        .wgpu()
        .build_eframe(move |cc| {
            StudioApp::with_options(
                cc,
                Some(req),
                unet_studio::ml::device::cpu_device(),
                Some(cfg),
            )
        });
    h.state_mut().finish_jobs();
    h.run_steps(3);
    let _ = h.render();
    let idle = median((0..9).map(|_| frame(&mut h)).collect());
    let checkbox = latency(&mut h, 9, |h| h.get_by_label("Show labels").click());
    let tool = latency(&mut h, 9, |h| {
        let next = if h.state().tool == unet_studio::app::Tool::Brush {
            "Eraser (E)"
        } else {
            "Brush (P)"
        };
        h.get_by_label(next).click();
    });
    let slice = latency(&mut h, 9, |h| {
        let s = h.state().view.slice;
        h.state_mut().set_slice((s + 1) % 3);
    });
    // New sample: the deformation is drawn in a background job; the latency runs to the first
    // frame that shows the new sample.
    h.state_mut().augment.open = true;
    h.run_steps(2);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    let sample = median(
        (0..5)
            .map(|_| {
                frame(&mut h);
                let seed = h.state().augment.seed;
                let t = Instant::now();
                h.get_by_label("New sample").click();
                h.step();
                h.state_mut().finish_jobs();
                h.step();
                h.render().expect("render");
                assert_ne!(h.state().augment.seed, seed);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    );
    println!("Input to frame, 1600 x 1000, sample with its model, lavapipe (medians, ms):");
    println!(
        "{:>10} {:>10} {:>10} {:>13} {:>12}",
        "idle", "checkbox", "tool", "slice change", "new sample"
    );
    println!("{idle:>10.1} {checkbox:>10.1} {tool:>10.1} {slice:>13.1} {sample:>12.1}");
    let _ = std::fs::remove_dir_all(&config);
}
