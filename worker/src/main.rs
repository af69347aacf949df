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
    #[arg(long, global = true, value_enum, default_value_t = base::logging::LogFormat::Human)]
    log_format: base::logging::LogFormat,
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
        /// Run as this rank of a data-parallel group of --world-size processes (each started
        /// the same way with its own rank), meeting at --rendezvous.
        #[arg(long, requires_all = ["world_size", "rendezvous", "secret"])]
        rank: Option<usize>,
        /// Ranks in the group (job.workers must say the same).
        #[arg(long, requires = "rank")]
        world_size: Option<usize>,
        /// Rank 0's rendezvous store, HOST:PORT: rank 0 listens there, the others connect.
        #[arg(long, requires = "rank")]
        rendezvous: Option<String>,
        /// Shared by the group's processes only; a process without it cannot join.
        #[arg(long, env = "GANTRY_GROUP_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Address this rank's Gloo transport listens on and its peers dial (default: this host's
        /// name, else loopback).
        #[arg(long, requires = "rank")]
        bind_host: Option<String>,
        /// Ranks of the group on this host: with train.threads = 0 they share its cores.
        #[arg(long, default_value_t = 1)]
        ranks_on_host: usize,
        /// Memory this rank may use (e.g. 8GiB; default: what the host has available, on the
        /// CPU): a job whose estimate exceeds it is refused before anything is allocated.
        #[arg(long, value_parser = gantry_job::memory::parse_bytes)]
        memory_limit: Option<u64>,
        #[command(flatten)]
        allow: AllowArgs,
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
    /// Evaluate a checkpoint's generator: conditional accuracy per class, the same-latent label
    /// swap, and a Fréchet distance in the features of a classifier trained on the dataset's real
    /// train split (cached in the run's output; not comparable with Inception FID). Writes
    /// <output>/eval/step-NNNNNNN.json and prints a summary.
    Eval {
        /// A checkpoint folder (<output>/checkpoints/step-N), or a job output (its latest checkpoint).
        #[arg(long)]
        checkpoint: String,
        /// Images generated per class (default: the job's train.eval_samples).
        #[arg(long)]
        samples: Option<u64>,
        /// Device (auto, cpu, cuda, cuda:N).
        #[arg(long, default_value = "auto")]
        device: DeviceSpec,
        /// Dataset URL (default: the job's data.url), for a dataset that has moved.
        #[arg(long)]
        data: Option<String>,
        /// Print the whole report as JSON instead of the summary.
        #[arg(long)]
        json: bool,
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
        /// penalty, backward, gradient exchange, Adam).
        #[arg(long)]
        profile: bool,
        /// Data-parallel ranks on this host (Gloo on loopback): this process is rank 0 and
        /// starts the others; --batch is then each rank's, and images/s counts all ranks.
        #[arg(long, default_value_t = 1)]
        ranks: usize,
        /// Run as this rank of a benchmark group (started by rank 0).
        #[arg(long, hide = true, requires = "rendezvous")]
        rank: Option<usize>,
        /// Rank 0's store of a benchmark group.
        #[arg(long, hide = true)]
        rendezvous: Option<String>,
    },
    /// Join a coordinator's pool and run the jobs it assigns until stopped. SIGTERM or Ctrl-C
    /// (an eviction, the end of an allocation, a preemption) make the running job's gang save a
    /// checkpoint at the next step boundary and stop; the job goes back to the queue without
    /// counting a restart, and this worker leaves the pool.
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
        /// Address peers dial for the gradient exchange, HOST or HOST:PORT (rank 0 of a gang
        /// hosts the rendezvous store on PORT). Without a port (or with 0) the worker takes a
        /// free one and keeps it, so several workers share a node. Default host: the address of
        /// --ifname, else this host's name.
        #[arg(long, env = "GANTRY_ADVERTISE")]
        advertise: Option<String>,
        /// Network interface of the gradient exchange (e.g. ib0, eth1): its IPv4 address is
        /// advertised, and Gloo and NCCL use it (GLOO_SOCKET_IFNAME and NCCL_SOCKET_IFNAME,
        /// unless set already).
        #[arg(long, env = "GANTRY_SOCKET_IFNAME")]
        ifname: Option<String>,
        /// Seconds a running job may take, once this worker is told to shut down, to reach its
        /// next step boundary and save a checkpoint before it is killed (keep it below the
        /// cluster's grace period, e.g. Kubernetes' terminationGracePeriodSeconds).
        #[arg(long, default_value_t = worker::agent::SHUTDOWN_GRACE.as_secs_f64())]
        shutdown_grace_s: f64,
        /// Device for jobs whose train.device is auto (auto, cpu, cuda, cuda:N).
        #[arg(long, default_value = "auto")]
        device: DeviceSpec,
        /// Memory a rank may use here (e.g. 20GiB; default: the device's or host's total): the
        /// coordinator places only jobs whose estimate fits, and a rank checks again.
        #[arg(long, value_parser = gantry_job::memory::parse_bytes)]
        memory_limit: Option<u64>,
        #[command(flatten)]
        allow: AllowArgs,
        /// Serve Prometheus metrics (step time, images/s, time in collectives, checkpoint
        /// writes, loader wait) at http://ADDR/metrics, e.g. 0.0.0.0:9400 (port 0: a free port,
        /// logged).
        #[arg(long, env = "GANTRY_METRICS_LISTEN")]
        metrics_listen: Option<std::net::SocketAddr>,
    },
    /// Run one rank of a checked exchange between processes (all-reduce, broadcast, barrier):
    /// every rank verifies its results exactly and prints JSON lines (rank 0 first prints its
    /// store's port, useful with --address HOST:0).
    CollectiveCheck {
        #[command(flatten)]
        group: GroupArgs,
        /// Device of the tensors: cpu (Gloo) or cuda:N (NCCL).
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        /// A fault to play instead of taking part (for tests of the peers' failures).
        #[arg(long, value_enum, default_value_t = worker::collective::check::Fault::None, hide = true)]
        fault: worker::collective::check::Fault,
    },
    /// Run one attempt of an assignment read from stdin, as the child of `worker serve`.
    #[command(hide = true)]
    Attempt {
        /// Device for jobs whose train.device is auto.
        #[arg(long, default_value = "auto")]
        device: DeviceSpec,
        /// Memory the rank may use, bytes.
        #[arg(long)]
        memory_limit: Option<u64>,
        #[command(flatten)]
        allow: AllowArgs,
    },
    /// Compute, as one rank of a data-parallel group on the CPU (or alone with --reference),
    /// what data-parallel training guarantees, and write it as safetensors (for the tests).
    #[command(hide = true)]
    ParallelCheck {
        #[command(flatten)]
        group: GroupArgs,
        /// Full training steps to take; 0: one critic update's averaged gradients.
        #[arg(long, default_value_t = 0)]
        steps: u64,
        /// Compute the mean of the world's gradients in this one process instead of joining.
        #[arg(long)]
        reference: bool,
        /// Where to write the tensors.
        #[arg(long)]
        out: PathBuf,
    },
    /// Measure all-reduce bus bandwidth between 2, 3 and 4 processes on loopback, beside a plain
    /// memory copy.
    BenchAllreduce {
        /// Group sizes to measure.
        #[arg(long, value_delimiter = ',', default_value = "2,3,4")]
        ranks: Vec<usize>,
        /// Buffer sizes, MiB of f32.
        #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
        sizes_mib: Vec<usize>,
        /// libtorch threads per process (each rank and the copy).
        #[arg(long, default_value_t = 1)]
        threads: i32,
        /// MiB all-reduced per size and group (at least 3 timed exchanges).
        #[arg(long, default_value_t = 512)]
        budget_mib: usize,
        /// Seconds a rank waits for its peers.
        #[arg(long, default_value_t = 60.0)]
        timeout_s: f64,
        /// Run as this rank of a benchmark group (started by the benchmark itself).
        #[arg(long, hide = true, requires_all = ["world_size", "address", "secret"])]
        rank: Option<usize>,
        /// Size of the group this rank belongs to.
        #[arg(long, hide = true)]
        world_size: Option<usize>,
        /// Rank 0's store address.
        #[arg(long, hide = true)]
        address: Option<String>,
        /// The group's secret.
        #[arg(long, hide = true)]
        secret: Option<String>,
    },
    /// Report what libtorch sees (whether its CUDA backend is loaded, CUDA devices, threads) and
    /// run one small product on the automatic device, as JSON.
    Device {
        /// Fail when no CUDA device is usable (for GPU node checks).
        #[arg(long)]
        require_cuda: bool,
    },
}

