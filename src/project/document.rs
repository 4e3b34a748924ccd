//! An open stack with its sparse labels: painting, undo/redo of whole strokes, and atomic
//! saving of the labels next to the images. No GUI code here.

use super::sets::labels_for;
use super::settings::{ClassInfo, Display, ProjectSettings, class_color, default_classes};
use super::work::{Dirt, SaveWork, Saved, label_path_for, read_own_labels};
use crate::data::io::slices::cache_budget;
use crate::data::io::{open_on_demand, open_stack};
use crate::data::journal::{self, Block, Replay};
use crate::data::{DataError, LabelEncoding, Plane, SliceLabels, Stack};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One changed pixel of a stroke: slice, index in the slice, value before, value after.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Change {
    slice: usize,
    index: usize,
    before: u8,
    after: u8,
}

/// An open stack with its labels.
#[derive(Debug)]
pub struct Document {
    /// The images.
    pub stack: Stack,
    /// Classes per slice: 0 = unlabelled, k = class k (kept for painted slices only).
    pub labels: SliceLabels,
    /// Class names and colours (class k at index k - 1).
    pub classes: Vec<ClassInfo>,
    /// Contrast settings.
    pub display: Display,
    /// What the stack was opened from.
    pub source: PathBuf,
    /// Where the labels are saved.
    pub label_path: PathBuf,
    undo: Vec<Vec<Change>>,
    redo: Vec<Vec<Change>>,
    stroke: Option<Vec<Change>>,
    /// Unsaved label changes.
    pub dirty: bool,
    /// Counts every change of the labels (for caches computed from them).
    pub edits: u64,
    /// What changed since the last upload and the last autosave.
    dirt: Dirt,
    /// Size of the autosave journal on disk (0 = none).
    pub journal_bytes: u64,
    /// The next save must write the whole label file (labels imported, a save failed).
    pub full_save_needed: bool,
    /// What opening restored from an autosave journal.
    pub recovered: Replay,
    /// Where this stack's work is kept when not beside it (the bundled sample, a read-only
    /// folder), said to the user.
    pub work_note: Option<String>,
    /// Whether class names, colours and contrast came from an earlier session.
    pub settings_restored: bool,
    /// Where its models are kept when not beside its labels (an image of a collection: the
    /// collection's model).
    pub model_home: Option<PathBuf>,
}

impl Document {
    /// Opens a stack and, when present, its saved labels beside it (or `labels` given
    /// explicitly with an encoding, for importing masks).
    pub fn open(source: &Path, labels: Option<(&Path, LabelEncoding)>) -> Result<Self, DataError> {
        Self::open_at(source, labels, label_path_for(source), None, false)
    }

