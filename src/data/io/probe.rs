//! What a stack will cost before it is decoded: its size from the files' headers only
//! ([`probe_stack`]), and the check that a task's memory fits what the machine has
//! ([`check_memory`]). A 2 MB compressed TIFF can hold pages of 16384 x 16384 pixels; decoded
//! and turned into `f32` they take gigabytes, so the loaders and the commands ask first.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use tiff::decoder::Decoder as TiffDecoder;

use crate::data::error::DataError;
use crate::data::io::files::check_size;

/// Size of a stack read from its headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackInfo {
    /// Pixels of all slices together.
    pub pixels: usize,
    /// Slices (TIFF pages and files).
    pub slices: usize,
    /// Bytes of the largest decoded pixel (all its channels) of any slice.
    pub pixel_bytes: usize,
}

/// The sizes of the slices in `bytes` (one file) from its headers: `(pixels, bytes per
/// decoded pixel)` per slice.
pub(crate) fn probe_bytes(path: &Path, bytes: &[u8]) -> Result<Vec<(usize, usize)>, DataError> {
    if is_tiff(bytes) {
        return probe_tiff(path, Cursor::new(bytes));
    }
    probe_image(path, image_reader(path, bytes)?)
}

/// [`probe_bytes`] of a file, reading only its headers (a stack may be larger than memory).
fn probe_file(path: &Path) -> Result<Vec<(usize, usize)>, DataError> {
    use std::io::{Read as _, Seek as _};
    let io = |e| DataError::io(path, e);
    let mut file = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
    let mut head = Vec::with_capacity(24);
    (&mut file).take(24).read_to_end(&mut head).map_err(io)?;
    file.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
    if is_tiff(&head) {
        return probe_tiff(path, file);
    }
    check_png_header(path, &head)?;
    let reader = image::ImageReader::new(file)
        .with_guessed_format()
        .map_err(|e| DataError::decode(path, e))?;
    if reader.format().is_none() {
        return Err(unknown_format(path));
    }
    probe_image(path, reader)
}

/// Whether the bytes start like a TIFF: classic or BigTIFF, little- or big-endian.
pub(crate) fn is_tiff(head: &[u8]) -> bool {
    [b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"]
        .iter()
        .any(|m| head.starts_with(*m))
}

/// The size and decoded pixel size of a PNG, JPEG or BMP from its header.
fn probe_image<R: std::io::BufRead + std::io::Seek>(
    path: &Path,
    reader: image::ImageReader<R>,
) -> Result<Vec<(usize, usize)>, DataError> {
    let decoder = reader
        .into_decoder()
        .map_err(|e| DataError::decode(path, format!("cannot read the header: {e}")))?;
    use image::ImageDecoder as _;
    let (w, h) = decoder.dimensions();
    check_size(path, w as usize, h as usize)?;
    let pixel = usize::from(decoder.color_type().bytes_per_pixel());
    Ok(vec![((w as usize) * (h as usize), pixel)])
}

/// A PNG's header size, checked before a decoder looks for image data.
fn check_png_header(path: &Path, head: &[u8]) -> Result<(), DataError> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") && head.len() >= 24 {
        let be = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        check_size(path, be(16) as usize, be(20) as usize)?;
    }
    Ok(())
}

fn unknown_format(path: &Path) -> DataError {
    DataError::decode(
        path,
        "unknown image format (PNG, JPEG, BMP and TIFF are supported)",
    )
}

/// A reader of a PNG, JPEG or BMP file whose format is known: a PNG's header size is checked
/// before the decoder looks for image data, and a JPEG cut short (which decodes with its
/// missing rows filled in grey) is refused.
pub(crate) fn image_reader<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<image::ImageReader<Cursor<&'a [u8]>>, DataError> {
    if bytes.starts_with(&[0xFF, 0xD8]) && !bytes.windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err(DataError::decode(
            path,
            "the JPEG is truncated (it has no end-of-image marker)",
        ));
    }
    check_png_header(path, bytes)?;
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::decode(path, e))?;
    if reader.format().is_none() {
        return Err(unknown_format(path));
    }
    Ok(reader)
}

/// A TIFF decoder's error as a message: a file that ends too early says it is truncated
/// (the decoder says "failed to fill whole buffer").
pub(crate) fn tiff_error(path: &Path, what: &str, e: tiff::TiffError) -> DataError {
    let truncated = matches!(&e, tiff::TiffError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof);
    if truncated {
        DataError::decode(path, format!("{what}: the file is truncated"))
    } else {
        DataError::decode(path, format!("{what}: {e}"))
    }
}

