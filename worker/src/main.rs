//! `worker`: gantry's training process.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use worker::config::{DeviceSpec, JobConfig};

/// gantry's training worker.
#[derive(Debug, Parser)]
#[command(name = "worker", version, about)]
struct Cli {
    /// Log format: `human` on a terminal, `json` for clusters.
    #[arg(long, global = true, value_enum, default_value_t = dataprep::logging::LogFormat::Human)]
    log_format: dataprep::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a job from a TOML job file in this process; resumes from the output's latest checkpoint.
    Train {
        /// The job file.
        #[arg(long)]
        config: PathBuf,
        /// Override train.steps.
        #[arg(long)]
        steps: Option<u64>,
        /// Override train.device (auto, cpu, cuda, cuda:N).
        #[arg(long)]
        device: Option<DeviceSpec>,
        /// Override output.url.
        #[arg(long)]
        output: Option<String>,
        /// Override data.url.
        #[arg(long)]
        data: Option<String>,
        /// Override train.batch_size.
        #[arg(long)]
        batch_size: Option<i64>,
        /// Override train.seed.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Generate images for chosen classes from a checkpoint.
    Generate {
        /// A checkpoint folder, or a job output (its latest checkpoint).
        #[arg(long)]
        checkpoint: String,
        /// Images per class.
        #[arg(long, default_value_t = 8)]
        count: i64,
        /// Output folder: OUT/<class>/<i>.png.
        #[arg(long)]
        out: PathBuf,
        /// Only this class (name or index); every class when absent.
        #[arg(long)]
        label: Option<String>,
        /// Seed of the latent vectors (the same seed gives the same faces across classes).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also write the label-swap grid (rows: latents, columns: classes) to this PNG.
        #[arg(long)]
        grid: Option<PathBuf>,
        /// Device (auto, cpu, cuda, cuda:N).
        #[arg(long, default_value = "auto")]
        device: DeviceSpec,
    },
    /// Time full training steps (3 critic + 1 generator, book settings) on random data.
    Bench {
        /// Image size.
        #[arg(long, default_value_t = 64)]
        image_size: i64,
        /// Batch size.
        #[arg(long, default_value_t = 128)]
        batch: i64,
        /// Timed steps.
        #[arg(long, default_value_t = 5)]
        steps: u64,
        /// Untimed warm-up steps.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Base channel count (the book's 128).
        #[arg(long, default_value_t = 128)]
        width: i64,
        /// Device (auto, cpu, cuda, cuda:N).
        #[arg(long, default_value = "auto")]
        device: DeviceSpec,
        /// CPU threads for libtorch (0: libtorch's default).
        #[arg(long, default_value_t = 0)]
        threads: i32,
        /// Also print the time of each phase of the step (generator forward, critic scores,
        /// penalty, backward, Adam).
        #[arg(long)]
        profile: bool,
    },
    /// Join a coordinator's pool and run the jobs it assigns until stopped (SIGTERM or Ctrl-C
    /// stop the running job within one step, report it, and exit).
    Serve {
        /// Coordinator address: http://HOST:PORT, or https://HOST:PORT for TLS.
        #[arg(long, env = "GANTRY_COORDINATOR")]
        coordinator: String,
        /// File holding the worker API token (default: $GANTRY_WORKER_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// CA certificate (PEM) that signed the coordinator's certificate, for https.
        #[arg(long, env = "GANTRY_TLS_CA")]
        tls_ca: Option<PathBuf>,
        /// Address (HOST:PORT) this worker's peers dial for the gradient exchange
        /// (default: this host's name, port 29500).
        #[arg(long)]
        advertise: Option<String>,
        /// Device for jobs whose train.device is auto (auto, cpu, cuda, cuda:N).
        #[arg(long, default_value = "auto")]
        device: DeviceSpec,
    },
    /// Report what libtorch sees (whether its CUDA backend is loaded, CUDA devices, threads) and
    /// run one small product on the automatic device, as JSON.
    Device {
        /// Fail when no CUDA device is usable (for GPU node checks).
        #[arg(long)]
        require_cuda: bool,
    },
}

fn main() -> ExitCode {
    worker::keep_freed_memory();
    let cli = Cli::parse();
    dataprep::logging::init(cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", dataprep::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Train {
            config,
            steps,
            device,
            output,
            data,
            batch_size,
            seed,
        } => {
            let mut job = JobConfig::from_file(&config)?;
            if let Some(steps) = steps {
                job.train.steps = steps;
            }
            if let Some(device) = device {
                job.train.device = device;
            }
            if let Some(output) = output {
                job.output.url = output;
            }
            if let Some(data) = data {
                job.data.url = data;
            }
            if let Some(batch_size) = batch_size {
                job.train.batch_size = batch_size;
            }
            if let Some(seed) = seed {
                job.train.seed = seed;
            }
            let runtime = training_runtime()?;
            let summary = worker::train::train(&job, &worker::train::TrainOptions::from_terminal(), runtime.handle())?;
            if summary.steps == summary.resumed_from {
                println!(
                    "already at step {} (train.steps); nothing to train; checkpoint {}",
                    summary.steps, summary.checkpoint
                );
                return Ok(());
            }
            let m = summary.metrics;
            println!(
                "trained to step {} on {} ({:.1} images/s{}); c_loss {:.4} c_wass_loss {:.4} c_gp {:.4} g_loss {:.4}; checkpoint {}",
                summary.steps,
                summary.device,
                summary.images_per_sec,
                if summary.resumed_from > 0 {
                    format!(", resumed from step {}", summary.resumed_from)
                } else {
                    String::new()
                },
                m.c_loss,
                m.c_wass_loss,
                m.c_gp,
                m.g_loss,
                summary.checkpoint
            );
        }
        Command::Generate {
            checkpoint,
            count,
            out,
            label,
            seed,
            grid,
            device,
        } => {
            let options = worker::samples::GenerateOptions {
                checkpoint,
                count,
                out,
                label,
                seed,
                grid,
                device,
            };
            let runtime = tokio::runtime::Runtime::new()?;
            let generated = runtime.block_on(worker::samples::generate(&options))?;
            println!(
                "wrote {} files from {} (step {})",
                generated.files.len(),
                generated.checkpoint,
                generated.step
            );
        }
        Command::Bench {
            image_size,
            batch,
            steps,
            warmup,
            width,
            device,
            threads,
            profile,
        } => {
            if threads > 0 {
                tch::set_num_threads(threads);
            }
            let device = worker::device::resolve(device)?;
            let options = worker::bench::BenchOptions {
                image_size,
                batch,
                steps,
                warmup,
                width,
                device,
                profile,
            };
            println!("{}", worker::bench::run(&options));
        }
        Command::Serve {
            coordinator,
            token_file,
            tls_ca,
            advertise,
            device,
        } => {
            let token = gantry_proto::auth::Token::from_file_or_env(token_file.as_deref(), "GANTRY_WORKER_TOKEN")?;
            let device = worker::device::spec_of(worker::device::resolve(device)?);
            let hostname = hostname();
            let options = worker::agent::AgentOptions {
                coordinator,
                token,
                tls_ca,
                advertise: advertise.unwrap_or_else(|| format!("{hostname}:29500")),
                device,
                hostname,
            };
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(worker::agent::serve(options, shutdown_signal()))?;
        }
        Command::Device { require_cuda } => {
            let report = worker::device::probe();
            println!("{}", serde_json::to_string_pretty(&report)?);
            if require_cuda && !report.cuda_backend_loaded {
                anyhow::bail!(
                    "libtorch's CUDA backend (libtorch_cuda.so) is not loaded: this worker was built \
                     against a CPU-only libtorch"
                );
            }
            if require_cuda && !report.cuda_available {
                anyhow::bail!(
                    "libtorch's CUDA backend is loaded but sees no CUDA device on this machine \
                     (driver, CUDA_VISIBLE_DEVICES)"
                );
            }
        }
    }
    Ok(())
}

/// The runtime of a training process: storage I/O and the data loader's decoding, beside the
/// thread that runs the steps (two threads: the step itself uses libtorch's own pool).
fn training_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// This machine's host name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
