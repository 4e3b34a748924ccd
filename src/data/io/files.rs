//! Which files make a stack (a file, or a folder's images in natural order) and the size
//! limits every slice is checked against.

use std::fs;
use std::path::{Path, PathBuf};

use crate::data::error::DataError;

/// Largest slice the loaders accept: 16384 x 16384 pixels (1 GiB as `f32`).
pub const MAX_SLICE_PIXELS: usize = 16384 * 16384;

/// Largest edge the loaders accept.
pub const MAX_EDGE: usize = 65535;

/// Largest whole stack the loaders accept, in pixels (8 GiB as `f32`).
pub const MAX_STACK_PIXELS: usize = 1 << 31;

/// File endings read when a folder is opened as a stack.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "tif", "tiff", "jpg", "jpeg", "bmp"];

/// The label file the app keeps inside an image folder; never read as one of its images.
pub const FOLDER_LABELS: &str = "labels.unet.tif";

/// The files of the stack at `path`: the file itself, or a folder's images in natural order
/// (hidden files and the app's label file left out).
pub(crate) fn stack_files(path: &Path) -> Result<Vec<PathBuf>, DataError> {
    let meta = fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    Ok(if meta.is_dir() {
        let mut files: Vec<PathBuf> = fs::read_dir(path)
            .map_err(|e| DataError::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                // Hidden files (macOS `._name` metadata among them) are not slices.
                let hidden = p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                p.is_file()
                    && !hidden
                    && has_image_extension(p)
                    && p.file_name().is_none_or(|n| n != FOLDER_LABELS)
            })
            .collect();
        // Natural order, as Fiji's: s1, s2, s10.
        files.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
        if files.is_empty() {
            return Err(DataError::invalid(
                path,
                format!(
                    "the folder holds no images (looked for {})",
                    IMAGE_EXTENSIONS.join(", ")
                ),
            ));
        }
        files
    } else {
        vec![path.to_path_buf()]
    })
}

/// A path made absolute and, as far as it exists, free of `..` and links, for comparing
/// outputs with inputs.
pub fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = fs::canonicalize(path) {
        return p;
    }
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or(abs.clone()),
        _ => abs,
    }
}

/// Compares names with runs of digits taken as numbers (`s2` before `s10`); equal numbers
/// with different zero padding, and everything else, compare as text.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (mut x, mut y) = (a, b);
    loop {
        let (Some(cx), Some(cy)) = (x.chars().next(), y.chars().next()) else {
            return x.len().cmp(&y.len()).then_with(|| a.cmp(b));
        };
        if cx.is_ascii_digit() && cy.is_ascii_digit() {
            let dx = x.len() - x.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let dy = y.len() - y.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let (nx, ny) = (
                x[..dx].trim_start_matches('0'),
                y[..dy].trim_start_matches('0'),
            );
            let by_value = nx.len().cmp(&ny.len()).then_with(|| nx.cmp(ny));
            if by_value != Ordering::Equal {
                return by_value;
            }
            x = &x[dx..];
            y = &y[dy..];
        } else {
            if cx != cy {
                return cx.cmp(&cy);
            }
            x = &x[cx.len_utf8()..];
            y = &y[cy.len_utf8()..];
        }
    }
}

pub(crate) fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

pub(crate) fn check_size(path: &Path, width: usize, height: usize) -> Result<(), DataError> {
    if width == 0 || height == 0 {
        return Err(DataError::invalid(
            path,
            format!("the image is {width}x{height}: it has no pixels"),
        ));
    }
    if width > MAX_EDGE || height > MAX_EDGE || width * height > MAX_SLICE_PIXELS {
        return Err(DataError::invalid(
            path,
            format!(
                "the image is {width}x{height}; the largest slice supported is {MAX_SLICE_PIXELS} pixels with edges up to {MAX_EDGE}"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::io::read::load_stack;

    #[test]
    fn names_sort_in_natural_order() {
        let mut names = vec![
            "s10.png", "s2.png", "s1.png", "s02b.png", "a.png", "s002.png",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            [
                "a.png", "s1.png", "s002.png", "s2.png", "s02b.png", "s10.png"
            ]
        );
    }

    #[test]
    fn a_folder_reads_in_natural_order_without_hidden_files() {
        let dir = std::env::temp_dir().join(format!("unet-io-natural-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        for (name, v) in [
            ("s1.png", 10u8),
            ("s10.png", 30),
            ("s2.png", 20),
            ("._s3.png", 99),
        ] {
            image::GrayImage::from_pixel(2, 2, image::Luma([v]))
                .save_with_format(dir.join(name), image::ImageFormat::Png)
                .unwrap();
        }
        let stack = load_stack(&dir).unwrap();
        let firsts: Vec<f32> = stack
            .all_planes()
            .unwrap()
            .iter()
            .map(|s| s.data[0])
            .collect();
        assert_eq!(firsts, [10.0, 20.0, 30.0]);
        assert!(stack.sources.iter().all(|p| !p.ends_with("._s3.png")));
    }
}