    /// Opens a stack whose work is kept at `label_path` (see [`work_label_path`]): its saved
    /// labels and journal, or `labels` to import instead, or, when the stack has no saved work
    /// yet, the `initial` labels (the bundled sample's strokes). The stack is read slice by
    /// slice when it does not fit in memory, or with `slice_by_slice` (a multipage TIFF).
    pub fn open_at(
        source: &Path,
        labels: Option<(&Path, LabelEncoding)>,
        label_path: PathBuf,
        initial: Option<(&Path, LabelEncoding)>,
        slice_by_slice: bool,
    ) -> Result<Self, DataError> {
        let stack = if slice_by_slice {
            open_on_demand(source, cache_budget())?
        } else {
            open_stack(source)?
        };
        let (w, h) = (stack.width, stack.height);
        let mut doc_labels = SliceLabels::new(w, h, stack.slices());
        let saved_work = label_path.exists() || journal::journal_path(&label_path).exists();
        let initial = initial.filter(|_| !saved_work);
        let importing = labels.is_some() || initial.is_some();
        let import = match labels.or(initial) {
            Some((p, enc)) => Some((p.to_path_buf(), enc)),
            None if label_path.exists() => Some((label_path.clone(), LabelEncoding::Classes)),
            None => None,
        };
        match import {
            // The stack's own label file, page by page (a stack read on demand).
            Some((p, LabelEncoding::Classes)) if stack.on_demand() && p == label_path => {
                read_own_labels(&p, &mut doc_labels)?;
            }
            Some((p, enc)) => {
                let planes = labels_for(&p, enc, (source, &stack.slice_sizes()))?
                    .into_iter()
                    .map(|l| l.classes)
                    .collect();
                doc_labels = SliceLabels::from_planes(w, h, planes);
            }
            None => {}
        }
        // Strokes autosaved after the last full save (or before a crash).
        let recovered = if importing {
            Replay::default()
        } else {
            journal::replay(&label_path, &mut doc_labels)?
        };
        let journal_bytes = std::fs::metadata(journal::journal_path(&label_path))
            .map(|m| m.len())
            .unwrap_or(0);
        let max_class = doc_labels
            .painted()
            .flat_map(|(_, p)| p.data.iter().copied())
            .max()
            .unwrap_or(0) as usize;
        let mut classes = default_classes();
        while classes.len() < max_class {
            let id = classes.len() + 1;
            classes.push(ClassInfo {
                name: format!("class {id}"),
                color: class_color(id),
            });
        }
        let mut display = Display::auto(&stack)?;
        // Settings of an earlier session: class names, colours and contrast.
        let settings_path = label_path.with_extension("json");
        let mut settings_restored = false;
        if let Ok(bytes) = std::fs::read(&settings_path) {
            settings_restored = true;
            let saved: ProjectSettings =
                serde_json::from_slice(&bytes).map_err(|e| DataError::Invalid {
                    path: settings_path.clone(),
                    message: format!("unreadable settings: {e}"),
                })?;
            if saved.classes.len() >= classes.len() {
                classes = saved.classes;
            }
            // A display saved for other channels (the file changed) is not used.
            if saved.display.fits(stack.channels) {
                display = saved.display;
            }
        }
        let dirt = Dirt::new(&doc_labels);
        Ok(Self {
            stack,
            labels: doc_labels,
            classes,
            display,
            source: source.to_path_buf(),
            label_path,
            undo: Vec::new(),
            redo: Vec::new(),
            stroke: None,
            dirty: false,
            edits: 0,
            dirt,
            journal_bytes,
            full_save_needed: importing,
            recovered,
            work_note: None,
            settings_restored,
            model_home: None,
        })
    }

    /// The settings file of this stack (`<labels file>.json`).
    pub fn project_path(&self) -> PathBuf {
        self.label_path.with_extension("json")
    }

    /// The settings to save.
    pub fn settings(&self) -> ProjectSettings {
        ProjectSettings {
            classes: self.classes.clone(),
            display: self.display.clone(),
        }
    }

