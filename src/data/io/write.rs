//! Writing masks (PNG, multipage TIFF, coloured or 16-bit instances) and float maps, every file
//! atomically (written aside, then renamed).

use super::tiff::{TiffAxes, encode_tiff_u16, imagej_description, needs_bigtiff, write_resolution};
use crate::data::error::DataError;
use crate::data::plane::Plane;
use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use tiff::encoder::{TiffEncoder, TiffKind, TiffKindBig, TiffKindStandard, colortype};
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
    write_all_atomic(&[(path.to_path_buf(), data.to_vec())])
}

/// Writes several files all or nothing: every file is written and synced under a temporary
/// name beside its target first, then all are renamed into place; if any write fails, the
/// temporaries are removed and no target is touched. Stale temporaries of processes that no
/// longer run (a kill during an earlier write) are removed on the way.
pub fn write_all_atomic(files: &[(PathBuf, Vec<u8>)]) -> Result<(), DataError> {
    let mut temps: Vec<PathBuf> = Vec::with_capacity(files.len());
    let cleanup = |temps: &[PathBuf]| {
        for t in temps {
            let _ = fs::remove_file(t);
        }
    };
    for (path, data) in files {
        let tmp = match temp_for(path) {
            Ok(t) => t,
            Err(e) => {
                cleanup(&temps);
                return Err(e);
            }
        };
        temps.push(tmp.clone());
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            cleanup(&temps);
            return Err(DataError::io(path, e));
        }
    }
    for (i, ((path, _), tmp)) in files.iter().zip(&temps).enumerate() {
        if let Err(e) = fs::rename(tmp, path) {
            cleanup(&temps[i..]);
            return Err(DataError::io(path, e));
        }
    }
    Ok(())
}

/// A temporary name beside `target` (`.{name}.tmp<pid>-<n>`, unique per call, so concurrent
/// writers of one target never share one), its folder created; stale temporaries of dead
/// processes are removed on the way. A target that is a folder is refused.
pub(crate) fn temp_for(target: &Path) -> Result<PathBuf, DataError> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if target.is_dir() {
        return Err(DataError::invalid(
            target,
            "is a folder; cannot write a file there",
        ));
    }
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
    remove_stale_temps(&dir, &name);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(dir.join(format!(".{name}.tmp{}-{n}", std::process::id())))
}

/// Removes `.{name}.tmp<pid>-<n>` files in `dir` whose process no longer runs (Linux: no
/// `/proc/<pid>`; elsewhere nothing is removed), the first time this process writes there.
fn remove_stale_temps(dir: &Path, name: &str) {
    // Once per target and process: autosaves write the same files again and again.
    static DONE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    {
        let mut done = DONE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let target = dir.join(name);
        if done.contains(&target) {
            return;
        }
        done.push(target);
    }
    if !Path::new("/proc/self").exists() {
        return;
    }
    let prefix = format!(".{name}.tmp");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = fs::remove_file(entry.path());
        }
    }
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
    write_mask_coloured(path, slices, style, &[], &TiffAxes::default())
}

/// [`write_mask`] with class colours and the stack's axes: an 8-bit TIFF then carries an
/// ImageJ colour table (value 0 black, value k `colours[k - 1]`) so that Fiji shows the
/// classes in colour, and a TIFF keeps the time axis and pixel size of `axes`.
pub fn write_mask_coloured(
    path: &Path,
    slices: &[Plane<u16>],
    style: MaskStyle,
    colours: &[[u8; 3]],
    axes: &TiffAxes,
) -> Result<Vec<PathBuf>, DataError> {
    let files = encode_mask(path, slices, style, colours, axes)?;
    write_outputs(path, &files)?;
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

/// Writes encoded outputs all or nothing (see [`write_all_atomic`]); when `mask` is a PNG
/// stack, the slices of an earlier, longer export beside it are removed.
pub fn write_outputs(mask: &Path, files: &[(PathBuf, Vec<u8>)]) -> Result<(), DataError> {
    write_all_atomic(files)?;
    if ImageFormat::from_path(mask) == Some(ImageFormat::Png) {
        let slices = files
            .iter()
            .filter(|(p, _)| ImageFormat::from_path(p) == Some(ImageFormat::Png))
            .count();
        remove_stale_slices(mask, slices);
    }
    Ok(())
}

/// The files [`write_mask_coloured`] writes, encoded: one PNG per slice, or one TIFF.
pub fn encode_mask(
    path: &Path,
    slices: &[Plane<u16>],
    style: MaskStyle,
    colours: &[[u8; 3]],
    axes: &TiffAxes,
) -> Result<Vec<(PathBuf, Vec<u8>)>, DataError> {
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
            paths
                .iter()
                .zip(&styled)
                .map(|(p, plane)| Ok((p.clone(), encode_png(p, plane, eight_bit)?)))
                .collect::<Result<Vec<_>, DataError>>()
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
            let pixels = styled.iter().map(|p| p.data.len()).sum();
            let big = needs_bigtiff(pixels, if eight_bit { 1 } else { 2 });
            let bytes = encode_tiff_u16(path, &styled, eight_bit, max, lut, axes, big)?;
            Ok(vec![(path.to_path_buf(), bytes)])
        }
    }
}

