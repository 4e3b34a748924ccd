//! Reading image stacks: PNG/JPEG/BMP, single and multipage TIFF (classic and BigTIFF, either
//! byte order, with ImageJ or OME axes), folders of them (in natural order, hidden files
//! skipped), within size limits checked before decoding.

use crate::data::error::DataError;
use crate::data::io::axes::{Layout, layout_of};
use crate::data::io::files::{
    MAX_EDGE, MAX_SLICE_PIXELS, MAX_STACK_PIXELS, check_size, stack_files,
};
use crate::data::io::probe::{check_memory, image_reader, is_tiff, probe_bytes, tiff_error};
use crate::data::plane::Plane;
use crate::data::stack::{PixelKind, Planes, Stack};
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use tiff::decoder::{Decoder as TiffDecoder, DecodingResult, Limits as TiffLimits};
use tiff::tags::Tag;

/// Decoded samples of one slice before conversion.
enum Samples {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    F32(Vec<f32>),
}

/// One decoded page or image: `channels` samples per pixel, interleaved.
pub(super) struct RawSlice {
    pub(super) width: usize,
    pub(super) height: usize,
    pub(super) channels: usize,
    samples: Samples,
}

/// The pages of one file and how they map to channels, Z and T (`None`: one page per slice,
/// each with its own samples as channels).
struct RawFile {
    path: PathBuf,
    pages: Vec<RawSlice>,
    layout: Option<Layout>,
}

