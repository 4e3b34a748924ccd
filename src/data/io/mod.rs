//! Reading image stacks (PNG/JPEG/BMP, single and multipage TIFF, folders) and writing masks
//! and float maps (PNG, multipage TIFF with ImageJ metadata). All writes are atomic.

pub mod axes;
pub mod collection;
pub mod files;
pub mod probe;
pub mod read;
pub mod slices;
pub mod stream;
pub mod tiff;
pub mod write;

pub use axes::PixelSize;
pub use collection::{label_files, load_collection, unify_channels, with_channels};
pub use files::{
    FOLDER_LABELS, IMAGE_EXTENSIONS, MAX_EDGE, MAX_SLICE_PIXELS, natural_cmp, resolved,
};
pub use probe::{StackInfo, available_memory, check_memory, probe_stack};
pub use read::{decode_stack_bytes, load_label_stack, load_stack};
pub use slices::{PageCache, TiffSlices, open_on_demand, open_stack};
pub use stream::{MaskStream, Staged, TiffStream, commit};
pub use tiff::TiffAxes;
pub use write::{
    ImageFormat, MaskStyle, encode_f32_tiff, encode_mask, png_slice_paths, write_all_atomic,
    write_atomic, write_f32_tiff, write_mask, write_mask_coloured, write_outputs,
};