fn probe_tiff<R: std::io::Read + std::io::Seek>(
    path: &Path,
    source: R,
) -> Result<Vec<(usize, usize)>, DataError> {
    let mut dec =
        TiffDecoder::new(source).map_err(|e| tiff_error(path, "not a readable TIFF", e))?;
    let mut out = Vec::new();
    loop {
        let page = out.len();
        let ctx = |e: tiff::TiffError| tiff_error(path, &format!("page {page}"), e);
        let (w, h) = dec.dimensions().map_err(ctx)?;
        check_size(path, w as usize, h as usize)?;
        let color = dec.colortype().map_err(ctx)?;
        let pixel = (usize::from(color.bit_depth()) * color.num_samples() as usize).div_ceil(8);
        out.push(((w as usize) * (h as usize), pixel.max(1)));
        if !dec.more_images() {
            break;
        }
        dec.next_image()
            .map_err(|e| tiff_error(path, &format!("page {}", out.len()), e))?;
    }
    Ok(out)
}

/// The size of the stack at `path` (a file or a folder of slices, as the loaders read it),
/// from headers only: the files are not read whole.
pub fn probe_stack(path: &Path) -> Result<StackInfo, DataError> {
    let files: Vec<PathBuf> = super::files::stack_files(path)?;
    let mut info = StackInfo {
        pixels: 0,
        slices: 0,
        pixel_bytes: 1,
    };
    for file in &files {
        for (pixels, pixel) in probe_file(file)? {
            info.pixels = info.pixels.saturating_add(pixels);
            info.slices += 1;
            info.pixel_bytes = info.pixel_bytes.max(pixel);
        }
    }
    Ok(info)
}

/// Memory this process may use, in bytes: `UNET_STUDIO_MEMORY_LIMIT` when set (bytes), else
/// what the system has available (`MemAvailable` of `/proc/meminfo` on Linux), and no more
/// than the address space the process has left under its limit (`ulimit -v`, a batch
/// system's memory limit); unknown elsewhere.
pub fn available_memory() -> Option<u64> {
    if let Some(limit) = std::env::var("UNET_STUDIO_MEMORY_LIMIT")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return Some(limit);
    }
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    let free = kib * 1024;
    Some(address_space_left().map_or(free, |left| free.min(left)))
}

/// The address space this process may still map under its `RLIMIT_AS` (limit minus what it
/// has mapped, `VmSize`), or `None` without a limit. An allocation past it fails and the
/// process aborts, however much memory the machine has.
#[cfg(unix)]
fn address_space_left() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the struct we pass and reads nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) } == 0;
    if !ok || lim.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mapped_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmSize:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(lim.rlim_cur.saturating_sub(mapped_kib * 1024))
}

/// No address-space limit is read outside Unix.
#[cfg(not(unix))]
fn address_space_left() -> Option<u64> {
    None
}

/// Refuses `what` on `path` when it needs more than 90 % of [`available_memory`] (nothing is
/// refused where that is unknown).
pub fn check_memory(path: &Path, need_bytes: u64, what: &str) -> Result<(), DataError> {
    match available_memory() {
        Some(free) if need_bytes > free / 10 * 9 => Err(DataError::invalid(
            path,
            format!(
                "{what} needs about {} of memory, but {} is available; split the stack into smaller files or use a machine with more memory",
                gib(need_bytes),
                gib(free)
            ),
        )),
        _ => Ok(()),
    }
}

fn gib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
    } else {
        format!("{:.0} MiB", (bytes as f64 / f64::from(1u32 << 20)).ceil())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::io::write::{MaskStyle, write_mask};
    use crate::data::plane::Plane;

    #[test]
    fn headers_give_the_size_without_decoding() {
        let dir = std::env::temp_dir().join(format!("unet-probe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A 3-page 16-bit TIFF and a PNG folder of two 8-bit slices.
        let tif = dir.join("s.tif");
        let planes = vec![Plane::filled(40, 30, 300u16); 3];
        write_mask(&tif, &planes, MaskStyle::Classes).unwrap();
        assert_eq!(
            probe_stack(&tif).unwrap(),
            StackInfo {
                pixels: 3 * 40 * 30,
                slices: 3,
                pixel_bytes: 2
            }
        );
        let folder = dir.join("f");
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..2 {
            let p = folder.join(format!("s{i}.png"));
            write_mask(&p, &[Plane::filled(20, 10, 1u16)], MaskStyle::Classes).unwrap();
        }
        let info = probe_stack(&folder).unwrap();
        assert_eq!((info.pixels, info.slices), (400, 2));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sizes_are_said_in_the_unit_that_reads() {
        assert_eq!(gib(3 << 29), "1.5 GiB");
        assert_eq!(gib(5 << 20), "5 MiB");
        assert_eq!(gib(1), "1 MiB");
    }
}
