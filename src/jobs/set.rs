//! A set of background jobs that report over one channel: each job has a kind (at most one
//! job of a kind runs at a time) and sends messages of one type `M`, which the owner drains
//! once per frame and handles in one `match`. Progress and the end of a job are kept per
//! kind; a job that panics ends with a failure naming its label.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};

use crate::ml::cancel::CancelToken;

/// Wakes the UI (e.g. `egui::Context::request_repaint`).
pub type Waker = std::sync::Arc<dyn Fn() + Send + Sync>;

/// Messages in flight at most; a job sending more waits until the owner drains (so none is
/// lost), progress reports beyond it are dropped.
const CAPACITY: usize = 1024;

/// What reaches the owner of a [`JobSet`].
#[derive(Debug, PartialEq)]
pub enum Delivered<K, M> {
    /// A message of a job: one it sent while running, or its result (its last message).
    Message(M),
    /// The job of this kind ended without a result (it panicked, or its thread could not
    /// start); the text says why.
    Failed(K, String),
}

/// Handed to a job's closure.
pub struct JobContext<M> {
    tx: SyncSender<Envelope<M>>,
    waker: Waker,
    id: u64,
    /// Set when the owner cancels the job.
    pub cancel: CancelToken,
}

impl<M> JobContext<M> {
    /// Reports progress (0..=1) and a short message; dropped when the owner is behind.
    pub fn progress(&self, fraction: f32, message: impl Into<String>) {
        let note = Envelope::Progress(self.id, fraction, message.into());
        if self.tx.try_send(note).is_ok() {
            (self.waker)();
        }
    }

    /// Sends a message; waits while the channel is full, so none is lost.
    pub fn send(&self, message: M) {
        if self.tx.send(Envelope::Message(self.id, message)).is_ok() {
            (self.waker)();
        }
    }
}

enum Envelope<M> {
    Progress(u64, f32, String),
    Message(u64, M),
    Done(u64, M),
    Failed(u64, String),
}

/// A running job as the owner sees it.
#[derive(Debug)]
pub struct Running {
    id: u64,
    /// What it does, for the user.
    pub label: String,
    /// Last reported progress (0..=1).
    pub progress: f32,
    /// Last reported message.
    pub message: String,
    cancel: CancelToken,
}

/// Background jobs of kinds `K`, all reporting messages `M` over one channel.
pub struct JobSet<K, M> {
    tx: SyncSender<Envelope<M>>,
    rx: Receiver<Envelope<M>>,
    waker: Waker,
    running: BTreeMap<K, Running>,
    /// Messages read while waiting for one job, delivered by the next drain.
    held: VecDeque<Envelope<M>>,
    next_id: u64,
}

