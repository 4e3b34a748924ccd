//! Writing masks (PNG, multipage TIFF, coloured or 16-bit instances) and float maps, every file
//! atomically (written aside, then renamed).

use super::tiff::{encode_tiff_u16, imagej_description};
use crate::data::error::DataError;
use crate::data::plane::Plane;
use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use tiff::encoder::{TiffEncoder, colortype};
use tiff::tags::Tag;

/// Output file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// One PNG per slice.
    Png,
    /// One (multipage) TIFF.
    Tiff,
}

impl ImageFormat {
    /// The format implied by a path's ending; `None` for unknown endings.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("png") => Some(Self::Png),
            Some("tif" | "tiff") => Some(Self::Tiff),
            _ => None,
        }
    }
}

/// How class ids are written into a mask file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskStyle {
    /// The `classes` convention: 0 = unlabelled, k = class k (loads back as labels).
    Classes,
    /// 0 for class 1 (background), 255 for every other class.
    Binary,
    /// Object ids as they are, always 16-bit (what instance-label readers expect, whatever
    /// the largest id).
    Instances16,
}

/// Writes `data` to `path` atomically: a temporary file in the same folder, synced, then
/// renamed over the target, so readers never see a half-written file.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), DataError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    // Unique per call, so concurrent writers of one target never share a temporary file.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp{}-{n}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        DataError::io(path, e)
    })
}

/// The file names used for a stack written as PNGs: `path` itself for one slice, otherwise
/// `stem_0000.png`, `stem_0001.png`, ... beside it.
pub fn png_slice_paths(path: &Path, n: usize) -> Vec<PathBuf> {
    if n == 1 {
        return vec![path.to_path_buf()];
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "slice".into());
    let dir = path.parent().unwrap_or(Path::new(""));
    (0..n)
        .map(|i| dir.join(format!("{stem}_{i:04}.png")))
        .collect()
}

/// Writes class masks (`classes` values 0..=65535) as PNG (one file per slice) or as one
/// multipage TIFF with ImageJ metadata. 8-bit when every value fits, 16-bit otherwise.
/// Returns the files written.
pub fn write_mask(
    path: &Path,
    slices: &[Plane<u16>],
    style: MaskStyle,
) -> Result<Vec<PathBuf>, DataError> {
    write_mask_coloured(path, slices, style, &[])
}

/// [`write_mask`] with class colours: an 8-bit TIFF then carries an ImageJ colour table
/// (value 0 black, value k `colours[k - 1]`) so that Fiji shows the classes in colour.
pub fn write_mask_coloured(
    path: &Path,
    slices: &[Plane<u16>],
    style: MaskStyle,
    colours: &[[u8; 3]],
) -> Result<Vec<PathBuf>, DataError> {
    let format = ImageFormat::from_path(path).ok_or_else(|| {
        DataError::invalid(
            path,
            "unknown output format: use a .png, .tif or .tiff ending",
        )
    })?;
    if slices.is_empty() {
        return Err(DataError::invalid(path, "nothing to write: no slices"));
    }
    let styled: Vec<Plane<u16>> = slices
        .iter()
        .map(|p| match style {
            MaskStyle::Classes | MaskStyle::Instances16 => p.clone(),
            MaskStyle::Binary => p.map(|v| if v >= 2 { 255 } else { 0 }),
        })
        .collect();
    let max = styled
        .iter()
        .flat_map(|p| p.data.iter().copied())
        .max()
        .unwrap_or(0);
    let eight_bit = max <= 255 && style != MaskStyle::Instances16;
    match format {
        ImageFormat::Png => {
            let paths = png_slice_paths(path, styled.len());
            for (p, plane) in paths.iter().zip(&styled) {
                let bytes = encode_png(p, plane, eight_bit)?;
                write_atomic(p, &bytes)?;
            }
            Ok(paths)
        }
        ImageFormat::Tiff => {
            let lut =
                (eight_bit && style == MaskStyle::Classes && !colours.is_empty()).then(|| {
                    let mut lut = [[0u8; 256]; 3];
                    for (k, c) in colours.iter().take(255).enumerate() {
                        for ch in 0..3 {
                            lut[ch][k + 1] = c[ch];
                        }
                    }
                    lut
                });
            let bytes = encode_tiff_u16(path, &styled, eight_bit, max, lut)?;
            write_atomic(path, &bytes)?;
            Ok(vec![path.to_path_buf()])
        }
    }
}

fn encode_png(path: &Path, plane: &Plane<u16>, eight_bit: bool) -> Result<Vec<u8>, DataError> {
    use image::ImageEncoder as _;
    let mut out = Vec::new();
    let enc = image::codecs::png::PngEncoder::new(&mut out);
    let (w, h) = (plane.width as u32, plane.height as u32);
    let res = if eight_bit {
        let px: Vec<u8> = plane.data.iter().map(|&v| v as u8).collect();
        enc.write_image(&px, w, h, image::ExtendedColorType::L8)
    } else {
        let px: Vec<u8> = plane.data.iter().flat_map(|v| v.to_be_bytes()).collect();
        enc.write_image(&px, w, h, image::ExtendedColorType::L16)
    };
    res.map_err(|e| DataError::decode(path, format!("PNG encoding failed: {e}")))?;
    Ok(out)
}

/// Writes float planes as one multipage 32-bit float TIFF (probabilities, weight maps).
/// With `channels > 1` the pages are ordered slice-major, channel fastest, and tagged as an
/// ImageJ hyperstack.
pub fn write_f32_tiff(path: &Path, pages: &[Plane<f32>], channels: usize) -> Result<(), DataError> {
    if pages.is_empty() {
        return Err(DataError::invalid(path, "nothing to write: no slices"));
    }
    let channels = channels.max(1);
    let err = |e: tiff::TiffError| DataError::decode(path, format!("TIFF encoding failed: {e}"));
    let (lo, hi) = pages
        .iter()
        .flat_map(|p| p.data.iter().copied())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    let desc = imagej_description(
        pages.len() / channels,
        channels,
        Some((f64::from(lo), f64::from(hi))),
    );
    let mut cursor = Cursor::new(Vec::new());
    {
        let mut enc = TiffEncoder::new(&mut cursor).map_err(err)?;
        for plane in pages {
            let mut img = enc
                .new_image::<colortype::Gray32Float>(plane.width as u32, plane.height as u32)
                .map_err(err)?;
            img.encoder()
                .write_tag(Tag::ImageDescription, desc.as_str())
                .map_err(err)?;
            img.write_data(&plane.data).map_err(err)?;
        }
    }
    write_atomic(path, &cursor.into_inner())
}
