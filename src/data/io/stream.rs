//! Outputs written slice by slice, for stacks larger than memory: masks (PNG per slice or one
//! TIFF) and float TIFFs receive one page at a time into temporary files beside their targets,
//! and [`commit`] renames every file of a run into place at the end, all or nothing (until
//! then, and after a failure or a kill, no target is touched; temporaries of dead processes are
//! removed by the next write there).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use tiff::encoder::{Compression, TiffEncoder, TiffKind, TiffKindBig, TiffKindStandard, colortype};
use tiff::tags::Tag;

use crate::data::error::DataError;
use crate::data::io::tiff::{BIGTIFF_PIXEL_BYTES, TiffAxes, imagej_description, write_resolution};
use crate::data::io::write::{
    ImageFormat, MaskStyle, encode_png, png_slice_paths, remove_stale_slices, temp_for,
};
use crate::data::plane::Plane;

/// Temporary files written and the targets they become; removed when dropped uncommitted.
#[derive(Debug, Default)]
pub struct Staged {
    files: Vec<(PathBuf, PathBuf)>,
    /// PNG stacks written (target, slices): stale slices of longer earlier stacks go.
    png_stacks: Vec<(PathBuf, usize)>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        for (temp, _) in &self.files {
            let _ = std::fs::remove_file(temp);
        }
    }
}

impl Staged {
    fn temp_for(&mut self, target: &Path) -> Result<PathBuf, DataError> {
        let temp = temp_for(target)?;
        self.files.push((temp.clone(), target.to_path_buf()));
        Ok(temp)
    }
}

/// Renames every staged file into place (synced first); on a failure the rest are removed.
pub fn commit(staged: Vec<Staged>) -> Result<(), DataError> {
    let mut all = Staged::default();
    for mut s in staged {
        all.files.append(&mut s.files);
        all.png_stacks.append(&mut s.png_stacks);
    }
    for (temp, target) in &all.files {
        File::open(temp)
            .and_then(|f| f.sync_all())
            .map_err(|e| DataError::io(target, e))?;
    }
    while !all.files.is_empty() {
        let (temp, target) = all.files.remove(0);
        if let Err(e) = std::fs::rename(&temp, &target) {
            let _ = std::fs::remove_file(&temp);
            return Err(DataError::io(&target, e));
        }
    }
    for (target, n) in &all.png_stacks {
        remove_stale_slices(target, *n);
    }
    Ok(())
}

