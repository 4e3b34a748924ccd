//! TIFF writing: 16-bit pages with the ImageJ description and lookup-table tags, so Fiji and
//! tifffile read stacks and their colours back.

use crate::data::error::DataError;
use crate::data::io::axes::PixelSize;
use crate::data::plane::Plane;
use crate::data::stack::Stack;
use std::io::Cursor;
use std::path::Path;
use tiff::encoder::{
    Compression, Rational, TiffEncoder, TiffKind, TiffKindBig, TiffKindStandard, colortype,
};
use tiff::tags::Tag;

/// What an exported TIFF says about its axes besides Y, X and channels: time points and the
/// pixel size, so that Fiji and tifffile read a mask of a Z/T stack with the stack's shape
/// and scale.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TiffAxes {
    /// Time points: the slices are `frames` runs of Z slices (0 or 1: no time axis).
    pub frames: usize,
    /// The pixel size: resolution tags, and ImageJ's `unit` and `spacing`.
    pub pixel_size: Option<PixelSize>,
}

impl TiffAxes {
    /// The axes of `stack`.
    pub fn of(stack: &Stack) -> Self {
        Self {
            frames: stack.frames,
            pixel_size: stack.pixel_size.clone(),
        }
    }
}

/// ImageJ's description tag, so that Fiji opens the pages as a stack (or hyperstack).
pub(crate) fn imagej_description(
    slices: usize,
    channels: usize,
    range: Option<(f64, f64)>,
    axes: &TiffAxes,
) -> String {
    let mut s = format!("ImageJ=1.54f\nimages={}\n", slices * channels);
    let frames = axes.frames.max(1);
    let frames = if slices.is_multiple_of(frames) {
        frames
    } else {
        1
    };
    if channels > 1 {
        s += &format!("channels={channels}\n");
    }
    if slices / frames > 1 || channels > 1 || frames > 1 {
        s += &format!("slices={}\n", slices / frames);
    }
    if frames > 1 {
        s += &format!("frames={frames}\n");
    }
    if channels > 1 || frames > 1 {
        s += "hyperstack=true\nmode=grayscale\n";
    }
    if let Some(p) = &axes.pixel_size {
        s += &format!("unit={}\n", if p.unit == "µm" { "micron" } else { &p.unit });
        if let Some(z) = p.z {
            s += &format!("spacing={z}\n");
        }
    }
    if let Some((lo, hi)) = range {
        s += &format!("min={lo}\nmax={hi}\n");
    }
    s
}

/// Writes the pixel size of `axes` as resolution tags (pixels per unit, ImageJ's way: no
/// resolution unit, the unit in the description).
pub(crate) fn write_resolution<W: std::io::Write + std::io::Seek, K: tiff::encoder::TiffKind>(
    enc: &mut tiff::encoder::DirectoryEncoder<'_, W, K>,
    axes: &TiffAxes,
) -> Result<(), tiff::TiffError> {
    let Some(p) = &axes.pixel_size else {
        return Ok(());
    };
    let per_unit = |size: f64| {
        let d = 1_000_000u32;
        let n = (f64::from(d) / size)
            .round()
            .clamp(1.0, f64::from(u32::MAX));
        Rational { n: n as u32, d }
    };
    enc.write_tag(Tag::XResolution, per_unit(p.x))?;
    enc.write_tag(Tag::YResolution, per_unit(p.y))?;
    enc.write_tag(Tag::ResolutionUnit, 1u16)
}

/// ImageJ's private tags (50838 byte counts, 50839 data) holding one colour table, written
/// little-endian as the tiff crate writes: magic "IJIJ" and type "luts" as little-endian ints.
fn imagej_lut_tags(lut: &[[u8; 256]; 3]) -> ([u32; 2], Vec<u8>) {
    let mut data = Vec::with_capacity(12 + 768);
    data.extend_from_slice(&0x494a_494a_u32.to_le_bytes());
    data.extend_from_slice(&u32::from_be_bytes(*b"luts").to_le_bytes());
    data.extend_from_slice(&1u32.to_le_bytes());
    for channel in lut {
        data.extend_from_slice(channel);
    }
    ([12, 768], data)
}

