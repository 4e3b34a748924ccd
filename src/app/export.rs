//! Export from the app: predicted masks (PNG per slice or multipage TIFF, class ids or 0/255),
//! instance labels, probabilities and the painted labels. Files are written in a background
//! job, atomically, and a summary of what was written is shown.
//!
//! This file holds what an export writes; starting it and taking its result are in
//! `actions/export.rs`.

use crate::data::{DataError, MaskStyle, Plane, TiffAxes, write_f32_tiff, write_mask_coloured};
use crate::metrics::regions;
use crate::postprocess::Decision;
use std::path::{Path, PathBuf};

/// What to export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportKind {
    /// Argmax masks in the `classes` convention (load back as labels).
    MaskClasses,
    /// Argmax masks as 0 (class 1) / 255 (other classes), visible in any viewer.
    MaskBinary,
    /// Connected components of every non-background predicted pixel, 16-bit ids
    /// (for CellProfiler or QuPath).
    Instances,
    /// Class probabilities as 32-bit float TIFF (slice-major, class fastest).
    Probabilities,
    /// The painted labels (`classes` convention).
    Labels,
}

impl ExportKind {
    /// Every kind, in menu order.
    pub const ALL: [ExportKind; 5] = [
        Self::MaskClasses,
        Self::MaskBinary,
        Self::Instances,
        Self::Probabilities,
        Self::Labels,
    ];

    /// Menu text.
    pub fn label(self) -> &'static str {
        match self {
            Self::MaskClasses => "Predicted masks (class ids)…",
            Self::MaskBinary => "Predicted masks (0/255)…",
            Self::Instances => "Instance labels (16-bit)…",
            Self::Probabilities => "Probabilities (float TIFF)…",
            Self::Labels => "Painted labels…",
        }
    }

    /// Whether the export needs a prediction of every slice.
    pub fn needs_prediction(self) -> bool {
        !matches!(self, Self::Labels)
    }

    /// Default file name.
    pub fn default_name(self) -> &'static str {
        match self {
            Self::MaskClasses => "masks.tif",
            Self::MaskBinary => "masks_0-255.tif",
            Self::Instances => "instances.tif",
            Self::Probabilities => "probabilities.tif",
            Self::Labels => "labels.tif",
        }
    }
}

/// Writes the export; returns the files written and a one-line summary.
pub(crate) fn write_export(
    kind: ExportKind,
    path: &Path,
    probs: &[Vec<Plane<f32>>],
    decision: Decision,
    labels: &crate::data::SliceLabels,
    colours: &[[u8; 3]],
    axes: &TiffAxes,
) -> Result<(Vec<PathBuf>, String), DataError> {
    match kind {
        ExportKind::MaskClasses | ExportKind::MaskBinary => {
            let masks: Vec<Plane<u16>> = probs.iter().map(|p| decision.classes(p)).collect();
            let style = if kind == ExportKind::MaskBinary {
                MaskStyle::Binary
            } else {
                MaskStyle::Classes
            };
            let files = write_mask_coloured(path, &masks, style, colours, axes)?;
            Ok((files, format!("{} mask slices", masks.len())))
        }
        ExportKind::Instances => {
            let mut total = 0usize;
            let planes: Vec<Plane<u16>> = probs
                .iter()
                .map(|p| {
                    let m = decision.classes(p);
                    let ids = regions(m.width, m.height, |i| m.data[i] >= 2);
                    total += ids.iter().copied().max().unwrap_or(0) as usize;
                    Plane {
                        width: m.width,
                        height: m.height,
                        data: ids
                            .iter()
                            .map(|&v| v.min(u32::from(u16::MAX)) as u16)
                            .collect(),
                    }
                })
                .collect();
            let files = write_mask_coloured(path, &planes, MaskStyle::Instances16, &[], axes)?;
            Ok((files, format!("{total} objects in {} slices", planes.len())))
        }
        ExportKind::Probabilities => {
            let classes = probs.first().map_or(1, Vec::len);
            let pages: Vec<Plane<f32>> = probs.iter().flatten().cloned().collect();
            write_f32_tiff(path, &pages, classes, axes)?;
            Ok((
                vec![path.to_path_buf()],
                format!("{} slices x {classes} classes", probs.len()),
            ))
        }
        ExportKind::Labels => {
            let planes: Vec<Plane<u16>> = labels.iter().map(|p| p.map(u16::from)).collect();
            let files = write_mask_coloured(path, &planes, MaskStyle::Classes, colours, axes)?;
            Ok((files, format!("{} label slices", planes.len())))
        }
    }
}

/// The files an export wrote, short enough for the status bar: the path of one file, or the
/// count, the folder and the first and last names of several.
pub fn written(files: &[std::path::PathBuf]) -> String {
    let name = |p: &std::path::Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    match files {
        [] => "no file".into(),
        [one] => one.display().to_string(),
        [first, .., last] => format!(
            "{} files in {}: {} … {}",
            files.len(),
            first
                .parent()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            name(first),
            name(last)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    pub(crate) fn written_files_are_summed_up() {
        let f = |n: &str| PathBuf::from("/data/out").join(n);
        assert_eq!(written(&[]), "no file");
        assert_eq!(written(&[f("m.tif")]), "/data/out/m.tif");
        let many: Vec<PathBuf> = (0..30).map(|i| f(&format!("m_{i:04}.png"))).collect();
        assert_eq!(
            written(&many),
            "30 files in /data/out: m_0000.png … m_0029.png"
        );
    }
}