impl<K: Copy + Ord + std::fmt::Debug, M: Send + 'static> JobSet<K, M> {
    /// An empty set whose jobs wake the owner with `waker` (e.g. a repaint request).
    pub fn new(waker: Waker) -> Self {
        let (tx, rx) = sync_channel(CAPACITY);
        Self {
            tx,
            rx,
            waker,
            running: BTreeMap::new(),
            held: VecDeque::new(),
            next_id: 0,
        }
    }

    /// Runs `work` on a new thread as the job of `kind`; its return value is its last
    /// message. Returns `false`, starting nothing, when a job of this kind runs already.
    pub fn spawn(
        &mut self,
        kind: K,
        label: impl Into<String>,
        work: impl FnOnce(&JobContext<M>) -> M + Send + 'static,
    ) -> bool {
        if self.running.contains_key(&kind) {
            return false;
        }
        self.next_id += 1;
        let id = self.next_id;
        let cancel = CancelToken::new();
        let ctx = JobContext {
            tx: self.tx.clone(),
            waker: self.waker.clone(),
            id,
            cancel: cancel.clone(),
        };
        let label = label.into();
        let spawned = std::thread::Builder::new()
            .name(format!("job: {label}"))
            .spawn(move || {
                // A bug or a backend failure (e.g. a GPU out of memory that panics) ends the
                // job with a message instead of leaving the owner waiting forever.
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&ctx)));
                let last = match run {
                    Ok(message) => Envelope::Done(id, message),
                    Err(panic) => Envelope::Failed(id, panic_text(panic.as_ref())),
                };
                // The owner may be gone (the app closed): nothing to do then.
                let _ = ctx.tx.send(last);
                (ctx.waker)();
            });
        if let Err(e) = spawned {
            self.held
                .push_back(Envelope::Failed(id, format!("cannot start a thread: {e}")));
        }
        self.running.insert(
            kind,
            Running {
                id,
                label,
                progress: 0.0,
                message: String::new(),
                cancel,
            },
        );
        true
    }

    /// Whether a job of `kind` runs.
    pub fn running(&self, kind: K) -> bool {
        self.running.contains_key(&kind)
    }

    /// The running job of `kind` (its progress), if any.
    pub fn get(&self, kind: K) -> Option<&Running> {
        self.running.get(&kind)
    }

    /// Whether any job runs.
    pub fn busy(&self) -> bool {
        !self.running.is_empty()
    }

    /// Asks the job of `kind` to stop.
    pub fn cancel(&self, kind: K) {
        if let Some(r) = self.running.get(&kind) {
            r.cancel.cancel();
        }
    }

    /// Asks the job of `kind` to pause at its next check, or to go on.
    pub fn set_paused(&self, kind: K, paused: bool) {
        if let Some(r) = self.running.get(&kind) {
            r.cancel.set_paused(paused);
        }
    }

    /// Whether the job of `kind` was asked to pause.
    pub fn is_paused(&self, kind: K) -> bool {
        self.running
            .get(&kind)
            .is_some_and(|r| r.cancel.is_paused())
    }

    /// Whether the job of `kind` is held at a pause point now.
    pub fn is_held(&self, kind: K) -> bool {
        self.running.get(&kind).is_some_and(|r| r.cancel.is_held())
    }

    /// Everything the jobs sent since the last drain, in order; a job's result or failure
    /// frees its kind. Call once per frame.
    pub fn drain(&mut self) -> Vec<Delivered<K, M>> {
        let mut out = Vec::new();
        while let Some(e) = self.held.pop_front() {
            self.deliver(e, &mut out);
        }
        loop {
            match self.rx.try_recv() {
                Ok(e) => self.deliver(e, &mut out),
                // The set holds a sender itself, so the channel never disconnects.
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return out,
            }
        }
    }

    /// Blocks until the job of `kind` ends and returns its result (`None`: it failed, or
    /// none runs). What other jobs send meanwhile waits for the next [`Self::drain`].
    pub fn wait(&mut self, kind: K) -> Option<M> {
        let id = self.running.get(&kind)?.id;
        let mut mine = None;
        let mut failed = false;
        self.held.retain(|e| match e {
            Envelope::Failed(i, _) if *i == id => {
                failed = true;
                false
            }
            _ => true,
        });
        while !failed && mine.is_none() {
            match self.rx.recv() {
                Ok(Envelope::Done(i, m)) if i == id => mine = Some(m),
                Ok(Envelope::Failed(i, _)) if i == id => failed = true,
                Ok(Envelope::Progress(i, ..)) if i == id => {}
                Ok(e) => self.held.push_back(e),
                Err(_) => failed = true,
            }
        }
        self.running.remove(&kind);
        mine
    }

    fn deliver(&mut self, e: Envelope<M>, out: &mut Vec<Delivered<K, M>>) {
        match e {
            Envelope::Progress(id, fraction, message) => {
                if let Some(r) = self.running.values_mut().find(|r| r.id == id) {
                    r.progress = fraction;
                    r.message = message;
                }
            }
            Envelope::Message(id, m) => {
                if self.kind_of(id).is_some() {
                    out.push(Delivered::Message(m));
                }
            }
            Envelope::Done(id, m) => {
                if let Some(kind) = self.kind_of(id) {
                    self.running.remove(&kind);
                    out.push(Delivered::Message(m));
                }
            }
            Envelope::Failed(id, why) => {
                if let Some(kind) = self.kind_of(id) {
                    self.running.remove(&kind);
                    out.push(Delivered::Failed(kind, why));
                }
            }
        }
    }

    /// The kind of the running job `id` (messages of a job the owner stopped waiting for, or
    /// already waited for, are dropped).
    fn kind_of(&self, id: u64) -> Option<K> {
        self.running
            .iter()
            .find_map(|(k, r)| (r.id == id).then_some(*k))
    }
}

