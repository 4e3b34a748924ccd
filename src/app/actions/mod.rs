//! What the app does, as methods of [`crate::app::studio::StudioApp`]: each file one part
//! of it (its commands and the polling of its background jobs).

mod augment;
mod collection;
mod compare;
mod dialogs;
mod export;
mod import;
mod jobs;
mod model;
mod viewer;
