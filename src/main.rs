//! The unet-studio binary: parses the command line and runs the command.

use clap::Parser as _;

/// Large tensors are allocated and freed every iteration; mimalloc reuses their pages
/// instead of returning them to the kernel and faulting them in again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (index in its option enum, v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> std::process::ExitCode {
    // Freed memory goes back to the kernel only after a minute without reuse (mimalloc: 10 ms,
    // v3 1 s). Between two training iterations the activations are freed and allocated
    // again; returned to the kernel they came back as fresh pages that the kernel zeroes,
    // which cost ~10 % of a training step (`clear_page_erms` in perf). With 10 s, an arena's
    // purge still came due every few seconds of a long run and returned whatever was free at
    // that moment: `bench --preset lite --tile 572 --repeats 40` faulted 8011 pages, with
    // 60 s 1190 (10 repeats: 1210, the start-up's), ~4 % of a steady-state step in perf.
    // SAFETY: called before any other thread exists; the option is a plain integer.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 60_000) };
    // burn creates some tensors on `Device::default()` (a restored optimizer's state is
    // materialised there before it moves to its parameter's device). With the wgpu feature
    // that default is the wgpu device: creating it would register burn's own wgpu runtime
    // first, and the GPU that unet-studio sets up (eframe's device, or the adapter of
    // `--device gpu`) could no longer be registered. The CPU is the harmless default.
    if std::env::var_os("BURN_DEVICE").is_none() {
        // SAFETY: the first statements of `main`, before any other thread exists.
        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    }
    // Mesa's Vulkan device-select layer looks for a Wayland session to pick the default GPU;
    // without `XDG_RUNTIME_DIR` (servers, CI, `su`, containers) it prints "error:
    // XDG_RUNTIME_DIR is invalid or not set in the environment." several times on every start
    // that probes a GPU. There is no session for it to ask then, so the layer is turned off
    // (it only orders the adapters; wgpu still chooses among all of them).
    if std::env::var_os("XDG_RUNTIME_DIR").is_none()
        && std::env::var_os("NODEVICE_SELECT").is_none()
    {
        // SAFETY: the first statements of `main`, before any other thread exists.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
    let cli = unet_studio::cli::Cli::parse();
    match unet_studio::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
