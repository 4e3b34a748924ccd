//! A collection open in the app: a folder of images that differ in size or channels (fields
//! of view of several acquisitions), browsed image by image. Each image has its own labels
//! (with journal and settings) in the collection's work folder, never beside the images, so
//! that the folder still lists only its images; the images share one model, trained on the
//! labels of all of them.

use std::path::{Path, PathBuf};

use crate::data::io::{load_collection, unify_channels, with_channels};
use crate::data::{DataError, LabelSlice, Plane};
use crate::project::document::{Document, train_labels};
use crate::project::work::work_label_path;

/// The images of a collection and where their work is kept.
#[derive(Clone, Debug, PartialEq)]
pub struct Collection {
    /// The folder.
    pub folder: PathBuf,
    /// Its images, in natural name order.
    pub files: Vec<PathBuf>,
    /// Channels every image is given (grey images join colour ones as three equal channels).
    pub channels: usize,
    /// Where the collection's work is kept (the label path of the folder: beside it, or in
    /// the data folder when it is read-only).
    pub work: PathBuf,
    /// Said to the user when the work is kept in the data folder.
    pub work_note: Option<String>,
}

impl Collection {
    /// The collection at `folder`, or `None` when it is one stack (a file, or a folder of
    /// equal images). Reads every image once, to compare them.
    pub fn detect(
        folder: &Path,
        data_dir: Option<&Path>,
        in_data_dir: bool,
    ) -> Result<Option<Self>, DataError> {
        if !folder.is_dir() {
            return Ok(None);
        }
        let mut stacks = load_collection(folder)?;
        if stacks.len() < 2 {
            return Ok(None);
        }
        let channels = unify_channels(&mut stacks)?;
        let (work, work_note) = work_label_path(folder, data_dir, in_data_dir);
        Ok(Some(Self {
            folder: folder.to_path_buf(),
            files: stacks
                .iter()
                .map(|s| s.sources.first().cloned().unwrap_or_default())
                .collect(),
            channels,
            work,
            work_note,
        }))
    }

    /// Where the labels of image `index` are kept:
    /// `<work>.images/<file name>.labels.tif` (the journal and settings beside them).
    pub fn label_path(&self, index: usize) -> PathBuf {
        let name = self
            .files
            .get(index)
            .and_then(|f| f.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("image{index}"));
        self.work
            .with_extension("images")
            .join(format!("{name}.labels.tif"))
    }

    /// The folder of the model all images share (`<work>.model`).
    pub fn model_dir(&self) -> PathBuf {
        self.work.with_extension("model")
    }

    /// How many images have saved labels (or an autosave journal).
    pub fn images_with_work(&self) -> usize {
        (0..self.files.len())
            .filter(|&i| {
                let p = self.label_path(i);
                p.exists() || crate::data::journal::journal_path(&p).exists()
            })
            .count()
    }

    /// The file name of image `index`, for lists.
    pub fn name(&self, index: usize) -> String {
        self.files
            .get(index)
            .and_then(|f| f.file_name())
            .map_or_else(
                || format!("image {index}"),
                |n| n.to_string_lossy().into_owned(),
            )
    }

    /// Opens image `index` as a document whose labels and model belong to the collection.
    pub fn open(&self, index: usize) -> Result<Document, DataError> {
        let file = self.files.get(index).ok_or_else(|| {
            DataError::invalid(&self.folder, format!("the collection has no image {index}"))
        })?;
        let label_path = self.label_path(index);
        if let Some(dir) = label_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        }
        let mut doc = Document::open_at(file, None, label_path, None, false)?;
        with_channels(&mut doc.stack, self.channels)?;
        doc.display = if doc.display.fits(self.channels) {
            doc.display
        } else {
            crate::project::settings::Display::auto(&doc.stack)?
        };
        doc.model_home = Some(self.model_dir());
        doc.work_note.clone_from(&self.work_note);
        Ok(doc)
    }

    /// The images and saved labels of every image but `except` that has labels (read with
    /// their autosave journals), for training on the whole collection: each image's planes
    /// (all channels) per slice, and its labels.
    pub fn labelled_images(&self, except: usize) -> Result<Vec<LabelledImage>, DataError> {
        let mut out = Vec::new();
        for index in (0..self.files.len()).filter(|&i| i != except) {
            let path = self.label_path(index);
            let has_work = path.exists() || crate::data::journal::journal_path(&path).exists();
            if !has_work {
                continue;
            }
            let doc = self.open(index)?;
            let (slices, labels) = train_labels(&doc.labels);
            if labels.iter().all(|l| l.labelled_count() == 0) {
                continue;
            }
            let all: Vec<usize> = (0..doc.stack.channels).collect();
            out.push(LabelledImage {
                name: self.name(index),
                slices: crate::project::sets::picked_slices(&doc.stack, &all, &slices)?,
                labels,
            });
        }
        Ok(out)
    }
}

/// One labelled image of a collection, for training.
#[derive(Clone, Debug)]
pub struct LabelledImage {
    /// Its file name.
    pub name: String,
    /// Its planes (every channel) per painted slice.
    pub slices: Vec<Vec<Plane<f32>>>,
    /// Its labels per painted slice.
    pub labels: Vec<LabelSlice>,
}
