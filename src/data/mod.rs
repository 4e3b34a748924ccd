//! Image stacks, label images and their file formats. No GPU, GUI or deep-learning code here.
//!
//! This file only declares and re-exports; the files below import each other by their own
//! paths.

pub mod error;
pub mod io;
pub mod journal;
pub mod labels;
pub mod painted;
pub mod plane;
pub mod stack;

pub use error::DataError;
pub use io::{
    ImageFormat, MaskStyle, PixelSize, TiffAxes, decode_stack_bytes, load_label_stack, load_stack,
    write_atomic, write_f32_tiff, write_mask, write_mask_coloured,
};
pub use labels::{LabelEncoding, LabelSlice, encode_labels};
pub use painted::SliceLabels;
pub use plane::{Plane, mirror_index, neighbours4};
pub use stack::{PixelKind, Planes, SliceRef, Stack};
