//! The headless project layer: an open stack with its labels, settings and saved work
//! ([`document`], [`settings`], [`work`]), the model versions trained on it ([`models`]) and the
//! recently opened stacks ([`recent`]), and what the command line and the app do alike:
//! reading and checking labels and building a training set and its recipe ([`sets`]),
//! predicting a stack ([`tasks`]). The app drives it; nothing here knows egui.
//!
//! This file only declares and re-exports.

pub mod collection;
pub mod document;
pub mod models;
pub mod recent;
pub mod sets;
pub mod settings;
pub mod tasks;
pub mod work;

pub use document::Document;
pub use models::{LoadedModel, VersionInfo, list_versions, save_version};
pub use settings::{ClassInfo, ProjectSettings, class_color};
pub use work::{SaveWork, Saved};
