//! The thread pool the CPU kernels parallelise on, and running a network pass on it.

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
