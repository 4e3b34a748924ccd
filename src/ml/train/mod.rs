//! Training: what a run trains on ([`set`]), where it starts (`begin`), how it reports
//! ([`events`]), its validation ([`validate`]) and the loop itself ([`run`]). Its
//! configuration is [`crate::ml::config`].

mod begin;
pub mod events;
pub mod run;
pub mod set;
pub mod validate;

pub use events::{StartFrom, TrainEvent, TrainOutcome};
pub use run::{LAST_STATE_DIR, resume_dir, train, train_fitting};
pub use set::{HeldOutSlice, Sample, TrainSet, target_tensors, target_tensors_with};
