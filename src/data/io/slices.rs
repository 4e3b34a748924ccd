//! A TIFF read slice by slice ([`TiffSlices`]): the file stays on disk and each slice's
//! channels are decoded when asked for, so that a stack larger than memory can be predicted
//! plane by plane. The axes (ImageJ or OME) and the pixel size are read as [`super::load_stack`]
//! reads them, and a slice holds the same planes as the loaded stack's.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tiff::decoder::Decoder as TiffDecoder;

use crate::data::error::DataError;
use crate::data::io::axes::{Layout, PixelSize, layout_of};
use crate::data::io::probe::{available_memory, is_tiff, probe_stack, tiff_error};
use crate::data::io::read::{Read, decode_page, load_stack, open_tiff, page_planes};
use crate::data::io::tiff::TiffAxes;
use crate::data::io::write::ImageFormat;
use crate::data::plane::Plane;
use crate::data::stack::{PixelKind, Planes, SliceSource, Stack};

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

/// A TIFF read on demand for a [`Stack`]: slices are decoded when asked for and the last
/// ones kept, up to a memory budget (at least one slice), so that viewing a slice again or
/// stepping back and forth does not decode it again. Shared between threads (the viewer and
/// background jobs): decoding holds a lock on the file.
pub struct PageCache {
    path: PathBuf,
    slices: usize,
    budget: u64,
    inner: Mutex<Kept>,
}

/// A kept slice: its index, its planes and their bytes.
type KeptSlice = (usize, Arc<[Plane<f32>]>, u64);

struct Kept {
    file: TiffSlices,
    /// Most recently used last.
    slices: VecDeque<KeptSlice>,
    bytes: u64,
}

impl std::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PageCache({}: {} slices, budget {} bytes)",
            self.path.display(),
            self.slices,
            self.budget
        )
    }
}

impl PageCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        // A panic while decoding leaves the cache consistent (it is updated after decoding).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SliceSource for PageCache {
    fn path(&self) -> &Path {
        &self.path
    }

    fn slices(&self) -> usize {
        self.slices
    }

    fn kept_bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Never waits: `None` while another thread reads the file.
    fn cached(&self, s: usize) -> Option<Arc<[Plane<f32>]>> {
        let kept = match self.inner.try_lock() {
            Ok(k) => k,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        kept.slices
            .iter()
            .find(|(k, _, _)| *k == s)
            .map(|(_, p, _)| Arc::clone(p))
    }

    fn slice(&self, s: usize) -> Result<Arc<[Plane<f32>]>, DataError> {
        let mut kept = self.lock();
        let hit = kept.slices.iter().position(|(k, _, _)| *k == s);
        if let Some(entry) = hit.and_then(|i| kept.slices.remove(i)) {
            let planes = Arc::clone(&entry.1);
            kept.slices.push_back(entry);
            return Ok(planes);
        }
        let planes: Arc<[Plane<f32>]> = kept.file.slice(s)?.into();
        let size: u64 = planes.iter().map(|p| p.data.len() as u64 * 4).sum();
        while kept.bytes + size > self.budget
            && let Some((_, _, old)) = kept.slices.pop_front()
        {
            kept.bytes -= old;
        }
        kept.bytes += size;
        kept.slices.push_back((s, Arc::clone(&planes), size));
        Ok(planes)
    }
}

/// Opens the TIFF at `path` as a stack read on demand, keeping up to `budget` bytes of decoded
/// slices (at least the last one asked for).
pub fn open_on_demand(path: &Path, budget: u64) -> Result<Stack, DataError> {
    let file = TiffSlices::open(path)?;
    let slices = file.slices();
    Ok(Stack {
        width: file.width,
        height: file.height,
        kind: file.kind,
        channels: file.channels,
        frames: file.frames,
        sources: vec![path.to_path_buf(); slices],
        pixel_size: file.pixel_size.clone(),
        channel_names: file.layout.channel_names.clone(),
        planes: Planes::OnDemand(Arc::new(PageCache {
            path: path.to_path_buf(),
            slices,
            budget,
            inner: Mutex::new(Kept {
                file,
                slices: VecDeque::new(),
                bytes: 0,
            }),
        })),
    })
}

