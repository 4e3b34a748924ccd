//! A TIFF read slice by slice ([`TiffSlices`]): the file stays on disk and each slice's
//! channels are decoded when asked for, so that a stack larger than memory can be predicted
//! plane by plane. The axes (ImageJ or OME) and the pixel size are read as [`super::load_stack`]
//! reads them, and a slice holds the same planes as the loaded stack's.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use tiff::decoder::Decoder as TiffDecoder;

use crate::data::error::DataError;
use crate::data::io::axes::{Layout, PixelSize, layout_of};
use crate::data::io::probe::{is_tiff, tiff_error};
use crate::data::io::read::{Read, decode_page, open_tiff, page_planes};
use crate::data::io::tiff::TiffAxes;
use crate::data::plane::Plane;
use crate::data::stack::PixelKind;

/// A multipage TIFF opened for reading slice by slice.
pub struct TiffSlices {
    path: PathBuf,
    dec: TiffDecoder<BufReader<File>>,
    layout: Layout,
    /// Samples per page (3 for colour pages, whose channels are then the colours).
    page_channels: usize,
    /// Plane width.
    pub width: usize,
    /// Plane height.
    pub height: usize,
    /// Channels of every slice.
    pub channels: usize,
    /// Time points (the slices are `frames` runs of Z slices).
    pub frames: usize,
    /// The first page's sample type.
    pub kind: PixelKind,
    /// The pixel size, when the file says.
    pub pixel_size: Option<PixelSize>,
}

impl std::fmt::Debug for TiffSlices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TiffSlices({}: {} slices of {} channel(s), {}x{})",
            self.path.display(),
            self.slices(),
            self.channels,
            self.width,
            self.height
        )
    }
}

impl TiffSlices {
    /// Opens `path` (a TIFF file): reads its page directory and description, not its pixels
    /// (the first page is decoded to learn its samples).
    pub fn open(path: &Path) -> Result<Self, DataError> {
        let mut head = [0u8; 4];
        let mut file = File::open(path).map_err(|e| DataError::io(path, e))?;
        std::io::Read::read_exact(&mut file, &mut head).map_err(|e| DataError::io(path, e))?;
        if !is_tiff(&head) {
            return Err(DataError::invalid(
                path,
                "only a TIFF file can be read slice by slice",
            ));
        }
        std::io::Seek::rewind(&mut file).map_err(|e| DataError::io(path, e))?;
        let (mut dec, description, resolution) = open_tiff(path, BufReader::new(file))?;
        let mut pages = 1;
        while dec.more_images() {
            dec.next_image()
                .map_err(|e| tiff_error(path, &format!("page {pages}"), e))?;
            pages += 1;
        }
        let layout = match description {
            Some(d) => layout_of(path, &d, pages, resolution)?,
            None => None,
        };
        dec.seek_to_image(0)
            .map_err(|e| tiff_error(path, "page 0", e))?;
        let first = decode_page(path, &mut dec, 0, Read::Image)?;
        let page_channels = first.channels;
        if let Some(l) = &layout
            && page_channels > 1
            && l.channels > 1
        {
            return Err(DataError::invalid(
                path,
                format!(
                    "its pages are colour ({page_channels} samples per pixel) and its description gives {} channels; colour hyperstacks are not supported",
                    l.channels
                ),
            ));
        }
        let layout = layout.unwrap_or_else(|| Layout::plain(pages));
        Ok(Self {
            path: path.to_path_buf(),
            dec,
            page_channels,
            width: first.width,
            height: first.height,
            channels: layout.channels.max(page_channels),
            frames: layout.t,
            kind: first.kind(),
            pixel_size: layout.pixel_size.clone(),
            layout,
        })
    }

    /// Slices (time points x Z).
    pub fn slices(&self) -> usize {
        self.layout.z * self.layout.t
    }

    /// The axes an output of the same slices keeps (time points, pixel size).
    pub fn axes(&self) -> TiffAxes {
        TiffAxes {
            frames: self.frames,
            pixel_size: self.pixel_size.clone(),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The channels of slice `s` (time point `s / Z`, Z slice `s % Z`), decoded from the
    /// file; every page must have the first page's size and samples.
    pub fn slice(&mut self, s: usize) -> Result<Vec<Plane<f32>>, DataError> {
        if s >= self.slices() {
            return Err(DataError::invalid(
                &self.path,
                format!("slice {s} asked for; the file has {}", self.slices()),
            ));
        }
        let (t, z) = (s / self.layout.z, s % self.layout.z);
        let mut planes = Vec::with_capacity(self.channels);
        for c in 0..self.layout.channels {
            // The page directory was read when opening: seeking only reads one directory.
            let page = self.layout.page_of(t, z, c);
            self.dec
                .seek_to_image(page)
                .map_err(|e| tiff_error(&self.path, &format!("page {page}"), e))?;
            let raw = decode_page(&self.path, &mut self.dec, page, Read::Image)?;
            if (raw.width, raw.height, raw.channels)
                != (self.width, self.height, self.page_channels)
            {
                return Err(DataError::invalid(
                    &self.path,
                    format!(
                        "page {page} is {}x{} with {} sample(s) per pixel, page 0 {}x{} with {}; every page must match",
                        raw.width,
                        raw.height,
                        raw.channels,
                        self.width,
                        self.height,
                        self.page_channels
                    ),
                ));
            }
            planes.extend(page_planes(&self.path, page, &raw)?);
        }
        Ok(planes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::io::{TiffAxes, load_stack, write_f32_tiff};

    /// A hyperstack of 3 Z slices x 2 channels x 2 time points, read slice by slice, gives
    /// the planes `load_stack` gives, in any order of asking.
    #[test]
    fn slices_are_the_loaded_stacks_slices() {
        let dir = std::env::temp_dir().join(format!("unet-slices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.tif");
        let (w, h, c, slices) = (7, 5, 2, 6);
        let pages: Vec<Plane<f32>> = (0..slices * c)
            .map(|i| Plane {
                width: w,
                height: h,
                data: (0..w * h).map(|p| (i * 100 + p) as f32).collect(),
            })
            .collect();
        let axes = TiffAxes {
            frames: 2,
            pixel_size: None,
        };
        write_f32_tiff(&path, &pages, c, &axes).unwrap();
        let stack = load_stack(&path).unwrap();
        assert_eq!((stack.channels, stack.frames, stack.slices()), (2, 2, 6));
        let mut r = TiffSlices::open(&path).unwrap();
        assert_eq!((r.channels, r.frames, r.slices()), (2, 2, 6));
        assert_eq!((r.width, r.height), (w, h));
        assert_eq!(r.axes(), TiffAxes::of(&stack));
        for s in [5, 0, 3, 3, 1, 4, 2] {
            assert_eq!(r.slice(s).unwrap(), stack.image(s), "slice {s}");
        }
        assert!(r.slice(6).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `page_of` inverts `position` for every order of the axes.
    #[test]
    fn page_of_inverts_position() {
        use crate::data::io::axes::Axis;
        let orders = [
            [Axis::C, Axis::Z, Axis::T],
            [Axis::Z, Axis::C, Axis::T],
            [Axis::Z, Axis::T, Axis::C],
            [Axis::T, Axis::Z, Axis::C],
        ];
        for order in orders {
            let l = Layout {
                channels: 2,
                z: 3,
                t: 4,
                order,
                ..Layout::plain(1)
            };
            for page in 0..l.pages() {
                let (t, z, c) = l.position(page);
                assert_eq!(l.page_of(t, z, c), page, "{order:?}");
            }
        }
    }
}
