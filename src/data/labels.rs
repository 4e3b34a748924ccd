//! Label encodings: how the integers of a label image become classes and objects.

use std::str::FromStr;

use image::{ImageBuffer, Luma};
use imageproc::region_labelling::{Connectivity, connected_components};

use crate::data::plane::Plane;

/// The number of classes `labels` use: the largest class id, at least 2.
pub fn class_count(labels: &[LabelSlice]) -> usize {
    labels
        .iter()
        .map(|l| l.max_class() as usize)
        .max()
        .unwrap_or(0)
        .max(2)
}

/// How the integers of a label image are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum LabelEncoding {
    /// 0 = unlabelled (ignored by the loss), k >= 1 = class k. Class 1 is the background;
    /// objects for the weight map are the 4-connected components of each class >= 2.
    #[default]
    Classes,
    /// 0 -> class 1 (background), non-zero -> class 2 (foreground); every pixel is labelled.
    /// Objects are the 4-connected components of the foreground.
    Binary,
    /// 0 -> class 1, each distinct non-zero id is one object of class 2. Where two objects
    /// touch, the pixels of the smaller id that touch a larger id (8-neighbourhood) become
    /// background: the thin separating line of the paper's Fig. 3c.
    Instances,
}

impl FromStr for LabelEncoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "classes" => Ok(Self::Classes),
            "binary" => Ok(Self::Binary),
            "instances" => Ok(Self::Instances),
            other => Err(format!(
                "unknown label encoding '{other}': use classes, binary or instances"
            )),
        }
    }
}

impl std::fmt::Display for LabelEncoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Classes => "classes",
            Self::Binary => "binary",
            Self::Instances => "instances",
        })
    }
}

/// One slice of labels as training sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelSlice {
    /// 0 = unlabelled, k >= 1 = class k (class 1 = background).
    pub classes: Plane<u8>,
    /// 0 = no object, i >= 1 = object i (for the weight map's d1/d2).
    pub objects: Plane<u32>,
}

impl LabelSlice {
    /// Number of labelled pixels.
    pub fn labelled_count(&self) -> usize {
        self.classes.data.iter().filter(|&&c| c > 0).count()
    }

    /// The largest class id present (0 when nothing is labelled).
    pub fn max_class(&self) -> u8 {
        self.classes.data.iter().copied().max().unwrap_or(0)
    }
}

/// Why a label image cannot be encoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LabelError {
    /// A value too large for the `classes` encoding.
    #[error(
        "label value {value} at x={x}, y={y} is not a class id (1..=255); instance masks need --label-encoding instances"
    )]
    ClassTooLarge {
        /// The value found.
        value: u32,
        /// Column.
        x: usize,
        /// Row.
        y: usize,
    },
}

/// Encodes raw label values with `encoding`.
pub fn encode_labels(raw: &Plane<u32>, encoding: LabelEncoding) -> Result<LabelSlice, LabelError> {
    let (w, h) = (raw.width, raw.height);
    match encoding {
        LabelEncoding::Classes => {
            if let Some(pos) = raw.data.iter().position(|&v| v > 255) {
                return Err(LabelError::ClassTooLarge {
                    value: raw.data[pos],
                    x: pos % w,
                    y: pos / w,
                });
            }
            let classes = raw.map(|v| v as u8);
            let objects = components_of_foreground(&classes);
            Ok(LabelSlice { classes, objects })
        }
        LabelEncoding::Binary => {
            let classes = raw.map(|v| if v == 0 { 1 } else { 2 });
            let objects = components_of_foreground(&classes);
            Ok(LabelSlice { classes, objects })
        }
        LabelEncoding::Instances => {
            let mut objects = raw.clone();
            for y in 0..h {
                for x in 0..w {
                    let id = raw.at(x, y);
                    if id == 0 {
                        continue;
                    }
                    let touches_larger = neighbours8(x, y, w, h).any(|(nx, ny)| {
                        let other = raw.at(nx, ny);
                        other != 0 && other > id
                    });
                    if touches_larger {
                        objects.set(x, y, 0);
                    }
                }
            }
            let classes = objects.map(|v| if v == 0 { 1 } else { 2 });
            Ok(LabelSlice { classes, objects })
        }
    }
}