/// The storage this worker lets jobs touch.
#[derive(Debug, Clone, clap::Args)]
struct AllowArgs {
    /// A storage prefix jobs may read datasets from here (repeatable; comma-separated in the
    /// variable); with neither list, anywhere. Local paths are checked with symlinks resolved.
    #[arg(long, env = "GANTRY_ALLOW_READ", value_delimiter = ',')]
    allow_read: Vec<String>,
    /// A storage prefix jobs may write runs into (and read from) here.
    #[arg(long, env = "GANTRY_ALLOW_WRITE", value_delimiter = ',')]
    allow_write: Vec<String>,
}

impl AllowArgs {
    fn parse(&self) -> anyhow::Result<worker::train::Allow> {
        Ok(worker::train::Allow {
            read: base::access::Prefixes::new(&self.allow_read).map_err(anyhow::Error::msg)?,
            write: base::access::Prefixes::new(&self.allow_write).map_err(anyhow::Error::msg)?,
        })
    }
}

/// Where a rank of a collective group meets its peers.
#[derive(Debug, clap::Args)]
struct GroupArgs {
    /// Rank 0's store, HOST:PORT (rank 0 listens there; port 0: any free port).
    #[arg(long)]
    address: String,
    /// This process's rank.
    #[arg(long)]
    rank: usize,
    /// Number of ranks.
    #[arg(long)]
    world_size: usize,
    /// Job name (namespaces the store).
    #[arg(long, default_value = "collective-check")]
    job: String,
    /// Attempt of the job.
    #[arg(long, default_value_t = 0)]
    attempt: u32,
    /// Secret shared by the ranks of the attempt.
    #[arg(long, env = "GANTRY_GROUP_SECRET")]
    secret: String,
    /// Address this rank's Gloo transport listens on (default: this host's name, else loopback).
    #[arg(long)]
    bind_host: Option<String>,
    /// Seconds to wait for peers (store, group, each collective, the barrier).
    #[arg(long, default_value_t = 60.0)]
    timeout_s: f64,
}