impl RawSlice {
    pub(super) fn kind(&self) -> PixelKind {
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
/// A TIFF's ImageJ or OME description gives its channels, Z slices and time points and its
/// pixel size; other TIFF pages and files are Z slices. Colour images have 3 channels (alpha
/// dropped), except when every pixel's colours are equal (a grey image saved as colour: one
/// channel). Every plane must have the same size and every file the same channels; NaN and
/// infinite values are rejected.
pub fn load_stack(path: &Path) -> Result<Stack, DataError> {
    let files = load_raw(path, Read::Image)?;
    files_to_stack(files)
}

/// Decodes the bytes of one image file (any supported format, all TIFF pages) as a stack.
/// `name` is only used in messages. This is the loaders' entry point for fuzzing.
pub fn decode_stack_bytes(name: &Path, bytes: &[u8]) -> Result<Stack, DataError> {
    let file = decode_file(name, bytes, Read::Image)?;
    files_to_stack(vec![file])
}

/// The planes of each file in time, Z, channel order, with the stack's channels and frames.
fn files_to_stack(files: Vec<RawFile>) -> Result<Stack, DataError> {
    let Some(first) = files.first().and_then(|f| f.pages.first()) else {
        return Err(DataError::invalid(
            files.first().map(|f| f.path.clone()).unwrap_or_default(),
            "no image data",
        ));
    };
    let (width, height) = (first.width, first.height);
    let kind = files
        .iter()
        .flat_map(|f| &f.pages)
        .map(RawSlice::kind)
        .max_by_key(|k| *k as u8)
        .unwrap_or(PixelKind::U8);
    let pixel_size = files
        .first()
        .and_then(|f| f.layout.as_ref())
        .and_then(|l| l.pixel_size.clone());
    let channel_names = files
        .first()
        .and_then(|f| f.layout.as_ref())
        .map(|l| l.channel_names.clone())
        .unwrap_or_default();
    let single = files.len() == 1;
    let mut stack = Stack {
        width,
        height,
        kind,
        channels: 0,
        frames: 1,
        planes: Planes::Memory(Vec::new()),
        sources: Vec::new(),
        pixel_size,
        channel_names,
    };
    for file in files {
        let (channels, frames, planes) = file_planes(&file)?;
        if stack.channels == 0 {
            stack.channels = channels;
        } else if channels != stack.channels {
            return Err(DataError::invalid(
                &file.path,
                format!(
                    "it has {channels} channel(s) but the stack's first file has {}; every file of a stack must have the same channels",
                    stack.channels
                ),
            ));
        }
        if frames > 1 && !single {
            return Err(DataError::invalid(
                &file.path,
                "it has a time axis; a folder of files is read as Z slices, so open a file with time points on its own",
            ));
        }
        stack.frames = frames;
        let slices = planes.len() / channels;
        stack
            .sources
            .extend(std::iter::repeat_n(file.path.clone(), slices));
        if let Planes::Memory(all) = &mut stack.planes {
            all.extend(planes);
        }
    }
    Ok(stack)
}

/// One file's planes in time, Z, channel order, with its channels and frames.
fn file_planes(file: &RawFile) -> Result<(usize, usize, Vec<Plane<f32>>), DataError> {
    let page_channels = file.pages.first().map_or(1, |p| p.channels);
    if let Some(p) = file.pages.iter().find(|p| p.channels != page_channels) {
        return Err(DataError::invalid(
            &file.path,
            format!(
                "its pages have {} and {} samples per pixel; every page must have the same",
                page_channels, p.channels
            ),
        ));
    }
    let mut planes = Vec::with_capacity(file.pages.len() * page_channels);
    for (i, page) in file.pages.iter().enumerate() {
        planes.extend(page_planes(&file.path, i, page)?);
    }
    match &file.layout {
        Some(l) if page_channels > 1 && l.channels > 1 => Err(DataError::invalid(
            &file.path,
            format!(
                "its pages are colour ({page_channels} samples per pixel) and its description gives {} channels; colour hyperstacks are not supported",
                l.channels
            ),
        )),
        // Each page's planes (one, or a colour page's three) go where the layout puts the
        // page: with channels in the description, a page is one channel of a slice.
        Some(l) => {
            let mut ordered: Vec<Option<Vec<Plane<f32>>>> = vec![None; file.pages.len()];
            for (page, chunk) in planes.chunks(page_channels).enumerate() {
                ordered[l.plane_index(page)] = Some(chunk.to_vec());
            }
            let ordered: Option<Vec<Vec<Plane<f32>>>> = ordered.into_iter().collect();
            let ordered = ordered.ok_or_else(|| {
                DataError::invalid(&file.path, "its description does not cover every page")
            })?;
            let channels = l.channels.max(page_channels);
            Ok((channels, l.t, ordered.into_iter().flatten().collect()))
        }
        None => Ok((page_channels, 1, planes)),
    }
}

/// A page's samples as one `f32` plane per channel.
pub(super) fn page_planes(
    path: &Path,
    page: usize,
    raw: &RawSlice,
) -> Result<Vec<Plane<f32>>, DataError> {
    let values: Vec<f32> = match &raw.samples {
        Samples::U8(v) => v.iter().map(|&x| f32::from(x)).collect(),
        Samples::U16(v) => v.iter().map(|&x| f32::from(x)).collect(),
        Samples::U32(v) => v.iter().map(|&x| x as f32).collect(),
        Samples::F32(v) => {
            if let Some(pos) = v.iter().position(|x| !x.is_finite()) {
                let px = pos / raw.channels;
                return Err(DataError::invalid(
                    path,
                    format!(
                        "page {page} has a non-finite value ({}) at x={}, y={}",
                        v[pos],
                        px % raw.width,
                        px / raw.width
                    ),
                ));
            }
            v.clone()
        }
    };
    let n = raw.width * raw.height;
    Ok((0..raw.channels)
        .map(|c| Plane {
            width: raw.width,
            height: raw.height,
            data: (0..n).map(|i| values[i * raw.channels + c]).collect(),
        })
        .collect())
}

/// Loads integer label images (8, 16 or 32 bit) as raw values, one plane per slice.
/// Float images are accepted only when every value is a non-negative integer.
///
/// A palette (indexed) PNG gives its indices, not its colours: label images are often saved
/// that way, the colours only showing the classes.
pub fn load_label_stack(path: &Path) -> Result<Vec<Plane<u32>>, DataError> {
    let mut out = Vec::new();
    for file in load_raw(path, Read::Labels)? {
        if let Some(l) = file.layout.as_ref().filter(|l| l.channels > 1) {
            return Err(DataError::invalid(
                &file.path,
                format!(
                    "it has {} channels; a label image has one plane per slice",
                    l.channels
                ),
            ));
        }
        let mut planes: Vec<Option<Plane<u32>>> = vec![None; file.pages.len()];
        for (page, raw) in file.pages.into_iter().enumerate() {
            let at = file.layout.as_ref().map_or(page, |l| l.plane_index(page));
            planes[at] = Some(label_plane(&file.path, raw)?);
        }
        out.extend(planes.into_iter().flatten());
    }
    Ok(out)
}

/// A label page's values as integers.
fn label_plane(path: &Path, raw: RawSlice) -> Result<Plane<u32>, DataError> {
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
                        path,
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
}

/// What a file is read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Read {
    /// Grey values (colours become grey).
    Image,
    /// Label values (a palette PNG gives its indices).
    Labels,
}

fn load_raw(path: &Path, read: Read) -> Result<Vec<RawFile>, DataError> {
    let files = stack_files(path)?;
    // Decoded, every pixel takes its samples and then 4 bytes as `f32` (or `u32` labels).
    let mut need = 0u64;
    let mut out: Vec<RawFile> = Vec::new();
    let mut total = 0usize;
    let mut first: Option<(usize, usize, &Path)> = None;
    for file in &files {
        let bytes = fs::read(file).map_err(|e| DataError::io(file, e))?;
        for (pixels, pixel) in probe_bytes(file, &bytes)? {
            need = need.saturating_add((pixels as u64).saturating_mul(pixel as u64 + 4));
        }
        check_memory(file, need, "reading the stack")?;
        let decoded = decode_file(file, &bytes, read)?;
        for (i, raw) in decoded.pages.iter().enumerate() {
            let (w, h, src) = *first.get_or_insert((raw.width, raw.height, file));
            if (raw.width, raw.height) != (w, h) {
                return Err(DataError::invalid(
                    file,
                    format!(
                        "page {i} is {}x{} but the stack's first plane ({}) is {w}x{h}; every plane of a stack must have one size",
                        raw.width,
                        raw.height,
                        src.display()
                    ),
                ));
            }
            total += raw.width * raw.height * raw.channels;
            if total > MAX_STACK_PIXELS {
                return Err(DataError::invalid(
                    file,
                    format!("the stack exceeds {MAX_STACK_PIXELS} pixels in all"),
                ));
            }
        }
        out.push(decoded);
    }
    Ok(out)
}

/// Decodes one file: a TIFF's pages with their layout, or one image.
fn decode_file(path: &Path, bytes: &[u8], read: Read) -> Result<RawFile, DataError> {
    let (pages, layout) = match read {
        Read::Labels => match palette_indices(path, bytes)? {
            Some(raw) => (vec![raw], None),
            None => decode_bytes(path, bytes, read)?,
        },
        Read::Image => decode_bytes(path, bytes, read)?,
    };
    Ok(RawFile {
        path: path.to_path_buf(),
        pages,
        layout,
    })
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
    let data = unpack_bits(&buf[..frame.buffer_size()], width, height, bits);
    Ok(Some(RawSlice {
        width,
        height,
        channels: 1,
        samples: Samples::U8(data),
    }))
}

type Decoded = (Vec<RawSlice>, Option<Layout>);

fn decode_bytes(path: &Path, bytes: &[u8], read: Read) -> Result<Decoded, DataError> {
    let (mut pages, layout) = if is_tiff(bytes) {
        decode_tiff(path, bytes, read)?
    } else {
        (vec![decode_other(path, bytes, read)?], None)
    };
    if read == Read::Image && pages.iter().all(|p| p.channels == 3 && p.samples.grey()) {
        for p in &mut pages {
            p.samples = p.samples.first_of(3);
            p.channels = 1;
        }
    }
    Ok((pages, layout))
}

fn decode_tiff(path: &Path, bytes: &[u8], read: Read) -> Result<Decoded, DataError> {
    let (mut dec, description, resolution) = open_tiff(path, Cursor::new(bytes))?;
    let mut out = Vec::new();
    let mut total = 0usize;
    loop {
        let page = decode_page(path, &mut dec, out.len(), read)?;
        total += page.width * page.height;
        if total > MAX_STACK_PIXELS {
            return Err(DataError::invalid(
                path,
                format!("the TIFF exceeds {MAX_STACK_PIXELS} pixels in all"),
            ));
        }
        out.push(page);
        if !dec.more_images() {
            break;
        }
        dec.next_image()
            .map_err(|e| tiff_error(path, &format!("page {}", out.len()), e))?;
    }
    let layout = match description {
        Some(d) => layout_of(path, &d, out.len(), resolution)?,
        None => None,
    };
    Ok((out, layout))
}

/// Pixels per unit in X and Y, when the resolution tags say.
pub(super) type Resolution = Option<(f64, f64)>;

/// A TIFF decoder of `reader` with the slice limits, and the first page's description and
/// resolution (pixels per unit in X and Y), which describe the file.
pub(super) fn open_tiff<R: std::io::Read + std::io::Seek>(
    path: &Path,
    reader: R,
) -> Result<(TiffDecoder<R>, Option<String>, Resolution), DataError> {
    let mut limits = TiffLimits::default();
    limits.decoding_buffer_size = MAX_SLICE_PIXELS * 4 * 4;
    let mut dec = TiffDecoder::new(reader)
        .map_err(|e| tiff_error(path, "not a readable TIFF", e))?
        .with_limits(limits);
    let description = dec.get_tag_ascii_string(Tag::ImageDescription).ok();
    let mut rational = |tag| match dec.get_tag(tag) {
        Ok(tiff::decoder::ifd::Value::Rational(n, d)) if d > 0 => Some(f64::from(n) / f64::from(d)),
        _ => None,
    };
    let resolution = rational(Tag::XResolution).zip(rational(Tag::YResolution));
    Ok((dec, description, resolution))
}

/// Decodes the page the decoder is at (number `page`, for messages).
pub(super) fn decode_page<R: std::io::Read + std::io::Seek>(
    path: &Path,
    dec: &mut TiffDecoder<R>,
    page: usize,
    read: Read,
) -> Result<RawSlice, DataError> {
    let ctx = |e: tiff::TiffError| tiff_error(path, &format!("page {page}"), e);
    let (w, h) = dec.dimensions().map_err(ctx)?;
    let (w, h) = (w as usize, h as usize);
    check_size(path, w, h)?;
    let color = dec.colortype().map_err(ctx)?;
    let channels = match color {
        tiff::ColorType::Gray(_) => 1,
        tiff::ColorType::GrayA(_) => 2,
        tiff::ColorType::RGB(_) => 3,
        tiff::ColorType::RGBA(_) => 4,
        other => {
            return Err(DataError::decode(
                path,
                format!("page {page}: colour type {other:?} is not supported (grey or RGB only)"),
            ));
        }
    };
    if channels > 1 && dec.get_tag_u32(Tag::PlanarConfiguration).ok() == Some(2) {
        return Err(DataError::decode(
            path,
            format!(
                "page {page}: colour stored plane by plane (planar configuration 2) is not supported; save it with interleaved colour (Fiji does)"
            ),
        ));
    }
    let white_is_zero = dec.get_tag_u32(Tag::PhotometricInterpretation).ok() == Some(0);
    let data = match (dec.read_image().map_err(ctx)?, color) {
        // 1-, 2- and 4-bit grey (binary masks): rows of packed samples, unpacked; with
        // "white is zero" (how bilevel masks are often stored) the bright value is the high
        // one, so a mask's "on" pixels read 1.
        (DecodingResult::U8(v), tiff::ColorType::Gray(bits)) if bits < 8 => {
            let mut u = unpack_bits(&v, w, h, usize::from(bits));
            if white_is_zero {
                let top = ((1u16 << bits) - 1) as u8;
                u.iter_mut().for_each(|x| *x = top - *x);
            }
            DecodingResult::U8(u)
        }
        (data, _) => data,
    };
    let samples = match data {
        DecodingResult::U8(v) => Samples::U8(v),
        DecodingResult::U16(v) => Samples::U16(v),
        DecodingResult::U32(v) => Samples::U32(v),
        DecodingResult::I8(v) => Samples::F32(v.into_iter().map(f32::from).collect()),
        DecodingResult::I16(v) => Samples::F32(v.into_iter().map(f32::from).collect()),
        DecodingResult::I32(v) => Samples::F32(v.into_iter().map(|x| x as f32).collect()),
        DecodingResult::F32(v) => Samples::F32(v),
        DecodingResult::F64(v) => Samples::F32(v.into_iter().map(|x| x as f32).collect()),
        DecodingResult::F16(v) => Samples::F32(v.into_iter().map(f32::from).collect()),
        DecodingResult::U64(_) | DecodingResult::I64(_) => {
            return Err(DataError::decode(
                path,
                format!("page {page}: 64-bit integer samples are not supported"),
            ));
        }
    };
    let (samples, channels) = samples.shaped(path, page, w * h, channels, read)?;
    Ok(RawSlice {
        width: w,
        height: h,
        channels,
        samples,
    })
}

/// Rows of `width` samples of `bits` bits packed from the high bit (each row starting on a
/// byte), unpacked to one byte per sample; rows cut short are left 0 (the caller checks the
/// count decoded).
fn unpack_bits(packed: &[u8], width: usize, height: usize, bits: usize) -> Vec<u8> {
    let row_bytes = (width * bits).div_ceil(8);
    let mask = ((1u16 << bits) - 1) as u8;
    let mut out = Vec::with_capacity(width * height);
    for row in packed.chunks(row_bytes).take(height) {
        out.extend((0..width).map(|x| {
            let bit = x * bits;
            row.get(bit / 8)
                .map_or(0, |byte| (byte >> (8 - bits - bit % 8)) & mask)
        }));
    }
    out
}

impl Samples {
    /// The samples of `pixels` pixels of `channels` interleaved samples, as `read` wants them:
    /// labels as one grey sample per pixel (colour by Rec. 601 luma, unless all three are
    /// equal), images with alpha dropped. Returns the samples and their channels.
    fn shaped(
        self,
        path: &Path,
        page: usize,
        pixels: usize,
        channels: usize,
        read: Read,
    ) -> Result<(Self, usize), DataError> {
        let n = pixels * channels;
        let have = match &self {
            Self::U8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::U32(v) => v.len(),
            Self::F32(v) => v.len(),
        };
        if have < n {
            return Err(DataError::decode(
                path,
                format!("page {page}: {have} samples decoded, {n} expected"),
            ));
        }
        let keep = match (read, channels) {
            (Read::Labels, _) | (_, 1 | 2) => 1,
            _ => 3,
        };
        Ok(match self {
            Self::U8(v) => (Self::U8(shape(v, n, channels, keep)), keep),
            Self::U16(v) => (Self::U16(shape(v, n, channels, keep)), keep),
            Self::U32(v) => (Self::U32(shape(v, n, channels, keep)), keep),
            Self::F32(v) => (Self::F32(shape(v, n, channels, keep)), keep),
        })
    }

