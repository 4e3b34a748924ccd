//! Painting cost on large 16-bit slices (2048x2048 and 8192x8192), in two parts.
//!
//! 1. Document only: time from a brush stroke to the changed rectangle of labels ready for
//!    upload, and its bytes.
//! 2. The whole app on its wgpu device (here Mesa lavapipe, software Vulkan: not a GPU
//!    figure): a stroke painted by simulated mouse moves, each followed by a frame (egui
//!    update, texture upload, draw, read back); the stroke-to-frame latency per mouse move
//!    against an idle frame of the same window, the bytes uploaded to the GPU per stroke, and
//!    the bytes the autosave journal grew by. The 8192 slice once more in 4096-px texture
//!    tiles, as a GPU with that texture limit shows it.
//!
//! Run with `cargo bench --bench stroke`.

use std::path::Path;
use std::time::Instant;

use eframe::egui;
use egui_kittest::Harness;
use unet_studio::app::{Document, OpenRequest, StudioApp};
use unet_studio::data::journal::journal_path;
use unet_studio::data::{MaskStyle, Plane, write_mask};

fn write_slice(path: &Path, edge: usize) {
    let plane = Plane::from_vec(
        edge,
        edge,
        (0..edge * edge).map(|i| (i % 4096) as u16 + 300).collect(),
    )
    .expect("plane");
    write_mask(path, &[plane], MaskStyle::Classes).expect("write");
}

fn document_only(path: &Path, edge: usize) {
    let mut doc = Document::open(path, None).expect("open");
    let mut best = f64::INFINITY;
    let mut bytes = 0;
    let mut painted = 0;
    for rep in 0..5 {
        let y = 100.0 + rep as f32 * 40.0;
        let t = Instant::now();
        doc.begin_stroke();
        // A 200 px horizontal stroke with a 5 px brush, painted in 20 mouse moves.
        let mut last = (500.0f32, y);
        for i in 1..=20 {
            let here = (500.0 + i as f32 * 10.0, y + (i % 3) as f32);
            doc.paint_line(0, last, here, 5.0, 1, false);
            last = here;
        }
        doc.end_stroke();
        bytes = doc
            .take_changed_rects()
            .iter()
            .map(|(_, [x0, y0, x1, y1])| (x1 - x0 + 1) * (y1 - y0 + 1))
            .sum::<usize>();
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
        painted = doc.labels[0].data.iter().filter(|&&v| v > 0).count();
    }
    println!(
        "{:>11} {:>14} {:>16.3} {:>18} {:>16}",
        format!("{edge}x{edge}"),
        painted / 5,
        best,
        bytes,
        edge * edge
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn through_the_app(path: &Path, edge: usize, tile_edge: u32) {
    // Start without the labels of an earlier run.
    let labels = path.with_extension("labels.tif");
    let _ = std::fs::remove_file(journal_path(&labels));
    let _ = std::fs::remove_file(&labels);
    let req = OpenRequest {
        images: path.to_path_buf(),
        labels: None,
        model: None,
        ..Default::default()
    };
    let config = path.with_extension("config");
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
    h.state_mut().set_texture_tile_edge(tile_edge);
    h.run_steps(3);
    // Zoom to 1:1 around the stroke so that it is drawn at full resolution.
    {
        let s = h.state_mut();
        s.view.fit = false;
        s.view.fitted = None;
        s.view.zoom = 1.0;
        s.view.origin = egui::vec2(400.0, 0.0);
    }
    h.run_steps(2);
    let _ = h.render();
    let frame = |h: &mut Harness<'static, StudioApp>| {
        let t = Instant::now();
        h.step();
        h.render().expect("render");
        t.elapsed().as_secs_f64() * 1e3
    };
    let idle = median((0..7).map(|_| frame(&mut h)).collect());
    let journal = journal_path(&h.state().doc.as_ref().expect("doc").label_path);
    let mut latencies = Vec::new();
    let mut upload = Vec::new();
    let mut journal_growth = Vec::new();
    for rep in 0..3 {
        h.state_mut().finish_jobs();
        let bytes0 = h.state().gpu_upload_stats().1;
        let journal0 = std::fs::metadata(&journal).map_or(0, |m| m.len());
        let rect = h.state().canvas_rect;
        let y = 100.5 + rep as f32 * 40.0;
        let a = h.state().image_to_screen(rect, 500.5, y);
        h.drag_at(a);
        frame(&mut h);
        for i in 1..=20 {
            let p = h
                .state()
                .image_to_screen(rect, 500.5 + i as f32 * 10.0, y + (i % 3) as f32);
            h.hover_at(p);
            latencies.push(frame(&mut h));
        }
        h.drop_at(h.state().image_to_screen(rect, 700.5, y));
        frame(&mut h);
        h.state_mut().finish_jobs();
        frame(&mut h);
        upload.push(h.state().gpu_upload_stats().1 - bytes0);
        journal_growth.push(std::fs::metadata(&journal).map_or(0, |m| m.len()) - journal0);
    }
    let (tiles, _) = h.state().gpu_upload_stats();
    let painted = h.state().doc.as_ref().expect("doc").labels[0]
        .data
        .iter()
        .filter(|&&v| v > 0)
        .count();
    println!(
        "{:>11} {:>6} {:>10} {:>14.1} {:>16.1} {:>16} {:>16}",
        format!("{edge}x{edge}"),
        tiles,
        painted / 3,
        idle,
        median(latencies),
        upload.iter().sum::<u64>() / 3,
        journal_growth.iter().sum::<u64>() / 3,
    );
}

fn main() {
    let dir = std::env::temp_dir().join(format!("unet-stroke-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let paths: Vec<(usize, std::path::PathBuf)> = [2048usize, 8192]
        .iter()
        .map(|&edge| {
            let path = dir.join(format!("slice{edge}.tif"));
            write_slice(&path, edge);
            (edge, path)
        })
        .collect();
    println!("Document only (CPU):");
    println!(
        "{:>11} {:>14} {:>16} {:>18} {:>16}",
        "slice", "stroke px", "paint+rect ms", "upload bytes", "full slice bytes"
    );
    for (edge, path) in &paths {
        document_only(path, *edge);
    }
    println!();
    println!("Through the app (wgpu device; on lavapipe a software figure, not a GPU claim):");
    println!(
        "{:>11} {:>6} {:>10} {:>14} {:>16} {:>16} {:>16}",
        "slice",
        "tiles",
        "stroke px",
        "idle frame ms",
        "move->frame ms",
        "GPU bytes/stroke",
        "journal B/stroke"
    );
    for (edge, path) in &paths {
        through_the_app(path, *edge, 0);
    }
    // The same 8192 slice split into 4096-px texture tiles (as on a GPU with that limit).
    if let Some((edge, path)) = paths.last() {
        through_the_app(path, *edge, 4096);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