/// Removes `stem_NNNN.png` beside `path` numbered `n` or more: slices of an earlier, longer
/// export that would otherwise be read as part of this one.
pub(crate) fn remove_stale_slices(path: &Path, n: usize) {
    if n < 2 {
        return;
    }
    let Some(stem) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
        return;
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let index = file
            .strip_prefix(&format!("{stem}_"))
            .and_then(|r| r.strip_suffix(".png"))
            .filter(|r| r.len() == 4)
            .and_then(|r| r.parse::<usize>().ok());
        if index.is_some_and(|i| i >= n) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

pub(crate) fn encode_png(
    path: &Path,
    plane: &Plane<u16>,
    eight_bit: bool,
) -> Result<Vec<u8>, DataError> {
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
/// ImageJ hyperstack; `axes` gives time points and the pixel size.
pub fn write_f32_tiff(
    path: &Path,
    pages: &[Plane<f32>],
    channels: usize,
    axes: &TiffAxes,
) -> Result<(), DataError> {
    write_atomic(path, &encode_f32_tiff(path, pages, channels, axes)?)
}

/// The bytes [`write_f32_tiff`] writes.
pub fn encode_f32_tiff(
    path: &Path,
    pages: &[Plane<f32>],
    channels: usize,
    axes: &TiffAxes,
) -> Result<Vec<u8>, DataError> {
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
        axes,
    );
    let mut cursor = Cursor::new(Vec::new());
    let pixels = pages.iter().map(|p| p.data.len()).sum();
    if needs_bigtiff(pixels, 4) {
        f32_pages::<TiffKindBig>(&mut cursor, pages, &desc, axes).map_err(err)?;
    } else {
        f32_pages::<TiffKindStandard>(&mut cursor, pages, &desc, axes).map_err(err)?;
    }
    Ok(cursor.into_inner())
}

/// Writes float pages with their description and resolution into `cursor`.
fn f32_pages<K: TiffKind>(
    cursor: &mut Cursor<Vec<u8>>,
    pages: &[Plane<f32>],
    desc: &str,
    axes: &TiffAxes,
) -> Result<(), tiff::TiffError> {
    let mut enc = TiffEncoder::<_, K>::new_generic(cursor)?;
    for plane in pages {
        let mut img =
            enc.new_image::<colortype::Gray32Float>(plane.width as u32, plane.height as u32)?;
        img.encoder().write_tag(Tag::ImageDescription, desc)?;
        write_resolution(img.encoder(), axes)?;
        img.write_data(&plane.data)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mask and its probabilities are written together or not at all; a shorter PNG stack
    /// removes the extra slices of an earlier one only once written.
    #[test]
    fn outputs_of_one_run_are_all_or_nothing() {
        let d = tmp("outputs");
        let slice = |v: u16| Plane::filled(4, 3, v);
        let mask = d.join("m.png");
        write_mask(&mask, &[slice(1), slice(1), slice(1)], MaskStyle::Classes).unwrap();
        let before = listing(&d);
        assert_eq!(before, ["m_0000.png", "m_0001.png", "m_0002.png"]);
        let mut files = encode_mask(
            &mask,
            &[slice(2), slice(2)],
            MaskStyle::Classes,
            &[],
            &TiffAxes::default(),
        )
        .unwrap();
        // The probabilities' folder is a file: nothing is written, nothing removed.
        fs::write(d.join("blocker"), b"x").unwrap();
        let probs = encode_f32_tiff(
            &d.join("p.tif"),
            &[Plane::filled(4, 3, 0.5)],
            1,
            &TiffAxes::default(),
        )
        .unwrap();
        files.push((d.join("blocker/p.tif"), probs.clone()));
        assert!(write_outputs(&mask, &files).is_err());
        assert_eq!(
            listing(&d),
            ["blocker", "m_0000.png", "m_0001.png", "m_0002.png"]
        );
        assert_eq!(
            crate::data::load_label_stack(&d.join("m_0000.png")).unwrap()[0].data[0],
            1
        );
        // Written: both files, and the third slice of before is gone.
        files.pop();
        files.push((d.join("p.tif"), probs));
        write_outputs(&mask, &files).unwrap();
        assert_eq!(
            listing(&d),
            ["blocker", "m_0000.png", "m_0001.png", "p.tif"]
        );
        assert_eq!(
            crate::data::load_label_stack(&d.join("m_0001.png")).unwrap()[0].data[0],
            2
        );
    }

    /// Exports past 4 GiB are BigTIFF: the same pages, forced big, read back with their
    /// values, channels and scale.
    #[test]
    fn bigtiff_pages_read_back() {
        let axes = TiffAxes {
            frames: 2,
            pixel_size: Some(crate::data::PixelSize {
                x: 0.5,
                y: 0.5,
                z: None,
                unit: "nm".into(),
            }),
        };
        let masks: Vec<Plane<u16>> = (0..4).map(|i| Plane::filled(3, 2, 300 + i)).collect();
        let path = Path::new("big.tif");
        let bytes = encode_tiff_u16(path, &masks, false, 303, None, &axes, true).unwrap();
        assert!(bytes.starts_with(b"II+\0"), "BigTIFF magic");
        let back = crate::data::io::read::decode_stack_bytes(path, &bytes).unwrap();
        assert_eq!(
            (back.frames, back.depth(), back.image(3).unwrap()[0].data[0]),
            (2, 2, 303.0)
        );
        assert_eq!(back.pixel_size, axes.pixel_size);
        let floats: Vec<Plane<f32>> = (0..4).map(|i| Plane::filled(3, 2, i as f32)).collect();
        let mut cursor = Cursor::new(Vec::new());
        let desc = imagej_description(2, 2, None, &TiffAxes::default());
        f32_pages::<TiffKindBig>(&mut cursor, &floats, &desc, &TiffAxes::default()).unwrap();
        let bytes = cursor.into_inner();
        assert!(bytes.starts_with(b"II+\0"));
        let back = crate::data::io::read::decode_stack_bytes(path, &bytes).unwrap();
        assert_eq!(
            (
                back.channels,
                back.slices(),
                back.image(1).unwrap()[0].data[0]
            ),
            (2, 2, 2.0)
        );
        assert!(!needs_bigtiff(1 << 20, 4) && needs_bigtiff(1 << 30, 4));
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("unet-write-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn listing(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_png_stack_is_written_all_or_nothing() {
        let d = tmp("all-or-nothing");
        let slices = vec![Plane::filled(8, 4, 1u16); 4];
        // The third slice's name is taken by a folder: nothing may be written.
        fs::create_dir_all(d.join("m_0002.png/inside")).unwrap();
        let e = write_mask(&d.join("m.png"), &slices, MaskStyle::Classes).unwrap_err();
        assert!(e.to_string().contains("m_0002.png"), "{e}");
        assert_eq!(
            listing(&d),
            ["m_0002.png"],
            "no slice and no temporary file left"
        );
        fs::remove_dir_all(d.join("m_0002.png")).unwrap();
        // A shorter export over a longer one leaves none of the old slices.
        write_mask(&d.join("m.png"), &slices, MaskStyle::Classes).unwrap();
        write_mask(&d.join("m.png"), &slices[..2], MaskStyle::Classes).unwrap();
        assert_eq!(listing(&d), ["m_0000.png", "m_0001.png"]);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn temporaries_of_dead_processes_are_removed_on_the_next_write() {
        let d = tmp("stale");
        // No process has this id (Linux caps ids at 2^22).
        let stale = d.join(".model.unet.tmp4999999-0");
        let own = d.join(format!(".model.unet.tmp{}-77", std::process::id()));
        let other = d.join(".other.tif.tmp4999999-0");
        for f in [&stale, &own, &other] {
            fs::write(f, b"partial").unwrap();
        }
        write_atomic(&d.join("model.unet"), b"weights").unwrap();
        assert!(
            !stale.exists(),
            "a dead process's temporary of this file is removed"
        );
        assert!(own.exists(), "this process's are not");
        assert!(other.exists(), "nor another file's");
        assert_eq!(fs::read(d.join("model.unet")).unwrap(), b"weights");
        let _ = fs::remove_dir_all(&d);
    }
}
