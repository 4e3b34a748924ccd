//! Reading image stacks: PNG/JPEG/BMP, single and multipage TIFF, folders of them (in natural
//! order, hidden files skipped), within size limits checked before decoding.

use crate::data::error::DataError;
use crate::data::io::files::{
    MAX_EDGE, MAX_SLICE_PIXELS, MAX_STACK_PIXELS, check_size, stack_files,
};
use crate::data::io::probe::{check_memory, image_reader, probe_bytes, tiff_error};
use crate::data::plane::Plane;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use tiff::decoder::{Decoder as TiffDecoder, DecodingResult, Limits as TiffLimits};

/// The sample type a stack was stored with; it decides the display range and export depth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PixelKind {
    /// 8-bit unsigned.
    U8,
    /// 16-bit unsigned.
    U16,
    /// 32-bit unsigned or signed integers.
    U32,
    /// 32- or 64-bit float.
    F32,
}

/// A stack of equally sized grey slices, as `f32` in the file's own value range.
#[derive(Clone, Debug)]
pub struct Stack {
    /// Slice width in pixels.
    pub width: usize,
    /// Slice height in pixels.
    pub height: usize,
    /// The sample type of the source file(s).
    pub kind: PixelKind,
    /// The slices, in file / page order.
    pub slices: Vec<Plane<f32>>,
    /// For each slice, the file it came from.
    pub sources: Vec<PathBuf>,
}

/// Decoded samples of one slice before conversion.
enum Samples {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    F32(Vec<f32>),
}

struct RawSlice {
    width: usize,
    height: usize,
    samples: Samples,
}

impl RawSlice {
    fn kind(&self) -> PixelKind {
        match self.samples {
            Samples::U8(_) => PixelKind::U8,
            Samples::U16(_) => PixelKind::U16,
            Samples::U32(_) => PixelKind::U32,
            Samples::F32(_) => PixelKind::F32,
        }
    }
}

/// Loads an image file, a multipage TIFF or a folder of images (in natural name order, hidden
/// files skipped) as a stack.
///
/// Colour images are converted to grey (the first channel when all channels are equal, the
/// Rec. 601 luma otherwise). Every slice must have the same size; NaN and infinite values are
/// rejected.
pub fn load_stack(path: &Path) -> Result<Stack, DataError> {
    let (raws, sources) = load_raw(path, Read::Image)?;
    raws_to_stack(raws, sources)
}

/// Decodes the bytes of one image file (any supported format, all TIFF pages) as a stack.
/// `name` is only used in messages. This is the loaders' entry point for fuzzing.
pub fn decode_stack_bytes(name: &Path, bytes: &[u8]) -> Result<Stack, DataError> {
    let raws = decode_bytes(name, bytes)?;
    let sources = vec![name.to_path_buf(); raws.len()];
    raws_to_stack(raws, sources)
}

fn raws_to_stack(raws: Vec<RawSlice>, sources: Vec<PathBuf>) -> Result<Stack, DataError> {
    let Some(first) = raws.first() else {
        return Err(DataError::invalid(
            sources.first().cloned().unwrap_or_default(),
            "no image data",
        ));
    };
    let kind = raws
        .iter()
        .map(RawSlice::kind)
        .max_by_key(|k| *k as u8)
        .unwrap_or(PixelKind::U8);
    let (width, height) = (first.width, first.height);
    let mut slices = Vec::with_capacity(raws.len());
    for (i, (raw, src)) in raws.into_iter().zip(&sources).enumerate() {
        if (raw.width, raw.height) != (width, height) {
            return Err(DataError::invalid(
                src,
                format!(
                    "slice {i} is {}x{} but slice 0 is {width}x{height}; every slice of a stack must have one size",
                    raw.width, raw.height
                ),
            ));
        }
        let data: Vec<f32> = match raw.samples {
            Samples::U8(v) => v.into_iter().map(f32::from).collect(),
            Samples::U16(v) => v.into_iter().map(f32::from).collect(),
            Samples::U32(v) => v.into_iter().map(|x| x as f32).collect(),
            Samples::F32(v) => {
                if let Some(pos) = v.iter().position(|x| !x.is_finite()) {
                    return Err(DataError::invalid(
                        src,
                        format!(
                            "slice {i} has a non-finite value ({}) at x={}, y={}",
                            v[pos],
                            pos % raw.width,
                            pos / raw.width
                        ),
                    ));
                }
                v
            }
        };
        slices.push(Plane {
            width,
            height,
            data,
        });
    }
    Ok(Stack {
        width,
        height,
        kind,
        slices,
        sources,
    })
}