    /// Writes [`Self::settings`] atomically to [`Self::project_path`].
    pub fn save_settings(path: &Path, settings: &ProjectSettings) -> Result<(), DataError> {
        let json = serde_json::to_vec_pretty(settings).map_err(|e| DataError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        crate::data::write_atomic(path, &json)
    }

    /// Folder where networks trained on this stack are saved (`<labels file>.model`, or the
    /// collection's model).
    pub fn model_dir(&self) -> PathBuf {
        self.model_home
            .clone()
            .unwrap_or_else(|| self.label_path.with_extension("model"))
    }

    /// Number of slices.
    pub fn slices(&self) -> usize {
        self.stack.slices()
    }

    /// Starts a stroke; every change until [`Self::end_stroke`] is undone as one.
    pub fn begin_stroke(&mut self) {
        if self.stroke.is_none() {
            self.stroke = Some(Vec::new());
        }
    }

    /// Ends the stroke; returns whether it changed anything.
    pub fn end_stroke(&mut self) -> bool {
        match self.stroke.take() {
            Some(s) if !s.is_empty() => {
                self.undo.push(s);
                self.redo.clear();
                self.dirty = true;
                true
            }
            _ => false,
        }
    }

    /// Whether a stroke is in progress.
    pub fn in_stroke(&self) -> bool {
        self.stroke.is_some()
    }

    /// Paints a disk of `radius` pixels at image coordinates `(cx, cy)` with `class`
    /// (0 erases). With `preserve`, only unlabelled pixels are painted.
    pub fn paint_disk(
        &mut self,
        slice: usize,
        cx: f32,
        cy: f32,
        radius: f32,
        class: u8,
        preserve: bool,
    ) {
        let Some(plane) = self.labels.get(slice) else {
            return;
        };
        let (w, h) = (plane.width as i64, plane.height as i64);
        let r = radius.max(0.5);
        let (x0, x1) = ((cx - r).floor() as i64, (cx + r).ceil() as i64);
        let (y0, y1) = ((cy - r).floor() as i64, (cy + r).ceil() as i64);
        self.stroke.get_or_insert_with(Vec::new);
        let mut touched = false;
        for y in y0.max(0)..=y1.min(h - 1) {
            for x in x0.max(0)..=x1.min(w - 1) {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                if dx * dx + dy * dy > r * r {
                    continue;
                }
                let i = (y * w + x) as usize;
                if preserve && class != 0 && self.labels[slice].data[i] != 0 {
                    continue;
                }
                touched |= self.set_pixel(slice, i, class);
            }
        }
        if touched {
            self.edits += 1;
        }
    }

    /// Paints along the segment from `a` to `b` (image coordinates), disks every half radius.
    #[allow(clippy::too_many_arguments)]
    pub fn paint_line(
        &mut self,
        slice: usize,
        a: (f32, f32),
        b: (f32, f32),
        radius: f32,
        class: u8,
        preserve: bool,
    ) {
        let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
        let steps = (len / (radius.max(0.5) * 0.5)).ceil().max(1.0) as usize;
        for s in 0..=steps {
            let t = s as f32 / steps as f32;
            self.paint_disk(
                slice,
                a.0 + t * (b.0 - a.0),
                a.1 + t * (b.1 - a.1),
                radius,
                class,
                preserve,
            );
        }
    }

    fn set_pixel(&mut self, slice: usize, i: usize, class: u8) -> bool {
        // Checked before taking the plane for changing, which keeps it from then on.
        if self.labels.get(slice).is_none_or(|p| p.data[i] == class) {
            return false;
        }
        let Some(plane) = self.labels.get_mut(slice) else {
            return false;
        };
        let before = plane.data[i];
        plane.data[i] = class;
        let w = plane.width;
        self.dirt.record(slice, i % w, i / w, before, class);
        self.stroke.get_or_insert_with(Vec::new).push(Change {
            slice,
            index: i,
            before,
            after: class,
        });
        true
    }

    /// Flood fill (napari's fill): the 4-connected region of pixels that carry the same label
    /// as `(x, y)` becomes `class`. With `preserve`, a labelled region is left alone.
    pub fn flood_fill(
        &mut self,
        slice: usize,
        x: usize,
        y: usize,
        class: u8,
        preserve: bool,
    ) -> usize {
        let Some(plane) = self.labels.get(slice) else {
            return 0;
        };
        let (w, h) = (plane.width, plane.height);
        if x >= w || y >= h {
            return 0;
        }
        let target = plane.at(x, y);
        if target == class || (preserve && target != 0) {
            return 0;
        }
        let mut region = Vec::new();
        let mut seen = vec![false; w * h];
        let mut stack = vec![y * w + x];
        seen[y * w + x] = true;
        while let Some(i) = stack.pop() {
            region.push(i);
            for j in crate::data::neighbours4(i, w, h) {
                if !seen[j] && plane.data[j] == target {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        for &i in &region {
            self.set_pixel(slice, i, class);
        }
        if !region.is_empty() {
            self.edits += 1;
        }
        region.len()
    }

    /// Lasso fill: every pixel whose centre lies inside the closed polygon `outline` (image
    /// coordinates) becomes `class` (even-odd rule). With `preserve`, only unlabelled pixels.
    pub fn fill_polygon(
        &mut self,
        slice: usize,
        outline: &[(f32, f32)],
        class: u8,
        preserve: bool,
    ) -> usize {
        let Some(plane) = self.labels.get(slice) else {
            return 0;
        };
        let (w, h) = (plane.width, plane.height);
        if outline.len() < 3 {
            return 0;
        }
        let ys = outline.iter().map(|p| p.1);
        let y_lo = ys.clone().fold(f32::INFINITY, f32::min).floor().max(0.0) as usize;
        let y_hi = (ys.fold(f32::NEG_INFINITY, f32::max).ceil().max(0.0) as usize).min(h);
        let mut changed = 0;
        for y in y_lo..y_hi {
            let cy = y as f32 + 0.5;
            // Crossings of the scanline with the polygon's edges.
            let mut xs: Vec<f32> = Vec::new();
            for k in 0..outline.len() {
                let (a, b) = (outline[k], outline[(k + 1) % outline.len()]);
                if (a.1 <= cy) != (b.1 <= cy) {
                    xs.push(a.0 + (cy - a.1) / (b.1 - a.1) * (b.0 - a.0));
                }
            }
            xs.sort_by(f32::total_cmp);
            for pair in xs.chunks_exact(2) {
                let x0 = (pair[0] - 0.5).ceil().max(0.0) as usize;
                let x1 = ((pair[1] - 0.5).floor() + 1.0).clamp(0.0, w as f32) as usize;
                for x in x0..x1 {
                    let i = y * w + x;
                    if preserve && self.labels[slice].data[i] != 0 && class != 0 {
                        continue;
                    }
                    if self.set_pixel(slice, i, class) {
                        changed += 1;
                    }
                }
            }
        }
        if changed > 0 {
            self.edits += 1;
        }
        changed
    }

    fn apply(&mut self, changes: &[Change], forward: bool) {
        for c in changes {
            if let Some(p) = self.labels.get_mut(c.slice) {
                let from = p.data[c.index];
                let to = if forward { c.after } else { c.before };
                p.data[c.index] = to;
                self.dirt
                    .record(c.slice, c.index % p.width, c.index / p.width, from, to);
            }
        }
        self.dirty = true;
        self.edits += 1;
    }

    /// Undoes the last stroke (on whatever slice it was). Returns the slices it changed, or
    /// `None` when there was nothing to undo.
    pub fn undo(&mut self) -> Option<BTreeSet<usize>> {
        self.end_stroke();
        let s = self.undo.pop()?;
        self.apply(&s, false);
        let slices = s.iter().map(|c| c.slice).collect();
        self.redo.push(s);
        Some(slices)
    }

    /// Redoes the last undone stroke; returns the slices it changed, as [`Self::undo`].
    pub fn redo(&mut self) -> Option<BTreeSet<usize>> {
        let s = self.redo.pop()?;
        self.apply(&s, true);
        let slices = s.iter().map(|c| c.slice).collect();
        self.undo.push(s);
        Some(slices)
    }

    /// Whether there is something to undo / redo.
    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }
    /// See [`Self::can_undo`].
    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    /// Replaces the labels by imported ones as one undoable stroke; with `merge`, pixels the
    /// import leaves unlabelled keep their painted label. Adds classes the import uses.
    /// Returns the number of pixels changed.
    pub fn replace_labels(&mut self, imported: &[Plane<u8>], merge: bool) -> usize {
        self.end_stroke();
        self.begin_stroke();
        let mut changed = 0;
        for (slice, plane) in imported.iter().enumerate().take(self.labels.len()) {
            if plane.data.len() != self.labels[slice].data.len() {
                continue;
            }
            for (i, &v) in plane.data.iter().enumerate() {
                if (merge && v == 0) || self.labels[slice].data[i] == v {
                    continue;
                }
                self.set_pixel(slice, i, v);
                changed += 1;
            }
        }
        self.end_stroke();
        if changed > 0 {
            self.edits += 1;
        }
        let max = imported
            .iter()
            .flat_map(|p| p.data.iter().copied())
            .max()
            .unwrap_or(0) as usize;
        while self.classes.len() < max {
            let id = self.classes.len() + 1;
            self.classes.push(ClassInfo {
                name: format!("class {id}"),
                color: class_color(id),
            });
        }
        changed
    }

    /// The rectangle of changed pixels per slice since the last call:
    /// `(slice, [x0, y0, x1, y1])`, inclusive.
    pub fn take_changed_rects(&mut self) -> Vec<(usize, [usize; 4])> {
        std::mem::take(&mut self.dirt.rects).into_iter().collect()
    }

    /// Number of labelled pixels per class id (index 0 = unlabelled), kept up to date by
    /// every change (no scan of the stack per frame).
    pub fn class_counts(&self) -> Vec<usize> {
        self.dirt.counts[..=self.classes.len().min(255)].to_vec()
    }

    /// Writes the labels atomically to [`Self::label_path`] (multipage TIFF, ImageJ metadata)
    /// and removes the autosave journal.
    pub fn save_labels(&mut self) -> Result<PathBuf, DataError> {
        let res = self.take_save_work(true).run();
        self.saved(&res);
        res.map(|_| self.label_path.clone())
    }

    /// Whether the next autosave should rewrite the whole label file: after an import or a
    /// failed save, or when the journal outgrew the label file (at least 16 MiB).
    pub fn wants_full_save(&self) -> bool {
        let full = self.labels.pixels() * 2;
        self.full_save_needed || self.journal_bytes > full.max(16 << 20)
    }

    /// The work of the next save, taken from the document (which then counts as saved; call
    /// [`Self::saved`] with the work's result). `full` forces a whole label file; otherwise
    /// only the blocks changed since the last save are appended to the journal.
    pub fn take_save_work(&mut self, full: bool) -> SaveWork {
        let full = full || self.wants_full_save();
        let blocks = self.dirt.take_blocks();
        self.dirty = false;
        if full {
            self.full_save_needed = false;
            return SaveWork::Full {
                label_path: self.label_path.clone(),
                labels: self.labels.clone(),
            };
        }
        SaveWork::Journal {
            label_path: self.label_path.clone(),
            dims: (self.stack.width, self.stack.height, self.labels.len()),
            blocks: blocks
                .into_iter()
                .map(|(s, by, bx)| Block::copy_from(&self.labels[s], s, bx, by))
                .collect(),
        }
    }

    /// Records the result of a save: the journal's size, or a failure after which the next
    /// save writes the whole label file (so no change is lost).
    pub fn saved(&mut self, result: &Result<Saved, DataError>) {
        match result {
            Ok(Saved::Journal { bytes, .. }) => self.journal_bytes = *bytes,
            Ok(Saved::Full(_)) => self.journal_bytes = 0,
            Err(_) => {
                self.dirty = true;
                self.full_save_needed = true;
            }
        }
    }
}

/// The painted slices of a document's labels as training sees them (classes convention,
/// objects from components): their indices and labels; slices without a label are left out.
pub fn train_labels(labels: &SliceLabels) -> (Vec<usize>, Vec<crate::data::LabelSlice>) {
    labels
        .painted()
        .filter(|(_, p)| p.data.iter().any(|&v| v != 0))
        .filter_map(|(s, p)| {
            crate::data::encode_labels(&p.map(u32::from), LabelEncoding::Classes)
                .ok()
                .map(|l| (s, l))
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{MaskStyle, write_mask};

    fn doc_in(dir: &Path) -> Document {
        let img = dir.join("img.png");
        write_mask(&img, &[Plane::filled(20, 10, 7u16)], MaskStyle::Classes).unwrap();
        Document::open(&img, None).unwrap()
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("unet-doc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn strokes_paint_undo_and_redo_as_one() {
        let d = tmp("undo");
        let mut doc = doc_in(&d);
        doc.begin_stroke();
        doc.paint_line(0, (2.0, 5.0), (12.0, 5.0), 1.5, 2, false);
        assert!(doc.end_stroke());
        let painted = doc.labels[0].data.iter().filter(|&&v| v == 2).count();
        assert!(painted >= 20, "{painted}");
        assert_eq!(doc.labels[0].at(7, 5), 2);
        assert_eq!(doc.labels[0].at(7, 0), 0);
        assert!(doc.undo().is_some());
        assert!(doc.labels[0].data.iter().all(|&v| v == 0));
        assert!(doc.redo().is_some());
        assert_eq!(
            doc.labels[0].data.iter().filter(|&&v| v == 2).count(),
            painted
        );
        // Erasing is a stroke of class 0; preserve paints only unlabelled pixels.
        doc.take_changed_rects();
        let before = doc.labels[0].clone();
        doc.begin_stroke();
        doc.paint_disk(0, 7.5, 5.5, 3.0, 1, true);
        doc.end_stroke();
        // The changed rectangle is the bounding box of the changed pixels.
        let (mut bbox, w) = ([usize::MAX, usize::MAX, 0, 0], before.width);
        for (i, _) in before
            .data
            .iter()
            .zip(&doc.labels[0].data)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
        {
            let (x, y) = (i % w, i / w);
            bbox = [
                bbox[0].min(x),
                bbox[1].min(y),
                bbox[2].max(x),
                bbox[3].max(y),
            ];
        }
        assert_eq!(doc.take_changed_rects(), vec![(0, bbox)]);
        assert!(doc.take_changed_rects().is_empty());
        assert_eq!(
            doc.labels[0].at(7, 5),
            2,
            "preserve kept the existing label"
        );
        assert_eq!(doc.labels[0].at(7, 8), 1);
        doc.begin_stroke();
        doc.paint_disk(0, 7.5, 5.5, 1.0, 0, false);
        doc.end_stroke();
        assert_eq!(doc.labels[0].at(7, 5), 0);
    }

    #[test]
    fn flood_fill_and_lasso_are_undoable_strokes() {
        let d = tmp("fill");
        let mut doc = doc_in(&d);
        // A vertical wall of class 1 at x = 10 splits the 20 x 10 slice.
        doc.begin_stroke();
        doc.paint_line(0, (10.5, 0.0), (10.5, 10.0), 0.5, 1, false);
        doc.end_stroke();
        assert!((0..10).all(|y| doc.labels[0].at(10, y) == 1));
        doc.begin_stroke();
        let n = doc.flood_fill(0, 2, 2, 2, false);
        doc.end_stroke();
        assert_eq!(n, 10 * 10, "the left part, 10 columns x 10 rows");
        assert_eq!(doc.labels[0].at(0, 9), 2);
        assert_eq!(doc.labels[0].at(15, 5), 0, "the wall stopped the fill");
        assert!(doc.undo().is_some());
        assert_eq!(doc.labels[0].at(0, 9), 0);
        // Lasso: a square outline from (12, 2) to (18, 8) fills its 6 x 6 inside.
        doc.begin_stroke();
        let n = doc.fill_polygon(
            0,
            &[(12.0, 2.0), (18.0, 2.0), (18.0, 8.0), (12.0, 8.0)],
            2,
            false,
        );
        doc.end_stroke();
        assert_eq!(n, 36);
        assert_eq!(doc.labels[0].at(12, 2), 2);
        assert_eq!(doc.labels[0].at(17, 7), 2);
        assert_eq!(doc.labels[0].at(18, 7), 0);
        // Preserve keeps the wall when a lasso covers it.
        doc.begin_stroke();
        doc.fill_polygon(
            0,
            &[(8.0, 0.0), (12.0, 0.0), (12.0, 4.0), (8.0, 4.0)],
            2,
            true,
        );
        doc.end_stroke();
        assert_eq!(doc.labels[0].at(10, 1), 1);
        assert_eq!(doc.labels[0].at(9, 1), 2);
        // The running class counts equal a count of the pixels, also after undo and redo.
        let count = |doc: &Document| {
            (0..=2u8)
                .map(|k| doc.labels[0].data.iter().filter(|&&v| v == k).count())
                .collect::<Vec<_>>()
        };
        assert_eq!(doc.class_counts(), count(&doc));
        doc.undo();
        doc.undo();
        assert_eq!(doc.class_counts(), count(&doc));
        doc.redo();
        assert_eq!(doc.class_counts(), count(&doc));
        assert_eq!(doc.class_counts().iter().sum::<usize>(), 200);
    }

    #[test]
    fn every_save_gets_the_blocks_changed_since_the_last() {
        let d = tmp("blocks");
        let mut doc = doc_in(&d);
        let blocks = |w: SaveWork| match w {
            SaveWork::Journal { blocks, .. } => blocks
                .iter()
                .map(|b| (b.slice, b.x0, b.y0))
                .collect::<Vec<_>>(),
            SaveWork::Full { .. } => panic!("a journal save was expected"),
        };
        for (x, class) in [(3.5, 2), (7.5, 2), (3.5, 1)] {
            // Each time the same 64 x 64 block (the 20 x 10 slice is one block).
            doc.begin_stroke();
            doc.paint_disk(0, x, 4.5, 1.0, class, false);
            doc.end_stroke();
            assert_eq!(blocks(doc.take_save_work(false)), vec![(0, 0, 0)], "x {x}");
        }
        assert!(blocks(doc.take_save_work(false)).is_empty());
    }

    #[test]
    fn settings_survive_reopening() {
        let d = tmp("settings");
        let mut doc = doc_in(&d);
        doc.classes[0].name = "membrane".into();
        doc.classes[1].color = [1, 2, 3];
        doc.display.min = 3.0;
        doc.display.gamma = 0.5;
        Document::save_settings(&doc.project_path(), &doc.settings()).unwrap();
        let again = Document::open(&d.join("img.png"), None).unwrap();
        assert_eq!(again.classes, doc.classes);
        assert_eq!(again.display, doc.display);
        // A corrupt settings file is a clear error naming it.
        std::fs::write(doc.project_path(), b"{ not json").unwrap();
        let err = Document::open(&d.join("img.png"), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("img.labels.json") && err.contains("unreadable settings"),
            "{err}"
        );
    }

    #[test]
    fn labels_save_atomically_and_reopen() {
        let d = tmp("save");
        let mut doc = doc_in(&d);
        doc.begin_stroke();
        doc.paint_disk(0, 4.5, 4.5, 2.0, 2, false);
        doc.end_stroke();
        let path = doc.save_labels().unwrap();
        assert_eq!(path, d.join("img.labels.tif"));
        assert!(!doc.dirty);
        let again = Document::open(&d.join("img.png"), None).unwrap();
        assert_eq!(again.labels, doc.labels);
        let leftovers: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