/// The decoded slices a stack read on demand keeps: an eighth of the memory available, at most
/// 1 GiB (1 GiB when unknown).
pub fn cache_budget() -> u64 {
    available_memory().map_or(1 << 30, |m| (m / 8).min(1 << 30))
}

/// Opens the stack at `path` for viewing: in memory when its decoded planes take at most half
/// of the memory available (as [`load_stack`] reads it), otherwise, for a multipage
/// TIFF, read on demand with a cache of [`cache_budget`].
pub fn open_stack(path: &Path) -> Result<Stack, DataError> {
    open_stack_within(path, available_memory())
}

/// [`open_stack`] with `free` bytes of memory available.
fn open_stack_within(path: &Path, free: Option<u64>) -> Result<Stack, DataError> {
    let tiff = path.is_file() && matches!(ImageFormat::from_path(path), Some(ImageFormat::Tiff));
    if tiff && let Some(free) = free {
        let info = probe_stack(path)?;
        let need = (info.pixels as u64).saturating_mul(info.pixel_bytes as u64 + 4);
        if info.slices > 1 && need > free / 2 {
            return open_on_demand(path, cache_budget());
        }
    }
    load_stack(path)
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
            assert_eq!(r.slice(s).unwrap(), &*stack.image(s).unwrap(), "slice {s}");
        }
        assert!(r.slice(6).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A stack read on demand gives the loaded stack's slices and keeps no more decoded slices
    /// than its budget allows (always the last one); the UI's `image_now` never reads the file.
    #[test]
    fn a_stack_read_on_demand_keeps_within_its_budget() {
        let dir = std::env::temp_dir().join(format!("unet-ondemand-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("z.tif");
        let (w, h) = (20, 10);
        let pages: Vec<Plane<f32>> = (0..10)
            .map(|i| Plane {
                width: w,
                height: h,
                data: (0..w * h).map(|p| (i * 1000 + p) as f32).collect(),
            })
            .collect();
        write_f32_tiff(&path, &pages, 2, &TiffAxes::default()).unwrap();
        let whole = load_stack(&path).unwrap();
        // Budget: two slices of 2 channels x 200 px x 4 bytes.
        let lazy = open_on_demand(&path, 2 * 1600).unwrap();
        assert!(lazy.on_demand() && !whole.on_demand());
        assert_eq!((lazy.slices(), lazy.channels), (5, 2));
        assert!(lazy.image_now(3).is_none(), "nothing read yet");
        assert!(lazy.all_planes().unwrap_err().to_string().contains("z.tif"));
        let Planes::OnDemand(cache) = &lazy.planes else {
            unreachable!()
        };
        for s in [0, 1, 2, 3, 4, 3, 0] {
            assert_eq!(
                &*lazy.image(s).unwrap(),
                &*whole.image(s).unwrap(),
                "slice {s}"
            );
            assert!(cache.kept_bytes() <= 2 * 1600, "{}", cache.kept_bytes());
        }
        // The last two asked for are kept: 3 and 0.
        assert!(lazy.image_now(0).is_some() && lazy.image_now(3).is_some());
        assert!(lazy.image_now(4).is_none());
        // Opening for viewing: in memory when it fits in half of what is free (10 planes of
        // 200 px, 4 bytes in the file and 4 decoded: 16000 bytes).
        assert!(!open_stack_within(&path, Some(32_000)).unwrap().on_demand());
        assert!(open_stack_within(&path, Some(31_999)).unwrap().on_demand());
        assert!(!open_stack_within(&path, None).unwrap().on_demand());
        // A budget below one slice still keeps the last slice.
        let tiny = open_on_demand(&path, 1).unwrap();
        assert_eq!(&*tiny.image(2).unwrap(), &*whole.image(2).unwrap());
        assert!(tiny.image_now(2).is_some());
        assert!(tiny.image(5).is_err());
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
