//! Where a stack's work is kept (beside it, or in the user's data folder for the bundled
//! sample and read-only folders) and how it is saved: changed blocks to the journal, or the
//! whole label file, atomically, in a background job.

use crate::data::io::{MaskStream, TiffAxes, TiffSlices, commit};
use crate::data::journal::{self, Block};
use crate::data::{DataError, MaskStyle, SliceLabels, write_mask};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Book-keeping of every label change: the bounding box per slice since the renderer last
/// uploaded, the journal blocks since the last autosave, and the pixel count per class.
#[derive(Debug)]
pub(crate) struct Dirt {
    /// Per slice: x0, y0, x1, y1 (inclusive).
    pub(crate) rects: std::collections::BTreeMap<usize, [usize; 4]>,
    /// (slice, block row, block column).
    pub(crate) blocks: BTreeSet<(usize, usize, usize)>,
    /// The block recorded last: consecutive pixels mostly share it, and a fill of a large
    /// region would otherwise search the set once per pixel.
    pub(crate) last_block: Option<(usize, usize, usize)>,
    /// Pixels per class id over the whole stack.
    pub(crate) counts: Box<[usize; 256]>,
}

impl Dirt {
    pub(crate) fn new(labels: &SliceLabels) -> Self {
        let mut counts = Box::new([0usize; 256]);
        // Slices never painted are all unlabelled.
        let mut painted = 0;
        for (_, p) in labels.painted() {
            painted += p.data.len();
            for &v in &p.data {
                counts[usize::from(v)] += 1;
            }
        }
        counts[0] += (labels.pixels() as usize).saturating_sub(painted);
        Self {
            rects: Default::default(),
            blocks: BTreeSet::new(),
            last_block: None,
            counts,
        }
    }

    /// The blocks changed since the last call (the next change of any block records it again).
    pub(crate) fn take_blocks(&mut self) -> BTreeSet<(usize, usize, usize)> {
        self.last_block = None;
        std::mem::take(&mut self.blocks)
    }

    /// Pixel `(x, y)` of `slice` changed from `before` to `after`.
    pub(crate) fn record(&mut self, slice: usize, x: usize, y: usize, before: u8, after: u8) {
        self.counts[usize::from(before)] -= 1;
        self.counts[usize::from(after)] += 1;
        let block = (slice, y / journal::BLOCK, x / journal::BLOCK);
        if self.last_block != Some(block) {
            self.blocks.insert(block);
            self.last_block = Some(block);
        }
        let r = self.rects.entry(slice).or_insert([x, y, x, y]);
        *r = [r[0].min(x), r[1].min(y), r[2].max(x), r[3].max(y)];
    }
}

/// What an autosave writes: the changed blocks, or (compaction) the whole label file.
#[derive(Debug)]
pub enum SaveWork {
    /// Append these blocks to the journal.
    Journal {
        /// The label file whose journal grows.
        label_path: PathBuf,
        /// (width, height, slices) of the stack.
        dims: (usize, usize, usize),
        /// The changed blocks.
        blocks: Vec<Block>,
    },
    /// Write the whole label file atomically, then remove the journal.
    Full {
        /// The label file.
        label_path: PathBuf,
        /// The labels of every slice.
        labels: SliceLabels,
    },
}

impl SaveWork {
    /// Does the work (in a background job).
    pub fn run(self) -> Result<Saved, DataError> {
        match self {
            Self::Journal {
                label_path,
                dims,
                blocks,
            } => {
                let bytes = journal::append(&label_path, dims, &blocks)?;
                Ok(Saved::Journal {
                    blocks: blocks.len(),
                    bytes,
                })
            }
            Self::Full { label_path, labels } => {
                write_label_file(&label_path, &labels)?;
                journal::remove(&label_path)?;
                Ok(Saved::Full(label_path))
            }
        }
    }
}

/// What a finished [`SaveWork`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Saved {
    /// Blocks appended; the journal's new size.
    Journal {
        /// Blocks written.
        blocks: usize,
        /// Journal size in bytes.
        bytes: u64,
    },
    /// The whole label file was written.
    Full(PathBuf),
}

/// Writes `labels` atomically to `path`: class ids, one page per slice (or a PNG per slice),
/// written page by page, so that unpainted slices cost a compressed empty page and no more
/// than one slice is held at a time. Returns the files written.
pub fn write_label_file(path: &Path, labels: &SliceLabels) -> Result<Vec<PathBuf>, DataError> {
    let Some(first) = labels.get(0) else {
        return write_mask(path, &[], MaskStyle::Classes);
    };
    let max = labels
        .painted()
        .flat_map(|(_, p)| p.data.iter().copied())
        .max()
        .unwrap_or(0);
    let dims = (first.width, first.height, labels.len());
    let mut out = MaskStream::create(
        path,
        dims,
        usize::from(max),
        MaskStyle::Classes,
        &TiffAxes::default(),
    )?;
    for plane in labels.iter() {
        out.push(&plane.map(u16::from))?;
    }
    let files = out.targets();
    commit(vec![out.finish()?])?;
    Ok(files)
}