impl GroupArgs {
    fn spec(self, device: tch::Device) -> anyhow::Result<worker::collective::GroupSpec> {
        let mut spec = worker::collective::GroupSpec::new(
            self.address,
            self.rank,
            self.world_size,
            self.job,
            self.attempt,
            self.secret,
            device,
        );
        spec.bind_host = self.bind_host;
        spec.timeout = seconds(self.timeout_s)?;
        Ok(spec)
    }
}

fn main() -> ExitCode {
    worker::keep_freed_memory();
    // tch panics with libtorch's whole C++ stack in the message: print its first line and where.
    std::panic::set_hook(Box::new(|info| {
        let message = base::panic::message(info.payload());
        let location = info.location().map(|l| format!(" at {l}")).unwrap_or_default();
        eprintln!(
            "panicked{location}: {}",
            worker::torch_guard::libtorch_message(&message)
        );
    }));
    let cli = Cli::parse();
    base::logging::init(cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", base::error_chain(e.as_ref()));
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
            rank,
            world_size,
            rendezvous,
            secret,
            bind_host,
            ranks_on_host,
            memory_limit,
            allow,
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
            let mut options = worker::train::TrainOptions::from_terminal();
            options.ranks_on_host = ranks_on_host;
            options.memory_limit = memory_limit;
            options.allow = allow.parse()?;
            if let (Some(rank), Some(world_size), Some(address), Some(secret)) = (rank, world_size, rendezvous, secret)
            {
                let name = if job.job.name.is_empty() {
                    "local"
                } else {
                    job.job.name.as_str()
                };
                let device = worker::device::resolve(job.train.device)?;
                let mut spec = worker::collective::GroupSpec::new(address, rank, world_size, name, 0, secret, device);
                spec.bind_host = bind_host;
                spec.timeout = std::time::Duration::from_secs_f64(job.train.collective_timeout_s);
                // Only rank 0 draws a progress bar.
                options.progress &= rank == 0;
                options.group = Some(spec);
            }
            let runtime = training_runtime()?;
            let summary = worker::train::train(&job, &options, runtime.handle())?;
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
        Command::Eval {
            checkpoint,
            samples,
            device,
            data,
            json,
        } => {
            let options = worker::eval::EvalOptions {
                checkpoint,
                samples,
                device,
                data,
                settings: worker::eval::ClassifierSettings::default(),
            };
            let runtime = training_runtime()?;
            let done = worker::eval::evaluate_checkpoint(&options, runtime.handle())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&done.report)?);
            } else {
                print!("{}", done.report.summary(&done.url));
            }
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
            ranks,
            rank,
            rendezvous,
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
            if ranks <= 1 {
                println!("{}", worker::bench::run(&options, &mut worker::collective::Single)?);
                return Ok(());
            }
            let secret = "bench";
            let (address, others) = match (rank, rendezvous) {
                (Some(rank), Some(address)) => (
                    worker::collective::GroupSpec::new(address, rank, ranks, "bench", 0, secret, device),
                    Vec::new(),
                ),
                _ => {
                    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
                    let address = format!("127.0.0.1:{port}");
                    let args: Vec<String> = std::env::args().skip(1).collect();
                    let others = (1..ranks)
                        .map(|r| {
                            std::process::Command::new(std::env::current_exe()?)
                                .args(&args)
                                .args(["--rank", &r.to_string(), "--rendezvous", &address])
                                .stdout(std::process::Stdio::null())
                                .spawn()
                        })
                        .collect::<std::io::Result<Vec<_>>>()?;
                    (
                        worker::collective::GroupSpec::new(address, 0, ranks, "bench", 0, secret, device),
                        others,
                    )
                }
            };
            let mut spec = address;
            spec.bind_host = Some("127.0.0.1".to_string());
            let mut group = worker::collective::connect(&spec)?;
            let result = worker::bench::run(&options, group.as_mut())?;
            if spec.rank == 0 {
                println!("{result}");
            }
            for mut other in others {
                let status = other.wait()?;
                anyhow::ensure!(status.success(), "a benchmark rank failed ({status})");
            }
        }
        Command::Serve {
            coordinator,
            token_file,
            tls_ca,
            advertise,
            ifname,
            shutdown_grace_s,
            device,
            memory_limit,
            allow,
            metrics_listen,
        } => {
            allow.parse()?;
            let token = gantry_proto::auth::Token::from_file_or_env(token_file.as_deref(), "GANTRY_WORKER_TOKEN")?;
            let device = worker::device::spec_of(worker::device::resolve(device)?);
            let hostname = hostname();
            let (advertise, port_hold) = worker::address::resolve(advertise.as_deref(), ifname.as_deref(), &hostname)?;
            let options = worker::agent::AgentOptions {
                coordinator,
                token,
                tls_ca,
                advertise,
                port_hold,
                ifname,
                shutdown_grace: seconds(shutdown_grace_s)?,
                device,
                hostname,
                program: std::env::current_exe()?,
                memory_limit,
                allow_read: allow.allow_read,
                allow_write: allow.allow_write,
                metrics_listen,
            };
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(worker::agent::serve(options, shutdown_signal()))?;
        }
        Command::Attempt {
            device,
            memory_limit,
            allow,
        } => {
            let base = worker::train::TrainOptions {
                memory_limit,
                allow: allow.parse()?,
                ..Default::default()
            };
            worker::agent::run_attempt(device, base)?
        }
        Command::ParallelCheck {
            group,
            steps,
            reference,
            out,
        } => {
            tch::set_num_threads(1);
            let tensors = if reference {
                let world_size = group.world_size;
                std::collections::HashMap::from([(
                    "critic_gradient".to_string(),
                    worker::parallel_check::reference_gradient(world_size),
                )])
            } else {
                let check = match steps {
                    0 => worker::parallel_check::Check::Gradient,
                    n => worker::parallel_check::Check::Steps(n),
                };
                let mut ranks = worker::collective::connect(&group.spec(tch::Device::Cpu)?)?;
                worker::parallel_check::run(check, ranks.as_mut())?
            };
            std::fs::write(&out, worker::checkpoint::to_safetensors(tensors.iter())?)?;
        }
        Command::CollectiveCheck { group, device, fault } => {
            let device = worker::device::resolve(device)?;
            let spec = group.spec(device)?;
            worker::collective::check::run(&spec, fault, &mut std::io::stdout())?;
        }
        Command::BenchAllreduce {
            ranks,
            sizes_mib,
            threads,
            budget_mib,
            timeout_s,
            rank,
            world_size,
            address,
            secret,
        } => {
            let timeout = seconds(timeout_s)?;
            if let (Some(rank), Some(world_size), Some(address), Some(secret)) = (rank, world_size, address, secret) {
                tch::set_num_threads(threads);
                let mut spec = worker::collective::GroupSpec::new(
                    address,
                    rank,
                    world_size,
                    "bench-allreduce",
                    0,
                    secret,
                    tch::Device::Cpu,
                );
                spec.bind_host = Some("127.0.0.1".to_string());
                spec.timeout = timeout;
                worker::collective::bench::run_rank(&spec, &sizes_mib, budget_mib, &mut std::io::stdout())?;
            } else {
                let options = worker::collective::bench::BenchOptions {
                    ranks,
                    sizes_mib,
                    threads,
                    budget_mib,
                    timeout,
                };
                print!(
                    "{}",
                    worker::collective::bench::run(&std::env::current_exe()?, &options)?
                );
            }
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

/// A duration given in seconds on the command line.
fn seconds(value: f64) -> anyhow::Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(value).map_err(|_| anyhow::anyhow!("{value} s is not a duration"))
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
