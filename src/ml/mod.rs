//! The network, its loss, training and tiled inference, on one runtime-selected device.

pub mod checkpoint;
pub mod conv;
#[cfg(target_arch = "x86_64")]
pub mod conv_avx2;
pub mod conv_cpu;
#[cfg(target_arch = "x86_64")]
pub mod conv_direct;
#[cfg(target_arch = "x86_64")]
pub mod conv_winograd;
pub mod device;
pub mod infer;
pub mod loss;
pub mod memory;
pub mod optim;
pub mod train;
pub mod unet;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use checkpoint::{Checkpoint, CheckpointMeta, load_checkpoint, save_checkpoint};
pub use device::{ComputeDevice, DeviceChoice, select_device};
pub use infer::{argmax_classes, effective_tile, entropy, predict_fitting, predict_probabilities};
pub use loss::weighted_cross_entropy;
pub use train::{
    OptimizerConfig, StartFrom, TrainConfig, TrainEvent, TrainOutcome, TrainSet, train,
    train_fitting,
};
pub use unet::{Preset, UNet, UNetConfig};

/// Runs `f` on one of rayon's worker threads, the pool the CPU kernels parallelise on (directly
/// when already on one). A network pass is a sequence of about a hundred parallel operations:
/// called from another thread, each of them is handed to the pool while the caller sleeps
/// until it is done (a wake-up per operation, three threads on two cores); from a worker they
/// run as nested joins whose halves the other worker steals. Training steps and tile
/// predictions run here; measured on the lite preset's 252 px training step: 3-7 % faster.
/// On the GPU the operations are queued either way. A panic of `f` (burn's wgpu backend panics
/// when the device runs out of memory, and the smaller-tile retry catches it) reaches the
/// caller.
///
/// (A version whose other workers spun in helpers while `f` ran, to be awake for its next
/// operation, was ~0.4 ms faster per 252 px step on an AVX-512 CPU, but it hung when `f`
/// panicked, and kept a core spinning while `f` waited for the GPU (with software Vulkan, one
/// of the two cores it computes on); it was taken out.)
pub fn in_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

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

/// Errors of the network side.
#[derive(Debug, thiserror::Error)]
pub enum MlError {
    /// Reading or writing files.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// No usable device.
    #[error(transparent)]
    Device(#[from] device::DeviceError),
    /// A checkpoint is unreadable or does not fit.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Nothing (usable) to train on.
    #[error("{0}")]
    NoLabels(String),
    /// A tile size the network cannot use.
    #[error("tile: {0}")]
    Tile(String),
    /// The loss became NaN or infinite; the last checkpoint was kept.
    #[error(
        "training diverged at iteration {iteration} (non-finite loss); the last checkpoint was kept, lower the learning rate"
    )]
    Diverged {
        /// The iteration whose loss was not finite.
        iteration: u64,
    },
    /// The backend failed.
    #[error("compute backend: {0}")]
    Backend(String),
    /// The computation was cancelled.
    #[error("cancelled")]
    Cancelled,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    /// A parallel sum of 0..n, the kind of work `f` does.
    fn parallel_sum(n: u64) -> u64 {
        (0..n).into_par_iter().sum()
    }

    /// `parallel_sum(n)`, by formula.
    fn expect(n: u64) -> u64 {
        n * (n - 1) / 2
    }

    #[test]
    fn compute_pool_runs_f_in_every_arrangement() {
        // From a thread outside the pool, repeatedly.
        for _ in 0..50 {
            assert_eq!(in_compute_pool(|| parallel_sum(100_000)), expect(100_000));
        }
        // Nested: the inner call runs directly on the worker of the outer one.
        let nested = in_compute_pool(|| in_compute_pool(|| parallel_sum(50_000)) + 1);
        assert_eq!(nested, expect(50_000) + 1);
        // Several callers at once: every call finishes with its own result.
        let results: Vec<u64> = std::thread::scope(|s| {
            let calls: Vec<_> = (1..=4u64)
                .map(|i| s.spawn(move || in_compute_pool(|| parallel_sum(i * 30_000))))
                .collect();
            calls.into_iter().map(|c| c.join().unwrap()).collect()
        });
        let expected: Vec<u64> = (1..=4u64).map(|i| expect(i * 30_000)).collect();
        assert_eq!(results, expected);
        // Pools of one and of three workers.
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let r = pool.install(|| in_compute_pool(|| parallel_sum(70_000)));
            assert_eq!(r, expect(70_000), "{threads} threads");
        }
    }

    #[test]
    fn a_panic_of_f_reaches_the_caller_and_the_pool_goes_on() {
        // As the out-of-memory retry meets it: f panics (after parallel work), the caller
        // catches the panic and computes again (a version with spinning helpers kept them
        // spinning after the panic, and its scope waited for them forever). Run in a pool of
        // its own, from outside it and nested on one of its workers, with a watchdog so a hang
        // fails the test.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let outcome = pool.install(|| {
                (0..20)
                    .map(|i| {
                        let caught = std::panic::catch_unwind(|| {
                            in_compute_pool(|| {
                                let s = parallel_sum(10_000 + i);
                                if s > 0 {
                                    panic!("out of memory (test)");
                                }
                                s
                            })
                        });
                        let nested = std::panic::catch_unwind(|| {
                            in_compute_pool(|| in_compute_pool(|| -> u64 { panic!("nested") }))
                        });
                        (
                            caught.is_err(),
                            nested.is_err(),
                            in_compute_pool(|| parallel_sum(100)),
                        )
                    })
                    .collect::<Vec<_>>()
            });
            tx.send(outcome).unwrap();
        });
        let outcome = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("in_compute_pool hung after a panic of f");
        assert_eq!(outcome, vec![(true, true, expect(100)); 20]);
    }
}