/// Reads the stack's own label file (class ids, one page per slice) page by page into
/// `labels`, keeping the painted slices only: for a stack read on demand, whose labels of
/// every slice at once may not fit in memory.
pub(crate) fn read_own_labels(path: &Path, labels: &mut SliceLabels) -> Result<(), DataError> {
    let mut file = TiffSlices::open(path)?;
    let size = labels.get(0).map_or((0, 0), |p| (p.width, p.height));
    if file.slices() != labels.len() || file.channels != 1 || (file.width, file.height) != size {
        return Err(DataError::invalid(
            path,
            format!(
                "it has {} slice(s) of {}x{} with {} channel(s); the stack has {} slices of {}x{}",
                file.slices(),
                file.width,
                file.height,
                file.channels,
                labels.len(),
                size.0,
                size.1
            ),
        ));
    }
    for s in 0..labels.len() {
        let Some(plane) = file.slice(s)?.into_iter().next() else {
            continue;
        };
        if plane
            .data
            .iter()
            .any(|&v| v != v.round() || !(0.0..=255.0).contains(&v))
        {
            return Err(DataError::invalid(
                path,
                format!("slice {s} has values that are not class ids 0-255"),
            ));
        }
        labels.set(s, plane.map(|v| v as u8));
    }
    Ok(())
}

/// The label file of a stack: `<name>.labels.tif` beside the image file or inside the folder.
pub fn label_path_for(source: &Path) -> PathBuf {
    if source.is_dir() {
        source.join(crate::data::io::FOLDER_LABELS)
    } else {
        let stem = source
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        source.with_file_name(format!("{stem}.labels.tif"))
    }
}

/// Where the labels (and model versions, journal, settings) of `source` are kept: beside the
/// stack ([`label_path_for`]) when its folder is writable and `in_data_dir` is false;
/// otherwise in `data_dir/stacks/<name>-<hash of the stack's path>/`, with a note for the
/// user. Work saved earlier in either place is found again first. Without a data folder the
/// work stays beside the stack (saving then fails with a message naming the file).
pub fn work_label_path(
    source: &Path,
    data_dir: Option<&Path>,
    in_data_dir: bool,
) -> (PathBuf, Option<String>) {
    let beside = label_path_for(source);
    let Some(data) = data_dir else {
        return (beside, None);
    };
    let canonical = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
    let name = canonical
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "stack".into());
    let hash = crate::ml::checkpoint::fnv1a_hex([canonical.to_string_lossy().as_bytes()]);
    let kept = data.join("stacks").join(format!("{name}-{hash}"));
    let in_data = kept.join(crate::data::io::FOLDER_LABELS);
    let has_work = |p: &Path| p.exists() || journal::journal_path(p).exists();
    let folder = if source.is_dir() {
        source.to_path_buf()
    } else {
        source.parent().map_or_else(PathBuf::new, Path::to_path_buf)
    };
    // Saved work wins wherever it is, so that a stack always reopens with its own labels.
    let why = if has_work(&beside) {
        return (beside, None);
    } else if has_work(&in_data) {
        "saved there before".to_string()
    } else if in_data_dir {
        // Checked before probing the folder: nothing, not even a probe file, goes there.
        "the bundled sample stays as installed".to_string()
    } else if !folder_is_writable(&folder) {
        format!("{} is read-only", folder.display())
    } else {
        return (beside, None);
    };
    let note = format!(
        "labels and models of this stack are kept in {} ({why})",
        kept.display()
    );
    (in_data, Some(note))
}

/// Whether files can be created in `dir`: its permissions allow writing (even for root, who
/// could write anyway, a folder without write bits is treated as read-only) and a probe file
/// can be created and removed.
fn folder_is_writable(dir: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(dir) else {
        return false;
    };
    if meta.permissions().readonly() {
        return false;
    }
    let probe = dir.join(format!(".unet-studio-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => std::fs::remove_file(&probe).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Plane;

    /// The label file written page by page reads back page by page with the painted slices
    /// only; a file of another size or slice count is refused, naming it, not dropped.
    #[test]
    fn label_files_round_trip_page_by_page_and_other_sizes_are_refused() {
        let dir = std::env::temp_dir().join(format!("unet-work-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("l.tif");
        let mut labels = SliceLabels::new(12, 10, 4);
        labels.get_mut(2).unwrap().data[7] = 3;
        assert_eq!(
            write_label_file(&path, &labels).unwrap(),
            vec![path.clone()]
        );
        let mut back = SliceLabels::new(12, 10, 4);
        read_own_labels(&path, &mut back).unwrap();
        assert_eq!(back, labels);
        assert_eq!(back.painted().map(|(s, _)| s).collect::<Vec<_>>(), [2]);
        for (w, h, n) in [(10, 12, 4), (12, 10, 5)] {
            let mut other = SliceLabels::new(w, h, n);
            let e = read_own_labels(&path, &mut other).unwrap_err().to_string();
            assert!(e.contains("l.tif") && e.contains("12x10"), "{e}");
        }
        // Values that are no class ids.
        let bad = dir.join("bad.tif");
        crate::data::write_mask(&bad, &[Plane::filled(12, 10, 300u16)], MaskStyle::Classes)
            .unwrap();
        let e = read_own_labels(&bad, &mut SliceLabels::new(12, 10, 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not class ids"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
