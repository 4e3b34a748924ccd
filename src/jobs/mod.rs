//! Background jobs: the only place that spawns threads. A job reports progress and its result
//! over a bounded channel, can be cancelled, and wakes the UI through a repaint callback.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};

use crate::ml::CancelToken;

/// Wakes the UI (e.g. `egui::Context::request_repaint`).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// What a job sends.
#[derive(Debug)]
pub enum JobEvent<T, P> {
    /// Fraction done (0..=1) and a short message.
    Progress(f32, String),
    /// A typed event (for example one training step).
    Event(P),
    /// The result; the last event.
    Done(T),
    /// The job panicked; the last event.
    Failed(String),
}

/// Handle given to the job's closure.
pub struct JobContext<T, P = ()> {
    tx: SyncSender<JobEvent<T, P>>,
    waker: Waker,
    /// Set when the user cancels.
    pub cancel: CancelToken,
}

impl<T, P> JobContext<T, P> {
    /// Reports progress; dropped when the UI is behind (the channel is bounded).
    pub fn progress(&self, fraction: f32, message: impl Into<String>) {
        if self
            .tx
            .try_send(JobEvent::Progress(fraction, message.into()))
            .is_ok()
        {
            (self.waker)();
        }
    }

    /// Sends a typed event; waits while the channel is full, so none is lost (the UI drains
    /// the channel every frame, and `poll` wakes the UI).
    pub fn send(&self, event: P) {
        if self.tx.send(JobEvent::Event(event)).is_ok() {
            (self.waker)();
        }
    }
}

/// A running job.
pub struct Job<T, P = ()> {
    rx: Receiver<JobEvent<T, P>>,
    cancel: CancelToken,
    /// What it does, for the UI.
    pub label: String,
    /// Last reported progress.
    pub progress: f32,
    /// Last reported message.
    pub message: String,
    finished: bool,
    /// Why the job ended without a result (it panicked, or its thread could not start).
    pub failure: Option<String>,
}

impl<T: Send + 'static, P: Send + 'static> Job<T, P> {
    /// Runs `work` on a new thread.
    pub fn spawn(
        label: impl Into<String>,
        waker: Waker,
        work: impl FnOnce(&JobContext<T, P>) -> T + Send + 'static,
    ) -> Self {
        let (tx, rx) = sync_channel(256);
        let cancel = CancelToken::new();
        let ctx = JobContext {
            tx,
            waker,
            cancel: cancel.clone(),
        };
        let label = label.into();
        let name = format!("job: {label}");
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            // A bug or a backend failure (e.g. a GPU out of memory that panics) ends the job
            // with a message instead of leaving the UI waiting forever.
            let event = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&ctx)))
            {
                Ok(result) => JobEvent::Done(result),
                Err(panic) => JobEvent::Failed(
                    panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                        .unwrap_or_else(|| "unknown panic".into()),
                ),
            };
            // The receiver may be gone (UI closed): nothing to do then.
            let _ = ctx.tx.send(event);
            (ctx.waker)();
        });
        Self {
            rx,
            cancel,
            label,
            progress: 0.0,
            message: String::new(),
            failure: spawned
                .as_ref()
                .err()
                .map(|e| format!("cannot start a thread: {e}")),
            finished: spawned.is_err(),
        }
    }
}

impl<T, P> Job<T, P> {
    /// Asks the job to stop.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Asks the job to pause at its next check (`true`) or to go on (`false`); jobs that
    /// never check (see [`CancelToken::wait_while_paused`]) run on.
    pub fn set_paused(&self, paused: bool) {
        self.cancel.set_paused(paused);
    }

    /// Whether the job was asked to pause.
    pub fn is_paused(&self) -> bool {
        self.cancel.is_paused()
    }

    /// Whether the job is held at a pause point now.
    pub fn is_held(&self) -> bool {
        self.cancel.is_held()
    }

    /// Drains progress events (typed events are dropped); returns the result once done.
    pub fn poll(&mut self) -> Option<T> {
        self.poll_events(|_| {})
    }

    /// Drains events, handing typed ones to `on_event`; returns the result once done.
    pub fn poll_events(&mut self, mut on_event: impl FnMut(P)) -> Option<T> {
        loop {
            match self.rx.try_recv() {
                Ok(JobEvent::Event(p)) => on_event(p),
                Ok(JobEvent::Progress(f, m)) => {
                    self.progress = f;
                    self.message = m;
                }
                Ok(JobEvent::Done(t)) => {
                    self.finished = true;
                    return Some(t);
                }
                Ok(JobEvent::Failed(m)) => {
                    self.finished = true;
                    self.failure = Some(m);
                    return None;
                }
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => {
                    self.finished = true;
                    self.failure
                        .get_or_insert_with(|| "the job ended without a result".into());
                    return None;
                }
            }
        }
    }

    /// Whether the job ended (result taken, or the thread died).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Blocks until the result arrives (tests and shutdown only).
    pub fn wait(mut self) -> Option<T> {
        if let Some(t) = self.poll() {
            return Some(t);
        }
        loop {
            match self.rx.recv() {
                Ok(JobEvent::Done(t)) => return Some(t),
                Ok(JobEvent::Progress(..) | JobEvent::Event(_)) => {}
                Ok(JobEvent::Failed(_)) | Err(_) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn progress_result_cancel_and_wakeups() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        let waker: Waker = Arc::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
        });
        let job: Job<u64> = Job::spawn("count", waker.clone(), |ctx| {
            ctx.progress(0.5, "half");
            let mut n = 0u64;
            while !ctx.cancel.is_cancelled() && n < 1_000_000_000 {
                n += 1;
                if n.is_multiple_of(1000) {
                    std::thread::yield_now();
                }
            }
            n
        });
        job.cancel();
        let n = job.wait().unwrap();
        assert!(n < 1_000_000_000, "cancel stopped the loop");
        assert!(wakes.load(Ordering::Relaxed) >= 1);
        let mut quick: Job<i32, u8> = Job::spawn("quick", waker, |ctx| {
            ctx.send(1);
            ctx.send(2);
            7
        });
        let mut events = Vec::new();
        let mut got = None;
        for _ in 0..1000 {
            if let Some(v) = quick.poll_events(|e| events.push(e)) {
                got = Some(v);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(got, Some(7));
        assert_eq!(events, vec![1, 2]);
        assert!(quick.is_finished());
        assert!(quick.failure.is_none());
    }

    #[test]
    fn a_panicking_job_ends_with_its_message() {
        let waker: Waker = Arc::new(|| {});
        let mut job: Job<u8> = Job::spawn("boom", waker, |_| panic!("out of memory"));
        for _ in 0..1000 {
            if job.poll().is_some() || job.is_finished() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert!(job.is_finished());
        assert_eq!(job.failure.as_deref(), Some("out of memory"));
    }
}