    /// Whether every pixel's three interleaved samples are equal.
    fn grey(&self) -> bool {
        fn equal<T: PartialEq>(v: &[T]) -> bool {
            v.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2])
        }
        match self {
            Self::U8(v) => equal(v),
            Self::U16(v) => equal(v),
            Self::U32(v) => equal(v),
            Self::F32(v) => equal(v),
        }
    }

    /// The first of every `k` interleaved samples.
    fn first_of(&self, k: usize) -> Self {
        fn first<T: Copy>(v: &[T], k: usize) -> Vec<T> {
            v.iter().step_by(k).copied().collect()
        }
        match self {
            Self::U8(v) => Self::U8(first(v, k)),
            Self::U16(v) => Self::U16(first(v, k)),
            Self::U32(v) => Self::U32(first(v, k)),
            Self::F32(v) => Self::F32(first(v, k)),
        }
    }
}

/// The first `n` of `v` (`channels` interleaved samples per pixel) with `keep` samples per
/// pixel: one grey sample (the first when a colour pixel's samples are equal, else the Rec. 601
/// luma), or the colour without alpha.
fn shape<T>(mut v: Vec<T>, n: usize, channels: usize, keep: usize) -> Vec<T>
where
    T: Copy + PartialEq + Into<f64> + FromF64,
{
    v.truncate(n);
    if channels == keep {
        return v;
    }
    v.chunks_exact(channels)
        .flat_map(|px| {
            let grey = if channels >= 3 && !(px[0] == px[1] && px[1] == px[2]) {
                T::from_f64(0.299 * px[0].into() + 0.587 * px[1].into() + 0.114 * px[2].into())
            } else {
                px[0]
            };
            if keep == 1 {
                vec![grey]
            } else {
                px[..keep].to_vec()
            }
        })
        .collect()
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

fn decode_other(path: &Path, bytes: &[u8], read: Read) -> Result<RawSlice, DataError> {
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
    use image::DynamicImage as D;
    let (samples, channels) = match img {
        D::ImageLuma8(b) => (Samples::U8(b.into_raw()), 1),
        D::ImageLumaA8(b) => (Samples::U8(b.into_raw()), 2),
        D::ImageRgb8(b) => (Samples::U8(b.into_raw()), 3),
        D::ImageRgba8(b) => (Samples::U8(b.into_raw()), 4),
        D::ImageLuma16(b) => (Samples::U16(b.into_raw()), 1),
        D::ImageLumaA16(b) => (Samples::U16(b.into_raw()), 2),
        D::ImageRgb16(b) => (Samples::U16(b.into_raw()), 3),
        D::ImageRgba16(b) => (Samples::U16(b.into_raw()), 4),
        D::ImageRgb32F(b) => (Samples::F32(b.into_raw()), 3),
        D::ImageRgba32F(b) => (Samples::F32(b.into_raw()), 4),
        other => (Samples::F32(other.to_rgb32f().into_raw()), 3),
    };
    let (samples, channels) = samples.shaped(path, 0, width * height, channels, read)?;
    Ok(RawSlice {
        width,
        height,
        channels,
        samples,
    })
}
