//! `worker`: gantry's training process.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// gantry's training worker.
#[derive(Debug, Parser)]
#[command(name = "worker", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Report what libtorch sees (version, threads, CUDA devices) and run one small product on
    /// the automatic device, as JSON. Exits non-zero if `--require-cuda` and CUDA is missing.
    Device {
        /// Fail when no CUDA device is usable (for GPU node checks).
        #[arg(long)]
        require_cuda: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Device { require_cuda } => {
            let report = worker::device::probe();
            println!("{}", serde_json::to_string_pretty(&report).expect("report serialises"));
            if require_cuda && !report.cuda_available {
                eprintln!("error: no CUDA device is usable by libtorch on this machine");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
    }
}
