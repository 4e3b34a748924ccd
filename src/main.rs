//! The unet-studio binary: parses the command line and runs the command.

use clap::Parser as _;

/// Large tensors are allocated and freed every iteration; mimalloc reuses their pages
/// instead of returning them to the kernel and faulting them in again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = unet_studio::cli::Cli::parse();
    match unet_studio::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
