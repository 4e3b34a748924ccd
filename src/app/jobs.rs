//! The app's background work as one message stream: every job has a [`JobKind`] and sends
//! [`Message`]s, which `StudioApp::poll_jobs` (in `actions/jobs.rs`) drains once per frame and
//! applies in one `match`.

use std::path::PathBuf;

use crate::app::augment_view::AugmentSample;
use crate::app::compare::Comparison;
use crate::app::import::ImportResult;
use crate::app::model::{GapKey, PredictResult, TrainResult, WeightKey};
use crate::data::{DataError, Plane};
use crate::jobs::JobSet;
use crate::ml::{MlError, TrainEvent};
use crate::project::collection::Collection;
use crate::project::{Document, LoadedModel, Saved, VersionInfo};

/// An open job's result: the document, the model found for it, a warning, the model
/// versions trained on it, and the collection it belongs to with its index there (or why it
/// failed).
pub(crate) type OpenResult = Result<
    (
        Document,
        Option<LoadedModel>,
        Option<String>,
        Vec<VersionInfo>,
        Option<(Collection, usize)>,
    ),
    DataError,
>;

/// What a background job does; at most one job of a kind runs at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum JobKind {
    /// Opening a stack with its labels and model.
    Open,
    /// Autosave or full save of the labels.
    SaveLabels,
    /// Saving class names, colours and contrast.
    SaveSettings,
    /// Reading or updating the recent files.
    Recent,
    /// Writing an export.
    Export,
    /// Training or fine-tuning.
    Train,
    /// Predicting slices.
    Predict,
    /// Loading a model version.
    LoadModel,
    /// Saving the model to a folder.
    SaveModel,
    /// The weight map of the shown slice.
    WeightMap,
    /// The gap-closing lines of the shown slice's mask.
    GapLines,
    /// A random elastic deformation of the shown slice.
    Deform,
    /// Two model versions on the shown slice.
    Compare,
    /// Reading labels to import.
    Import,
    /// The system's file dialog.
    FileDialog,
    /// Reading a slice of a stack read on demand.
    ReadSlice,
}

impl JobKind {
    /// What failed, in the error shown when a job of this kind ends without a result.
    pub fn what(self) -> &'static str {
        match self {
            Self::Open => "opening",
            Self::SaveLabels => "saving labels",
            Self::SaveSettings => "saving settings",
            Self::Recent => "the list of recent files",
            Self::Export => "export",
            Self::Train => "training (the previous model is kept)",
            Self::Predict => "prediction",
            Self::LoadModel => "loading the model",
            Self::SaveModel => "saving the model",
            Self::WeightMap => "the weight map",
            Self::GapLines => "closing the mask's gaps",
            Self::Deform => "the deformation",
            Self::Compare => "comparing model versions",
            Self::Import => "importing labels",
            Self::FileDialog => "the file dialog",
            Self::ReadSlice => "reading the slice",
        }
    }
}

/// Everything a background job tells the app.
pub enum Message {
    /// A stack opened (or why not).
    Opened(Box<OpenResult>),
    /// A label save ended.
    LabelsSaved(Result<Saved, DataError>),
    /// A settings save ended.
    SettingsSaved(Result<(), DataError>),
    /// The recent files as now stored.
    RecentFiles(Result<Vec<PathBuf>, DataError>),
    /// An export ended: the files written and a summary.
    Exported(Result<(Vec<PathBuf>, String), DataError>),
    /// A training run's step, validation, snapshot, ...
    Train(TrainEvent),
    /// A training run ended.
    Trained(Box<TrainResult>),
    /// A prediction ended.
    Predicted(PredictResult),
    /// A model version was loaded.
    ModelLoaded(Box<Result<LoadedModel, MlError>>),
    /// The model was saved to a folder.
    ModelSaved(Result<PathBuf, MlError>),
    /// A weight map was computed.
    WeightMap(WeightKey, Plane<f32>),
    /// The gap-closing lines of a slice's mask were computed (1 on a line).
    GapLines(GapKey, Plane<u8>),
    /// A deformation was drawn.
    Deformed(Box<AugmentSample>),
    /// Two versions were compared.
    Compared(Box<Result<Comparison, MlError>>),
    /// Labels to import were read.
    Imported(ImportResult),
    /// The system's file dialog closed: the chosen path, if any.
    Picked(Option<PathBuf>),
    /// A slice of a stack read on demand was read into its cache (or why not).
    SliceRead(usize, Result<(), DataError>),
}

/// The app's jobs.
pub type Jobs = JobSet<JobKind, Message>;