/// Loads integer label images (8, 16 or 32 bit) as raw values, one plane per slice.
/// Float images are accepted only when every value is a non-negative integer.
///
/// A palette (indexed) PNG gives its indices, not its colours: label images are often saved
/// that way, the colours only showing the classes.
pub fn load_label_stack(path: &Path) -> Result<Vec<Plane<u32>>, DataError> {
    let (raws, sources) = load_raw(path, Read::Labels)?;
    raws.into_iter()
        .zip(&sources)
        .map(|(raw, src)| {
            let data: Vec<u32> = match raw.samples {
                Samples::U8(v) => v.into_iter().map(u32::from).collect(),
                Samples::U16(v) => v.into_iter().map(u32::from).collect(),
                Samples::U32(v) => v,
                Samples::F32(v) => v
                    .into_iter()
                    .map(|x| {
                        if x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x < 4.0e9 {
                            Ok(x as u32)
                        } else {
                            Err(DataError::invalid(
                                src,
                                format!("label images hold non-negative integers, found {x}"),
                            ))
                        }
                    })
                    .collect::<Result<_, _>>()?,
            };
            Ok(Plane {
                width: raw.width,
                height: raw.height,
                data,
            })
        })
        .collect()
}

/// What a file is read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    /// Grey values (colours become grey).
    Image,
    /// Label values (a palette PNG gives its indices).
    Labels,
}

fn load_raw(path: &Path, read: Read) -> Result<(Vec<RawSlice>, Vec<PathBuf>), DataError> {
    let files = stack_files(path)?;
    // Decoded, every pixel takes its samples and then 4 bytes as `f32` (or `u32` labels).
    let mut need = 0u64;
    let mut slices = Vec::new();
    let mut sources = Vec::new();
    let mut total = 0usize;
    for file in &files {
        let bytes = fs::read(file).map_err(|e| DataError::io(file, e))?;
        for (pixels, pixel) in probe_bytes(file, &bytes)? {
            need = need.saturating_add((pixels as u64).saturating_mul(pixel as u64 + 4));
        }
        check_memory(file, need, "reading the stack")?;
        let decoded = match read {
            Read::Labels => match palette_indices(file, &bytes)? {
                Some(raw) => vec![raw],
                None => decode_bytes(file, &bytes)?,
            },
            Read::Image => decode_bytes(file, &bytes)?,
        };
        for raw in decoded {
            if let Some(first) = slices.first() {
                let first: &RawSlice = first;
                if (raw.width, raw.height) != (first.width, first.height) {
                    return Err(DataError::invalid(
                        file,
                        format!(
                            "slice {} is {}x{} but the stack's first slice ({}) is {}x{}; every slice of a stack must have one size",
                            slices.len(),
                            raw.width,
                            raw.height,
                            sources
                                .first()
                                .map(|p: &PathBuf| p.display().to_string())
                                .unwrap_or_default(),
                            first.width,
                            first.height
                        ),
                    ));
                }
            }
            total += raw.width * raw.height;
            if total > MAX_STACK_PIXELS {
                return Err(DataError::invalid(
                    file,
                    format!("the stack exceeds {MAX_STACK_PIXELS} pixels in all"),
                ));
            }
            slices.push(raw);
            sources.push(file.clone());
        }
    }
    Ok((slices, sources))
}

