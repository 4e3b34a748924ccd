//! Labels survive `kill -9`: a child process paints strokes and autosaves them exactly as the
//! app does (changed blocks appended to the journal, now and then a full save); the parent
//! kills it with SIGKILL at an arbitrary moment, reopens the stack and finds every stroke the
//! child reported as saved, losing at most the one being written.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use unet_studio::app::Document;
use unet_studio::data::{MaskStyle, Plane, write_mask};

const CHILD_ENV: &str = "UNET_STUDIO_RECOVERY_CHILD";

fn make_stack(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("stack.tif");
    let planes: Vec<Plane<u16>> = (0..2)
        .map(|s| {
            let mut p = Plane::filled(300, 200, 0u16);
            for (i, v) in p.data.iter_mut().enumerate() {
                *v = ((i * 7 + s * 13) % 251) as u16;
            }
            p
        })
        .collect();
    write_mask(&path, &planes, MaskStyle::Classes).unwrap();
    path
}

/// Stroke `k` (1-based) of the deterministic sequence both processes paint.
fn stroke(doc: &mut Document, k: usize) {
    let slice = k % 2;
    let y = (k * 37 % 190) as f32 + 5.0;
    let x0 = (k * 53 % 200) as f32;
    let class = (k % 3) as u8; // 0 erases
    doc.begin_stroke();
    doc.paint_line(slice, (x0, y), (x0 + 90.0, y + 20.0), 4.0, class, false);
    doc.end_stroke();
    if k.is_multiple_of(5) {
        doc.undo();
    }
}

/// The child: paints and saves forever (until killed), reporting each saved stroke.
#[test]
#[ignore = "run by kill_9_loses_at_most_the_last_stroke in a child process"]
fn recovery_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut doc = Document::open(&PathBuf::from(dir).join("stack.tif"), None).unwrap();
    for k in 1..200_000 {
        stroke(&mut doc, k);
        // As the app: only changed blocks, now and then the whole file (File > Save).
        let work = doc.take_save_work(k.is_multiple_of(7));
        let res = work.run();
        doc.saved(&res);
        res.unwrap();
        println!("saved {k}");
    }
}

#[test]
fn kill_9_loses_at_most_the_last_stroke() {
    let dir = std::env::temp_dir().join(format!("unet-recovery-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let stack = make_stack(&dir);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "recovery_child", "--ignored", "--nocapture"])
        .env(CHILD_ENV, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut reported = 0usize;
    // Kill while it is busy, after a count that is not a multiple of the full-save period.
    while reported < 43 {
        let line = lines.next().expect("the child reports").unwrap();
        if let Some(k) = line.strip_prefix("saved ") {
            reported = k.parse().unwrap();
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Lines the child printed before it died.
    for line in lines.map_while(Result::ok) {
        if let Some(k) = line.strip_prefix("saved ") {
            reported = k.parse().unwrap();
        }
    }
    let reopened = Document::open(&stack, None).unwrap();
    // The same sequence painted in memory: which prefix of it was restored?
    let mut expected = Document::open(&make_stack(&dir.join("reference")), None).unwrap();
    let mut restored_at = None;
    for k in 0..=reported + 1 {
        if k > 0 {
            stroke(&mut expected, k);
        }
        if expected.labels == reopened.labels {
            restored_at = Some(k);
        }
    }
    let m = restored_at.expect("the reopened labels are the state after some stroke");
    assert!(
        m >= reported,
        "restored up to stroke {m} but {reported} were reported saved"
    );
    // The restored labels are not trivially empty.
    assert!(
        reopened
            .labels
            .iter()
            .any(|p| p.data.iter().any(|&v| v != 0))
    );
}

/// In one process: after every autosave (journal or full), reopening gives the labels of the
/// same strokes painted without any saving.
#[test]
fn every_autosave_reopens_to_the_painted_labels() {
    let dir = std::env::temp_dir().join(format!("unet-recovery-seq-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let stack = make_stack(&dir);
    let mut doc = Document::open(&stack, None).unwrap();
    let mut reference = Document::open(&make_stack(&dir.join("reference")), None).unwrap();
    for k in 1..30 {
        stroke(&mut doc, k);
        stroke(&mut reference, k);
        let res = doc.take_save_work(k.is_multiple_of(7)).run();
        doc.saved(&res);
        res.unwrap();
        let reopened = Document::open(&stack, None).unwrap();
        assert!(reopened.labels == reference.labels, "after stroke {k}");
        // A full save leaves no journal; otherwise the journal holds every stroke since.
        assert_eq!(reopened.recovered.records, k % 7, "after stroke {k}");
    }
}
