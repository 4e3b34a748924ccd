//! A stack of images with axes: time points, Z slices and channels of equally sized planes,
//! with the sample type it was stored with and its pixel size.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::data::error::DataError;
use crate::data::io::axes::PixelSize;
use crate::data::plane::Plane;

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

/// Equally sized planes, as `f32` in the file's own value range, in time, Z, channel order:
/// a *slice* is one (t, z) position with `channels` planes (labels and masks are one plane per
/// slice).
#[derive(Clone, Debug)]
pub struct Stack {
    /// Plane width in pixels.
    pub width: usize,
    /// Plane height in pixels.
    pub height: usize,
    /// The sample type of the source file(s).
    pub kind: PixelKind,
    /// Channels of every slice (1 for grey images).
    pub channels: usize,
    /// Time points (1 unless the file says otherwise); the slices are `frames` runs of Z.
    pub frames: usize,
    /// The planes: plane `s * channels + c` is channel `c` of slice `s`, and slice
    /// `t * depth + z` is Z slice `z` of time point `t`; in memory, or read from the file
    /// slice by slice when asked for (a stack larger than memory).
    pub planes: Planes,
    /// For each slice, the file it came from.
    pub sources: Vec<PathBuf>,
    /// The pixel size, when the file says.
    pub pixel_size: Option<PixelSize>,
    /// The channels' names, when the file says (OME `Channel Name`); empty otherwise.
    pub channel_names: Vec<String>,
}

/// Slices decoded from a file when asked for, the last few kept (a stack larger than
/// memory; `data::io::PageCache` for a TIFF). Shared between the viewer and background jobs.
pub trait SliceSource: Send + Sync + std::fmt::Debug {
    /// The file.
    fn path(&self) -> &Path;
    /// Slices of the file.
    fn slices(&self) -> usize;
    /// The channels of slice `s`, from the cache or decoded from the file.
    fn slice(&self, s: usize) -> Result<Arc<[Plane<f32>]>, DataError>;
    /// The channels of slice `s` if they can be had without waiting for the file.
    fn cached(&self, s: usize) -> Option<Arc<[Plane<f32>]>>;
    /// Bytes of decoded planes kept now.
    fn kept_bytes(&self) -> u64;
}

/// Where a stack's planes are.
#[derive(Clone, Debug)]
pub enum Planes {
    /// Every plane, decoded.
    Memory(Vec<Plane<f32>>),
    /// Read from the file slice by slice when asked for, the last few kept.
    OnDemand(Arc<dyn SliceSource>),
}

/// The channels of one slice: borrowed from a stack in memory, or shared with the cache of a
/// stack read on demand.
#[derive(Debug)]
pub enum SliceRef<'a> {
    /// Planes of a stack in memory.
    Borrowed(&'a [Plane<f32>]),
    /// Planes decoded from the file.
    Shared(Arc<[Plane<f32>]>),
}

impl Deref for SliceRef<'_> {
    type Target = [Plane<f32>];
    fn deref(&self) -> &[Plane<f32>] {
        match self {
            Self::Borrowed(p) => p,
            Self::Shared(p) => p,
        }
    }
}

impl Stack {
    /// A stack of grey slices (one channel, one time point).
    pub fn grey(slices: Vec<Plane<f32>>, kind: PixelKind, sources: Vec<PathBuf>) -> Self {
        let (width, height) = slices.first().map_or((0, 0), |p| (p.width, p.height));
        Self {
            width,
            height,
            kind,
            channels: 1,
            frames: 1,
            planes: Planes::Memory(slices),
            sources,
            pixel_size: None,
            channel_names: Vec::new(),
        }
    }

    /// Channel `c` for people: "channel 1", or "channel 1 (DAPI)" when the file names it.
    pub fn channel_label(&self, c: usize) -> String {
        match self.channel_names.get(c).filter(|n| !n.trim().is_empty()) {
            Some(name) => format!("channel {} ({})", c + 1, name.trim()),
            None => format!("channel {}", c + 1),
        }
    }

    /// Number of slices ((t, z) positions).
    pub fn slices(&self) -> usize {
        match &self.planes {
            Planes::Memory(p) => p.len() / self.channels.max(1),
            Planes::OnDemand(cache) => cache.slices(),
        }
    }