/// The text of a panic's payload.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    enum Kind {
        Count,
        Quick,
        Boom,
    }

    #[derive(Debug, PartialEq)]
    enum Msg {
        Step(u8),
        Counted(u64),
        Quick(i32),
        Boom,
    }

    /// Drains until nothing runs (or 10 s pass).
    fn drain_all(set: &mut JobSet<Kind, Msg>) -> Vec<Delivered<Kind, Msg>> {
        let mut out = Vec::new();
        for _ in 0..5000 {
            out.extend(set.drain());
            if !set.busy() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        out
    }

    #[test]
    fn messages_arrive_in_order_and_results_free_their_kind() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        let mut set: JobSet<Kind, Msg> = JobSet::new(Arc::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
        }));
        assert!(set.spawn(Kind::Quick, "quick", |ctx| {
            ctx.progress(0.5, "half");
            ctx.send(Msg::Step(1));
            ctx.send(Msg::Step(2));
            Msg::Quick(7)
        }));
        assert!(set.running(Kind::Quick));
        // One job of a kind at a time.
        assert!(!set.spawn(Kind::Quick, "again", |_| Msg::Quick(8)));
        let got = drain_all(&mut set);
        assert_eq!(
            got,
            [Msg::Step(1), Msg::Step(2), Msg::Quick(7)].map(Delivered::Message)
        );
        assert!(!set.running(Kind::Quick) && !set.busy());
        assert!(wakes.load(Ordering::Relaxed) >= 3);
        // The kind is free again.
        assert!(set.spawn(Kind::Quick, "again", |_| Msg::Quick(8)));
        assert_eq!(drain_all(&mut set), [Delivered::Message(Msg::Quick(8))]);
    }

    #[test]
    fn cancel_stops_a_job_and_wait_keeps_the_others_messages() {
        let mut set: JobSet<Kind, Msg> = JobSet::new(Arc::new(|| {}));
        set.spawn(Kind::Count, "count", |ctx| {
            let mut n = 0u64;
            while !ctx.cancel.is_cancelled() && n < 1_000_000_000 {
                n += 1;
                if n.is_multiple_of(1000) {
                    std::thread::yield_now();
                }
            }
            Msg::Counted(n)
        });
        set.spawn(Kind::Quick, "quick", |_| Msg::Quick(1));
        std::thread::sleep(Duration::from_millis(20));
        set.cancel(Kind::Count);
        match set.wait(Kind::Count) {
            Some(Msg::Counted(n)) => assert!(n < 1_000_000_000, "cancel stopped the loop"),
            other => panic!("{other:?}"),
        }
        assert!(!set.running(Kind::Count));
        // The quick job's result, read while waiting, comes with the next drain.
        assert_eq!(drain_all(&mut set), [Delivered::Message(Msg::Quick(1))]);
        assert_eq!(set.wait(Kind::Count), None, "nothing runs");
    }

    #[test]
    fn a_panicking_job_ends_with_its_message() {
        let mut set: JobSet<Kind, Msg> = JobSet::new(Arc::new(|| {}));
        set.spawn(Kind::Boom, "the weight map", |ctx| {
            ctx.send(Msg::Boom);
            panic!("out of memory")
        });
        assert_eq!(
            drain_all(&mut set),
            [
                Delivered::Message(Msg::Boom),
                Delivered::Failed(Kind::Boom, "out of memory".into())
            ]
        );
        assert!(!set.busy());
        set.spawn(Kind::Boom, "again", |_| panic!("{}", String::from("owned")));
        assert_eq!(set.wait(Kind::Boom), None);
        assert!(!set.busy() && set.drain().is_empty());
    }

    #[test]
    fn progress_is_kept_per_job() {
        let mut set: JobSet<Kind, Msg> = JobSet::new(Arc::new(|| {}));
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        set.spawn(Kind::Count, "count", move |ctx| {
            ctx.progress(0.25, "a quarter");
            let _ = go_rx.recv();
            Msg::Counted(1)
        });
        let mut seen = None;
        for _ in 0..5000 {
            set.drain();
            if let Some(r) = set.get(Kind::Count)
                && r.progress > 0.0
            {
                seen = Some((r.progress, r.message.clone(), r.label.clone()));
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(seen, Some((0.25, "a quarter".into(), "count".into())));
        go_tx.send(()).unwrap();
        assert_eq!(drain_all(&mut set), [Delivered::Message(Msg::Counted(1))]);
    }
}
