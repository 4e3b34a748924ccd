//! The unet-studio binary: parses the command line and runs the command.

use clap::Parser as _;

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