    /// Z slices per time point.
    pub fn depth(&self) -> usize {
        self.slices() / self.frames.max(1)
    }

    /// Whether the planes are read from the file slice by slice (a stack larger than memory).
    pub fn on_demand(&self) -> bool {
        matches!(self.planes, Planes::OnDemand(_))
    }

    /// The channels of slice `s`; read from the file when the stack is read on demand (the
    /// error names the file and the page).
    pub fn image(&self, s: usize) -> Result<SliceRef<'_>, DataError> {
        let c = self.channels.max(1);
        match &self.planes {
            Planes::Memory(p) => p
                .get(s * c..(s + 1) * c)
                .map(SliceRef::Borrowed)
                .ok_or_else(|| self.no_slice(s)),
            Planes::OnDemand(cache) => cache.slice(s).map(SliceRef::Shared),
        }
    }

    /// The channels of slice `s` if they can be had without reading the file (always for a
    /// stack in memory; when kept in the cache and the file is not being read by another thread
    /// for a stack read on demand): for the UI thread, which must not wait for the disk.
    pub fn image_now(&self, s: usize) -> Option<SliceRef<'_>> {
        match &self.planes {
            Planes::Memory(_) => self.image(s).ok(),
            Planes::OnDemand(cache) => cache.cached(s).map(SliceRef::Shared),
        }
    }

    /// Every plane, in order, of a stack in memory; a stack read on demand refuses, naming its
    /// file (whatever asks for every plane at once cannot work on it).
    pub fn all_planes(&self) -> Result<&[Plane<f32>], DataError> {
        match &self.planes {
            Planes::Memory(p) => Ok(p),
            Planes::OnDemand(cache) => Err(DataError::invalid(
                cache.path(),
                "it is larger than memory and read slice by slice; this needs every slice in memory at once",
            )),
        }
    }

    fn no_slice(&self, s: usize) -> DataError {
        DataError::invalid(
            self.sources.first().cloned().unwrap_or_default(),
            format!("slice {s} asked for; the stack has {}", self.slices()),
        )
    }

    /// The size of each slice (for checking labels against it).
    pub fn slice_sizes(&self) -> Vec<(usize, usize)> {
        vec![(self.width, self.height); self.slices()]
    }

    /// "3 slices" / "2 channels x 3 slices" / "2 channels x 3 Z x 4 T": the shape, for messages.
    pub fn shape_text(&self) -> String {
        let mut parts = Vec::new();
        if self.channels > 1 {
            parts.push(format!("{} channels", self.channels));
        }
        if self.frames > 1 {
            parts.push(format!("{} Z x {} T", self.depth(), self.frames));
        } else {
            let n = self.slices();
            parts.push(format!("{n} slice{}", if n == 1 { "" } else { "s" }));
        }
        parts.join(" x ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_images_and_channels_index_the_planes() {
        let planes: Vec<Plane<f32>> = (0..12).map(|i| Plane::filled(2, 1, i as f32)).collect();
        let s = Stack {
            width: 2,
            height: 1,
            kind: PixelKind::U8,
            channels: 2,
            frames: 2,
            planes: Planes::Memory(planes),
            sources: vec![PathBuf::from("a.tif"); 6],
            pixel_size: None,
            channel_names: Vec::new(),
        };
        assert_eq!((s.slices(), s.depth()), (6, 3));
        // Slice 4 = t 1, z 1; its channel 1 is plane 9.
        assert_eq!(s.image(4).unwrap()[1].data[0], 9.0);
        assert_eq!(s.image(4).unwrap()[0].data[0], 8.0);
        assert_eq!(s.all_planes().unwrap().len(), 12);
        assert!(s.image(6).is_err());
        assert_eq!(s.shape_text(), "2 channels x 3 Z x 2 T");
        let g = Stack::grey(vec![Plane::filled(3, 2, 0.0)], PixelKind::U16, Vec::new());
        assert_eq!((g.width, g.height, g.slices()), (3, 2, 1));
        assert_eq!(g.shape_text(), "1 slice");
    }
}