/// The palette indices of an indexed PNG (`None` for any other file).
fn palette_indices(path: &Path, bytes: &[u8]) -> Result<Option<RawSlice>, DataError> {
    if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(None);
    }
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder
        .read_info()
        .map_err(|e| DataError::decode(path, e))?;
    let info = reader.info();
    if info.color_type != png::ColorType::Indexed {
        return Ok(None);
    }
    let (width, height) = (info.width as usize, info.height as usize);
    check_size(path, width, height)?;
    let bits = info.bit_depth as usize;
    let mut buf = vec![0u8; reader.output_buffer_size().unwrap_or(0)];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| DataError::decode(path, e))?;
    // Rows of `width` indices of `bits` bits, packed from the high bit.
    let mut data = Vec::with_capacity(width * height);
    for row in buf[..frame.buffer_size()].chunks_exact(frame.line_size) {
        data.extend((0..width).map(|x| {
            let bit = x * bits;
            let byte = row[bit / 8];
            let shift = 8 - bits - bit % 8;
            (byte >> shift) & ((1u16 << bits) - 1) as u8
        }));
    }
    Ok(Some(RawSlice {
        width,
        height,
        samples: Samples::U8(data),
    }))
}

fn decode_bytes(path: &Path, bytes: &[u8]) -> Result<Vec<RawSlice>, DataError> {
    if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") || bytes.starts_with(b"II+\0") {
        return decode_tiff(path, bytes);
    }
    decode_other(path, bytes).map(|s| vec![s])
}

fn decode_tiff(path: &Path, bytes: &[u8]) -> Result<Vec<RawSlice>, DataError> {
    let mut limits = TiffLimits::default();
    limits.decoding_buffer_size = MAX_SLICE_PIXELS * 4 * 4;
    let mut dec = TiffDecoder::new(Cursor::new(bytes))
        .map_err(|e| tiff_error(path, "not a readable TIFF", e))?
        .with_limits(limits);
    let mut out = Vec::new();
    let mut total = 0usize;
    loop {
        let page = out.len();
        let ctx = |e: tiff::TiffError| tiff_error(path, &format!("page {page}"), e);
        let (w, h) = dec.dimensions().map_err(ctx)?;
        let (w, h) = (w as usize, h as usize);
        check_size(path, w, h)?;
        total += w * h;
        if total > MAX_STACK_PIXELS {
            return Err(DataError::invalid(
                path,
                format!("the TIFF exceeds {MAX_STACK_PIXELS} pixels in all"),
            ));
        }
        let color = dec.colortype().map_err(ctx)?;
        let channels = match color {
            tiff::ColorType::Gray(_) => 1,
            tiff::ColorType::GrayA(_) => 2,
            tiff::ColorType::RGB(_) => 3,
            tiff::ColorType::RGBA(_) => 4,
            other => {
                return Err(DataError::decode(
                    path,
                    format!(
                        "page {page}: colour type {other:?} is not supported (grey or RGB only)"
                    ),
                ));
            }
        };
        let data = dec.read_image().map_err(ctx)?;
        let n = w * h * channels;
        let samples = match data {
            DecodingResult::U8(v) => Samples::U8(to_grey(path, page, v, n, channels)?),
            DecodingResult::U16(v) => Samples::U16(to_grey(path, page, v, n, channels)?),
            DecodingResult::U32(v) => Samples::U32(to_grey(path, page, v, n, channels)?),
            DecodingResult::I8(v) => Samples::F32(to_grey_f32(path, page, v, n, channels)?),
            DecodingResult::I16(v) => Samples::F32(to_grey_f32(path, page, v, n, channels)?),
            DecodingResult::I32(v) => Samples::F32(to_grey_f32(path, page, v, n, channels)?),
            DecodingResult::F32(v) => Samples::F32(to_grey(path, page, v, n, channels)?),
            DecodingResult::F64(v) => {
                let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
                Samples::F32(to_grey(path, page, v, n, channels)?)
            }
            DecodingResult::F16(v) => {
                let v: Vec<f32> = v.into_iter().map(f32::from).collect();
                Samples::F32(to_grey(path, page, v, n, channels)?)
            }
            DecodingResult::U64(_) | DecodingResult::I64(_) => {
                return Err(DataError::decode(
                    path,
                    format!("page {page}: 64-bit integer samples are not supported"),
                ));
            }
        };
        out.push(RawSlice {
            width: w,
            height: h,
            samples,
        });
        if !dec.more_images() {
            break;
        }
        dec.next_image()
            .map_err(|e| tiff_error(path, &format!("page {}", out.len()), e))?;
    }
    Ok(out)
}

