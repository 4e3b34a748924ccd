//! Painting cost on large 16-bit slices: time from a brush stroke to the label rows ready for
//! upload, and the bytes uploaded per stroke, on 2048x2048 and 8192x8192 slices.
//! Run with `cargo bench --bench stroke`. The GPU copy of those bytes is not timed here.

use std::time::Instant;

use unet_studio::app::Document;
use unet_studio::data::{MaskStyle, Plane, write_mask};

fn main() {
    let dir = std::env::temp_dir().join(format!("unet-stroke-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    println!(
        "{:>11} {:>14} {:>16} {:>18} {:>16}",
        "slice", "stroke px", "paint+rows ms", "upload bytes", "full slice bytes"
    );
    for edge in [2048usize, 8192] {
        let path = dir.join(format!("slice{edge}.tif"));
        let plane = Plane::from_vec(
            edge,
            edge,
            (0..edge * edge).map(|i| (i % 4096) as u16 + 300).collect(),
        )
        .expect("plane");
        write_mask(&path, &[plane], MaskStyle::Classes).expect("write");
        let mut doc = Document::open(&path, None).expect("open");
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
            let rows = doc.take_changed_rows();
            bytes = rows
                .iter()
                .map(|(_, a, b)| (b - a + 1) * edge)
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
}