/// Pixel bytes past which a TIFF is written as BigTIFF: classic TIFF's offsets are 32-bit
/// (4 GiB in all), and tags and strip tables need some room.
pub(crate) const BIGTIFF_PIXEL_BYTES: u64 = 0xF000_0000;

/// Whether pages of `pixels` pixels of `bytes_per_pixel` bytes need BigTIFF.
pub(crate) fn needs_bigtiff(pixels: usize, bytes_per_pixel: u64) -> bool {
    (pixels as u64).saturating_mul(bytes_per_pixel) > BIGTIFF_PIXEL_BYTES
}

/// Encodes 8- or 16-bit mask pages as one TIFF with ImageJ metadata (Deflate), BigTIFF when
/// `big` (see [`needs_bigtiff`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_tiff_u16(
    path: &Path,
    slices: &[Plane<u16>],
    eight_bit: bool,
    max: u16,
    lut: Option<[[u8; 256]; 3]>,
    axes: &TiffAxes,
    big: bool,
) -> Result<Vec<u8>, DataError> {
    let err = |e: tiff::TiffError| DataError::decode(path, format!("TIFF encoding failed: {e}"));
    let mut cursor = Cursor::new(Vec::new());
    let pages = U16Pages {
        slices,
        eight_bit,
        max,
        lut,
        axes,
    };
    if big {
        pages.encode::<TiffKindBig>(&mut cursor).map_err(err)?;
    } else {
        pages.encode::<TiffKindStandard>(&mut cursor).map_err(err)?;
    }
    Ok(cursor.into_inner())
}

/// What [`encode_tiff_u16`] writes.
struct U16Pages<'a> {
    slices: &'a [Plane<u16>],
    eight_bit: bool,
    max: u16,
    lut: Option<[[u8; 256]; 3]>,
    axes: &'a TiffAxes,
}

impl U16Pages<'_> {
    fn encode<K: TiffKind>(&self, cursor: &mut Cursor<Vec<u8>>) -> Result<(), tiff::TiffError> {
        let Self {
            slices,
            eight_bit,
            max,
            lut,
            axes,
        } = self;
        let (eight_bit, max) = (*eight_bit, *max);
        let mut enc = TiffEncoder::<_, K>::new_generic(cursor)?
            .with_compression(Compression::Deflate(Default::default()));
        // Display range: small class ids would otherwise look all black in Fiji. With a colour
        // table the range is 0..255 so that value k shows colour k.
        let range_max = if lut.is_some() { 255 } else { max.max(1) };
        let desc = imagej_description(slices.len(), 1, Some((0.0, f64::from(range_max))), axes);
        for (i, plane) in slices.iter().enumerate() {
            let (w, h) = (plane.width as u32, plane.height as u32);
            if eight_bit {
                let px: Vec<u8> = plane.data.iter().map(|&v| v as u8).collect();
                let mut img = enc.new_image::<colortype::Gray8>(w, h)?;
                img.encoder()
                    .write_tag(Tag::ImageDescription, desc.as_str())?;
                write_resolution(img.encoder(), axes)?;
                if let Some(lut) = lut.as_ref().filter(|_| i == 0) {
                    let (counts, data) = imagej_lut_tags(lut);
                    img.encoder().write_tag(Tag::Unknown(50838), &counts[..])?;
                    img.encoder().write_tag(Tag::Unknown(50839), &data[..])?;
                }
                img.write_data(&px)?;
            } else {
                let mut img = enc.new_image::<colortype::Gray16>(w, h)?;
                img.encoder()
                    .write_tag(Tag::ImageDescription, desc.as_str())?;
                write_resolution(img.encoder(), axes)?;
                img.write_data(&plane.data)?;
            }
        }
        Ok(())
    }
}