/// The in-bounds 8-neighbours of `(x, y)`.
pub fn neighbours8(x: usize, y: usize, w: usize, h: usize) -> impl Iterator<Item = (usize, usize)> {
    const D: [(isize, isize); 8] = [
        (-1, -1),
        (0, -1),
        (1, -1),
        (-1, 0),
        (1, 0),
        (-1, 1),
        (0, 1),
        (1, 1),
    ];
    D.iter().filter_map(move |&(dx, dy)| {
        let nx = x as isize + dx;
        let ny = y as isize + dy;
        (nx >= 0 && ny >= 0 && (nx as usize) < w && (ny as usize) < h)
            .then_some((nx as usize, ny as usize))
    })
}

/// 4-connected components of the pixels of each class >= 2 (pixels of different classes are
/// never joined). Returns 0 for background/unlabelled pixels and ids 1..=n otherwise.
fn components_of_foreground(classes: &Plane<u8>) -> Plane<u32> {
    // imageproc's labelling panics on a 1x1 image; one pixel is its own component.
    if let [c] = classes.data[..] {
        return Plane::filled(classes.width, classes.height, u32::from(c >= 2));
    }
    let fg: ImageBuffer<Luma<u8>, Vec<u8>> =
        ImageBuffer::from_fn(classes.width as u32, classes.height as u32, |x, y| {
            let c = classes.at(x as usize, y as usize);
            Luma([if c >= 2 { c } else { 0 }])
        });
    let cc = connected_components(&fg, Connectivity::Four, Luma([0u8]));
    Plane {
        width: classes.width,
        height: classes.height,
        data: cc.into_raw(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(w: usize, rows: &[u32]) -> Plane<u32> {
        Plane::from_vec(w, rows.len() / w, rows.to_vec()).unwrap()
    }

    #[test]
    fn a_one_pixel_label_image_is_one_object_or_none() {
        // imageproc's labelling panicked on 1x1 images (train, weights and eval did).
        for (v, objects) in [(255u32, 1u32), (0, 0)] {
            let l = encode_labels(&plane(1, &[v]), LabelEncoding::Binary).unwrap();
            assert_eq!(l.objects.data, vec![objects]);
        }
    }

    #[test]
    fn classes_keep_zero_unlabelled_and_split_components() {
        let raw = plane(5, &[0, 2, 1, 2, 2, 0, 2, 1, 1, 1, 3, 3, 1, 2, 2]);
        let s = encode_labels(&raw, LabelEncoding::Classes).unwrap();
        assert_eq!(s.classes.data[0], 0);
        assert_eq!(s.labelled_count(), 13);
        // Column 1 rows 0-1 is one object; (3..4, 0) another; the 3s a third; (3..4,2) fourth.
        let o = &s.objects;
        assert_eq!(o.at(1, 0), o.at(1, 1));
        assert_ne!(o.at(1, 0), 0);
        assert_ne!(o.at(1, 0), o.at(3, 0));
        assert_eq!(o.at(3, 0), o.at(4, 0));
        assert_eq!(o.at(0, 2), o.at(1, 2));
        assert_ne!(o.at(0, 2), o.at(3, 2));
        assert_eq!(o.at(2, 0), 0);
        let mut ids: Vec<u32> = o.data.iter().copied().filter(|&v| v > 0).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 4);
    }

    #[test]
    fn binary_labels_everything() {
        let raw = plane(3, &[0, 255, 0, 0, 255, 0]);
        let s = encode_labels(&raw, LabelEncoding::Binary).unwrap();
        assert_eq!(s.classes.data, vec![1, 2, 1, 1, 2, 1]);
        assert_eq!(s.labelled_count(), 6);
        assert_eq!(s.objects.data, vec![0, 1, 0, 0, 1, 0]);
    }

    #[test]
    fn touching_instances_get_a_separating_line() {
        let raw = plane(4, &[5, 5, 7, 7, 5, 5, 7, 7]);
        let s = encode_labels(&raw, LabelEncoding::Instances).unwrap();
        assert_eq!(s.classes.data, vec![2, 1, 2, 2, 2, 1, 2, 2]);
        assert_eq!(s.objects.data, vec![5, 0, 7, 7, 5, 0, 7, 7]);
    }

    #[test]
    fn class_ids_above_255_are_rejected() {
        let raw = plane(2, &[1, 300]);
        let err = encode_labels(&raw, LabelEncoding::Classes).unwrap_err();
        assert_eq!(
            err,
            LabelError::ClassTooLarge {
                value: 300,
                x: 1,
                y: 0
            }
        );
        assert!("bogus".parse::<LabelEncoding>().is_err());
        assert_eq!("Binary".parse::<LabelEncoding>(), Ok(LabelEncoding::Binary));
    }
}