/// One page's samples.
enum Samples<'a> {
    U8(&'a [u8]),
    U16(&'a [u16]),
    F32(&'a [f32]),
}

/// The temporary file, shared between the TIFF encoder (which cannot give its writer back)
/// and the stream, which flushes it at the end and so sees every write error.
#[derive(Clone)]
struct SharedFile(std::sync::Arc<std::sync::Mutex<BufWriter<File>>>);

impl SharedFile {
    fn with<T>(&self, f: impl FnOnce(&mut BufWriter<File>) -> T) -> T {
        f(&mut self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

impl std::io::Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.with(|w| w.write(buf))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.with(std::io::Write::flush)
    }
}

impl std::io::Seek for SharedFile {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.with(|w| w.seek(pos))
    }
}

/// A TIFF written page by page (classic or BigTIFF).
enum Encoder {
    Standard(TiffEncoder<SharedFile, TiffKindStandard>),
    Big(TiffEncoder<SharedFile, TiffKindBig>),
}

fn write_page<K: TiffKind>(
    enc: &mut TiffEncoder<SharedFile, K>,
    (w, h): (u32, u32),
    samples: Samples<'_>,
    (desc, axes): (&str, &TiffAxes),
) -> Result<(), tiff::TiffError> {
    macro_rules! page {
        ($colour:ty, $data:expr) => {{
            let mut img = enc.new_image::<$colour>(w, h)?;
            img.encoder().write_tag(Tag::ImageDescription, desc)?;
            write_resolution(img.encoder(), axes)?;
            img.write_data($data)
        }};
    }
    match samples {
        Samples::U8(d) => page!(colortype::Gray8, d),
        Samples::U16(d) => page!(colortype::Gray16, d),
        Samples::F32(d) => page!(colortype::Gray32Float, d),
    }
}

/// A TIFF with ImageJ metadata written page by page into a staged temporary file.
pub struct TiffStream {
    target: PathBuf,
    file: SharedFile,
    enc: Encoder,
    description: String,
    axes: TiffAxes,
    pages: usize,
    written: usize,
    staged: Staged,
}

impl TiffStream {
    /// A TIFF of `pages` pages of `pixels` pixels in all, `bytes` bytes each (BigTIFF when
    /// they exceed classic TIFF's offsets), described as `slices` x `channels` with `range`.
    fn create(
        target: &Path,
        (pages, pixels, bytes): (usize, u64, u64),
        (channels, range, compress): (usize, (f64, f64), bool),
        axes: &TiffAxes,
    ) -> Result<Self, DataError> {
        let mut staged = Staged::default();
        let temp = staged.temp_for(target)?;
        let file = File::create(&temp).map_err(|e| DataError::io(target, e))?;
        let file = SharedFile(std::sync::Arc::new(std::sync::Mutex::new(BufWriter::new(
            file,
        ))));
        let writer = file.clone();
        let err = |e: tiff::TiffError| DataError::decode(target, format!("TIFF encoding: {e}"));
        let compression = if compress {
            Compression::Deflate(Default::default())
        } else {
            Compression::Uncompressed
        };
        let enc = if pixels.saturating_mul(bytes) > BIGTIFF_PIXEL_BYTES {
            Encoder::Big(
                TiffEncoder::new_big(writer)
                    .map_err(err)?
                    .with_compression(compression),
            )
        } else {
            Encoder::Standard(
                TiffEncoder::new(writer)
                    .map_err(err)?
                    .with_compression(compression),
            )
        };
        let slices = pages / channels.max(1);
        Ok(Self {
            target: target.to_path_buf(),
            file,
            enc,
            description: imagej_description(slices, channels.max(1), Some(range), axes),
            axes: axes.clone(),
            pages,
            written: 0,
            staged,
        })
    }

    /// A float TIFF of `pages` planes of `width x height` (`channels` per slice, channel
    /// fastest), values shown from 0 to 1 (probabilities).
    pub fn probabilities(
        target: &Path,
        (width, height, pages): (usize, usize, usize),
        channels: usize,
        axes: &TiffAxes,
    ) -> Result<Self, DataError> {
        let pixels = (width * height) as u64 * pages as u64;
        Self::create(
            target,
            (pages, pixels, 4),
            (channels, (0.0, 1.0), false),
            axes,
        )
    }

    fn push(&mut self, (w, h): (usize, usize), samples: Samples<'_>) -> Result<(), DataError> {
        if self.written == self.pages {
            return Err(DataError::invalid(
                &self.target,
                format!("more than the {} pages announced", self.pages),
            ));
        }
        let err =
            |e: tiff::TiffError| DataError::decode(&self.target, format!("TIFF encoding: {e}"));
        let size = (w as u32, h as u32);
        let meta = (self.description.as_str(), &self.axes);
        match &mut self.enc {
            Encoder::Standard(e) => write_page(e, size, samples, meta),
            Encoder::Big(e) => write_page(e, size, samples, meta),
        }
        .map_err(err)?;
        self.written += 1;
        Ok(())
    }

    /// Appends a float page.
    pub fn push_f32(&mut self, plane: &Plane<f32>) -> Result<(), DataError> {
        self.push((plane.width, plane.height), Samples::F32(&plane.data))
    }

    /// The file, complete, staged for [`commit`].
    pub fn finish(self) -> Result<Staged, DataError> {
        if self.written != self.pages {
            return Err(DataError::invalid(
                &self.target,
                format!("{} of {} pages written", self.written, self.pages),
            ));
        }
        let Self {
            enc,
            staged,
            target,
            file,
            ..
        } = self;
        drop(enc);
        file.with(std::io::Write::flush)
            .map_err(|e| DataError::io(&target, e))?;
        Ok(staged)
    }
}

/// A mask written slice by slice: one PNG per slice (`stem_0000.png`, ...) or one TIFF.
pub struct MaskStream {
    target: PathBuf,
    style: MaskStyle,
    eight_bit: bool,
    slices: usize,
    written: usize,
    sink: MaskSink,
}

enum MaskSink {
    Png(Vec<PathBuf>, Staged),
    Tiff(Box<TiffStream>),
}

impl MaskStream {
    /// A mask of `slices` slices of `width x height` with class ids up to `classes`, in
    /// `style`, at `target` (`.png` or `.tif`); `axes` as the stack's.
    pub fn create(
        target: &Path,
        (width, height, slices): (usize, usize, usize),
        classes: usize,
        style: MaskStyle,
        axes: &TiffAxes,
    ) -> Result<Self, DataError> {
        let max = match style {
            MaskStyle::Binary => 255,
            _ => classes.max(1),
        };
        let eight_bit = max <= 255 && style != MaskStyle::Instances16;
        let sink = match ImageFormat::from_path(target) {
            Some(ImageFormat::Png) => {
                MaskSink::Png(png_slice_paths(target, slices), Staged::default())
            }
            Some(ImageFormat::Tiff) => {
                let pixels = (width * height) as u64 * slices as u64;
                MaskSink::Tiff(Box::new(TiffStream::create(
                    target,
                    (slices, pixels, if eight_bit { 1 } else { 2 }),
                    (1, (0.0, max as f64), true),
                    axes,
                )?))
            }
            None => {
                return Err(DataError::invalid(
                    target,
                    "unknown output format: use a .png, .tif or .tiff ending",
                ));
            }
        };
        Ok(Self {
            target: target.to_path_buf(),
            style,
            eight_bit,
            slices,
            written: 0,
            sink,
        })
    }

    /// The files this mask becomes: one TIFF, or a PNG per slice.
    pub fn targets(&self) -> Vec<PathBuf> {
        match &self.sink {
            MaskSink::Png(paths, _) => paths.clone(),
            MaskSink::Tiff(_) => vec![self.target.clone()],
        }
    }

    /// Appends the next slice's classes.
    pub fn push(&mut self, classes: &Plane<u16>) -> Result<(), DataError> {
        let styled = match self.style {
            MaskStyle::Binary => classes.map(|v| if v >= 2 { 255 } else { 0 }),
            MaskStyle::Classes | MaskStyle::Instances16 => classes.clone(),
        };
        let size = (styled.width, styled.height);
        match &mut self.sink {
            MaskSink::Png(paths, staged) => {
                let target = paths.get(self.written).cloned().ok_or_else(|| {
                    DataError::invalid(&self.target, "more slices than announced")
                })?;
                let bytes = encode_png(&target, &styled, self.eight_bit)?;
                let temp = staged.temp_for(&target)?;
                std::fs::write(&temp, bytes).map_err(|e| DataError::io(&target, e))?;
            }
            MaskSink::Tiff(t) if self.eight_bit => {
                let px: Vec<u8> = styled.data.iter().map(|&v| v as u8).collect();
                t.push(size, Samples::U8(&px))?;
            }
            MaskSink::Tiff(t) => t.push(size, Samples::U16(&styled.data))?,
        }
        self.written += 1;
        Ok(())
    }

    /// The mask, complete, staged for [`commit`].
    pub fn finish(self) -> Result<Staged, DataError> {
        match self.sink {
            MaskSink::Png(_, mut staged) => {
                if self.written != self.slices {
                    return Err(DataError::invalid(
                        &self.target,
                        format!("{} of {} slices written", self.written, self.slices),
                    ));
                }
                staged.png_stacks.push((self.target, self.slices));
                Ok(staged)
            }
            MaskSink::Tiff(t) => t.finish(),
        }
    }
}