/// Reduces interleaved `channels` samples to one grey sample per pixel.
fn to_grey<T>(
    path: &Path,
    page: usize,
    v: Vec<T>,
    n: usize,
    channels: usize,
) -> Result<Vec<T>, DataError>
where
    T: Copy + PartialEq + Into<f64> + FromF64,
{
    if v.len() < n {
        return Err(DataError::decode(
            path,
            format!("page {page}: {} samples decoded, {n} expected", v.len()),
        ));
    }
    if channels == 1 {
        let mut v = v;
        v.truncate(n);
        return Ok(v);
    }
    Ok(v[..n]
        .chunks_exact(channels)
        .map(|px| {
            let colour = channels >= 3;
            if !colour || (px[0] == px[1] && px[1] == px[2]) {
                px[0]
            } else {
                let l = 0.299 * px[0].into() + 0.587 * px[1].into() + 0.114 * px[2].into();
                T::from_f64(l)
            }
        })
        .collect())
}

fn to_grey_f32<T: Copy + Into<f64>>(
    path: &Path,
    page: usize,
    v: Vec<T>,
    n: usize,
    channels: usize,
) -> Result<Vec<f32>, DataError> {
    let v: Vec<f32> = v.into_iter().map(|x| x.into() as f32).collect();
    to_grey(path, page, v, n, channels)
}

/// Conversion back from the luma computation, rounding for integer types.
pub(crate) trait FromF64 {
    fn from_f64(v: f64) -> Self;
}

impl FromF64 for u8 {
    fn from_f64(v: f64) -> Self {
        v.round().clamp(0.0, 255.0) as u8
    }
}

impl FromF64 for u16 {
    fn from_f64(v: f64) -> Self {
        v.round().clamp(0.0, 65535.0) as u16
    }
}

impl FromF64 for u32 {
    fn from_f64(v: f64) -> Self {
        v.round().clamp(0.0, u32::MAX as f64) as u32
    }
}

impl FromF64 for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

fn decode_other(path: &Path, bytes: &[u8]) -> Result<RawSlice, DataError> {
    let (w, h) = image_reader(path, bytes)?
        .into_dimensions()
        .map_err(|e| DataError::decode(path, format!("cannot read the header: {e}")))?;
    check_size(path, w as usize, h as usize)?;
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::decode(path, e))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_EDGE as u32);
    limits.max_image_height = Some(MAX_EDGE as u32);
    limits.max_alloc = Some((MAX_SLICE_PIXELS * 8) as u64);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| DataError::decode(path, e))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let n = width * height;
    use image::DynamicImage as D;
    let samples = match img {
        D::ImageLuma8(b) => Samples::U8(b.into_raw()),
        D::ImageLumaA8(b) => Samples::U8(to_grey(path, 0, b.into_raw(), n * 2, 2)?),
        D::ImageRgb8(b) => Samples::U8(to_grey(path, 0, b.into_raw(), n * 3, 3)?),
        D::ImageRgba8(b) => Samples::U8(to_grey(path, 0, b.into_raw(), n * 4, 4)?),
        D::ImageLuma16(b) => Samples::U16(b.into_raw()),
        D::ImageLumaA16(b) => Samples::U16(to_grey(path, 0, b.into_raw(), n * 2, 2)?),
        D::ImageRgb16(b) => Samples::U16(to_grey(path, 0, b.into_raw(), n * 3, 3)?),
        D::ImageRgba16(b) => Samples::U16(to_grey(path, 0, b.into_raw(), n * 4, 4)?),
        D::ImageRgb32F(b) => Samples::F32(to_grey(path, 0, b.into_raw(), n * 3, 3)?),
        D::ImageRgba32F(b) => Samples::F32(to_grey(path, 0, b.into_raw(), n * 4, 4)?),
        other => Samples::F32(other.to_luma32f().into_raw()),
    };
    Ok(RawSlice {
        width,
        height,
        samples,
    })
}
