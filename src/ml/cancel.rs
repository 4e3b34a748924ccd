//! Cancelling and pausing a long computation from another thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shared flags that ask a long computation to stop, or to pause, at its next check.
#[derive(Clone, Debug, Default)]
pub struct CancelToken {
    cancelled: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    held: Arc<AtomicBool>,
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks the computation to stop.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }
    /// Whether stopping was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
    /// Asks the computation to pause (`true`) or to go on (`false`).
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }
    /// Whether pausing was asked for.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }
    /// Whether the computation is held in [`Self::wait_while_paused`] right now (it got
    /// there after a pause was asked for and has not gone on).
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }
    /// Blocks while paused and not cancelled; returns how long it waited.
    pub fn wait_while_paused(&self) -> std::time::Duration {
        let start = std::time::Instant::now();
        while self.is_paused() && !self.is_cancelled() {
            self.held.store(true, Ordering::Release);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.held.store(false, Ordering::Release);
        start.elapsed()
    }
}
