//! File > Import labels: masks or label images made elsewhere (Fiji, ilastik, another
//! annotator) become the painted labels, in one of the three encodings, as one undoable
//! stroke. The file is read in the background.
//!
//! This file holds the import's state; its commands are in `actions/import.rs`, its window in
//! [`crate::ui::windows`].

use crate::data::{DataError, LabelEncoding, Plane};
use std::path::PathBuf;

/// What the import job returns: the file and its labels as classes.
pub(crate) type ImportResult = Result<(PathBuf, Vec<Plane<u8>>), DataError>;

/// State of the import window.
pub struct ImportView {
    /// Window open.
    pub open: bool,
    /// The label image, stack or folder to import.
    pub path: String,
    /// How its values map to classes.
    pub encoding: LabelEncoding,
    /// Keep painted labels where the file has none (0).
    pub merge: bool,
}

impl Default for ImportView {
    fn default() -> Self {
        Self {
            open: false,
            path: String::new(),
            encoding: LabelEncoding::Classes,
            merge: false,
        }
    }
}
