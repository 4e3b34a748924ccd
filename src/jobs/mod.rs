//! Background jobs: the only place that spawns threads. Jobs of several kinds report over one
//! channel of typed messages ([`JobSet`]) that the owner drains once per frame; a job reports
//! progress, can be cancelled or paused, and wakes the UI through a repaint callback.
//!
//! This file only declares and re-exports.

pub mod set;

pub use set::{Delivered, JobContext, JobSet, Running, Waker};
