//! `coordinator`: gantry's control plane server and its job CLI.
//!
//! The load generator of `coordinator bench` ([`bench`]) is the binary's own module: it drives
//! a coordinator from outside and is not part of the server library.

mod bench;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use coordinator::cli;
use gantry_proto::auth::Token;
use gantry_proto::pb;

/// gantry's coordinator: queues training jobs and gang-schedules them onto workers.
#[derive(Debug, Parser)]
#[command(name = "coordinator", version, about)]
struct Cli {
    /// Log format: `human` on a terminal, `json` for clusters.
    #[arg(long, global = true, value_enum, default_value_t = base::logging::LogFormat::Human)]
    log_format: base::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How a client reaches the coordinator.
#[derive(Debug, Args)]
struct Connection {
    /// Coordinator address: http://HOST:PORT, or https://HOST:PORT for TLS.
    #[arg(long, env = "GANTRY_COORDINATOR", default_value = "http://127.0.0.1:50051")]
    coordinator: String,
    /// File holding the job API token (default: $GANTRY_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the coordinator's certificate, for https.
    #[arg(long, env = "GANTRY_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the coordinator: the job and worker gRPC services, health and reflection.
    Serve {
        /// Address to listen on (port 0: any free port; the bound address is printed).
        #[arg(long, default_value = "0.0.0.0:50051")]
        listen: SocketAddr,
        /// Address of the HTTP listener: the dashboard (log in with the job API token) and
        /// Prometheus `/metrics` (bearer token); HTTPS with --tls-cert. Port 0: any free port
        /// (the URL is printed). Default: none.
        #[arg(long, env = "GANTRY_HTTP_LISTEN")]
        http_listen: Option<SocketAddr>,
        /// Address of a plain-HTTP listener serving only Prometheus `/metrics`, without a token
        /// (aggregates only, no job names), for scrapers on a network of their own, e.g.
        /// 0.0.0.0:9400. Port 0: any free port (the URL is printed). Default: none.
        #[arg(long, env = "GANTRY_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
        /// Job store URL (a path, file://, s3://, gs://, az://); a restart with the same URL
        /// recovers the queue and the running jobs.
        #[arg(long)]
        state: String,
        /// File holding the job API token (default: $GANTRY_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// File holding the worker API token (default: $GANTRY_WORKER_TOKEN).
        #[arg(long)]
        worker_token_file: Option<PathBuf>,
        /// Seconds without a heartbeat after which a worker is lost and its gang fails.
        #[arg(long, default_value_t = 30.0)]
        heartbeat_timeout: f64,
        /// TLS certificate chain (PEM); requires --tls-key.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM); requires --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// A storage prefix jobs may read datasets from (repeatable; comma-separated in the
        /// variable). Default, with neither list: any storage but the job records.
        #[arg(long, env = "GANTRY_ALLOW_READ", value_delimiter = ',')]
        allow_read: Vec<String>,
        /// A storage prefix jobs may write runs into (and read from).
        #[arg(long, env = "GANTRY_ALLOW_WRITE", value_delimiter = ',')]
        allow_write: Vec<String>,
        /// Seconds the state's lease lives without renewal: a coordinator that stops (without
        /// a clean shutdown, on another machine) is replaced after this long.
        #[arg(long, default_value_t = 10.0)]
        lease_ttl: f64,
        /// Seconds to wait for the state's lease while another coordinator holds it, then exit
        /// with an error (default: wait as long as it takes).
        #[arg(long)]
        lease_wait: Option<f64>,
    },
    /// Submit a TOML job file; prints the job id.
    Submit {
        /// The job file.
        file: PathBuf,
        /// Follow the job to its end; exit non-zero unless it succeeds.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Show one job.
    Status {
        /// Job id.
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// List jobs, oldest first.
    List {
        /// Only jobs in this state (repeatable).
        #[arg(long, value_enum)]
        state: Vec<StateArg>,
        /// Only jobs with this name (`job.name`, exactly).
        #[arg(long, default_value = "")]
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Cancel a queued or running job.
    Cancel {
        /// Job id.
        id: String,
        /// Why (recorded in the job).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Load-test the control plane: start a coordinator on a fresh state folder and drive it
    /// with simulated workers and jobs over gRPC; print latencies, false losses, writes, memory
    /// and the restart time. Exits non-zero if a live worker was lost, a call failed or a record
    /// went missing.
    Bench(bench::BenchOptions),
    /// Follow a job's state, metrics and checkpoints until it ends; exit non-zero unless it succeeds.
    Watch {
        /// Job id.
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
}

/// A job state as `list --state` spells it (`queued`, `running`, ...): the CLI's own names,
/// mapped to the wire's states here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StateArg {
    /// Waiting for workers.
    Queued,
    /// On a gang.
    Running,
    /// Reached its last step.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl From<StateArg> for pb::JobState {
    fn from(state: StateArg) -> Self {
        match state {
            StateArg::Queued => pb::JobState::Queued,
            StateArg::Running => pb::JobState::Running,
            StateArg::Succeeded => pb::JobState::Succeeded,
            StateArg::Failed => pb::JobState::Failed,
            StateArg::Cancelled => pb::JobState::Cancelled,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    base::logging::init(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", base::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn client(connection: &Connection) -> anyhow::Result<cli::JobClient> {
    let token = Token::from_file_or_env(connection.token_file.as_deref(), "GANTRY_TOKEN")?;
    Ok(cli::connect(
        &connection.coordinator,
        token,
        connection.tls_ca.as_deref(),
    )?)
}

async fn run(command: Command) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    match command {
        Command::Serve {
            listen,
            http_listen,
            metrics_listen,
            state,
            token_file,
            worker_token_file,
            heartbeat_timeout,
            tls_cert,
            tls_key,
            allow_read,
            allow_write,
            lease_ttl,
            lease_wait,
        } => {
            let access = coordinator::service::Access {
                read: base::access::Prefixes::new(&allow_read).map_err(anyhow::Error::msg)?,
                write: base::access::Prefixes::new(&allow_write).map_err(anyhow::Error::msg)?,
                state: None,
            };
            anyhow::ensure!(
                heartbeat_timeout.is_finite() && heartbeat_timeout > 0.0,
                "--heartbeat-timeout is {heartbeat_timeout}, expected a positive number of seconds"
            );
            let job_token = Token::from_file_or_env(token_file.as_deref(), "GANTRY_TOKEN")?;
            let worker_token = Token::from_file_or_env(worker_token_file.as_deref(), "GANTRY_WORKER_TOKEN")?;
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some((
                    std::fs::read(&cert).with_context(|| format!("--tls-cert {}", cert.display()))?,
                    std::fs::read(&key).with_context(|| format!("--tls-key {}", key.display()))?,
                )),
                _ => None,
            };
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("--listen {listen}"))?;
            let bound = listener.local_addr()?;
            let http = match http_listen {
                Some(address) => Some(
                    tokio::net::TcpListener::bind(address)
                        .await
                        .with_context(|| format!("--http-listen {address}"))?,
                ),
                None => None,
            };
            let metrics_only = match metrics_listen {
                Some(address) => Some(
                    tokio::net::TcpListener::bind(address)
                        .await
                        .with_context(|| format!("--metrics-listen {address}"))?,
                ),
                None => None,
            };
            let metrics_url = match &metrics_only {
                Some(listener) => Some(format!("http://{}/metrics", listener.local_addr()?)),
                None => None,
            };
            let scheme = if tls.is_some() { "https" } else { "http" };
            let dashboard = match &http {
                Some(http) => Some(format!("{scheme}://{}/", http.local_addr()?)),
                None => None,
            };
            anyhow::ensure!(
                lease_ttl.is_finite() && lease_ttl >= 0.5,
                "--lease-ttl is {lease_ttl}, expected at least 0.5 seconds"
            );
            anyhow::ensure!(
                lease_wait.is_none_or(|w| w.is_finite() && w >= 0.0),
                "--lease-wait is {lease_wait:?}, expected a number of seconds"
            );
            let lease = coordinator::lease::LeaseOptions {
                ttl: Duration::from_secs_f64(lease_ttl),
                wait: lease_wait.map(Duration::from_secs_f64),
            };
            // Say where it listens only once it may write the state.
            let held = coordinator::lease::Lease::acquire(&state, &bound.to_string(), lease).await?;
            let options = coordinator::server::ServeOptions {
                state,
                job_token,
                worker_token,
                heartbeat_timeout: Duration::from_secs_f64(heartbeat_timeout),
                access,
                tls,
                lease,
                held: Some(held),
            };
            let shutdown = async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                tracing::info!("shutting down");
            };
            let listeners = coordinator::server::HttpListeners {
                dashboard: http,
                metrics: metrics_only,
            };
            let serving = coordinator::server::serve_with_http(options, listener, listeners, shutdown);
            tracing::info!(address = %bound, "listening");
            // One write, so that a reader of the first line gets the second with it.
            let mut lines = format!("listening on {bound}\n");
            if let Some(url) = &dashboard {
                tracing::info!(%url, metrics = %format!("{url}metrics"), "dashboard listening");
                lines.push_str(&format!("dashboard on {url}\n"));
            }
            if let Some(url) = &metrics_url {
                tracing::info!(%url, "metrics listening");
                lines.push_str(&format!("metrics on {url}\n"));
            }
            {
                use std::io::Write;
                out.write_all(lines.as_bytes())?;
                out.flush()?;
            }
            serving.await?;
        }
        Command::Submit { file, wait, connection } => {
            let mut client = client(&connection)?;
            let job = cli::submit(&mut client, &file, &mut out).await?;
            if wait {
                cli::watch(&mut client, &job.id, &mut out, std::io::stdout().is_terminal()).await?;
            }
        }
        Command::Status { id, connection } => {
            cli::status(&mut client(&connection)?, &id, &mut out).await?;
        }
        Command::List {
            state,
            name,
            connection,
        } => {
            let states = state.into_iter().map(pb::JobState::from).collect();
            cli::list(&mut client(&connection)?, states, &name, &mut out).await?;
        }
        Command::Cancel { id, reason, connection } => {
            cli::cancel(&mut client(&connection)?, &id, &reason, &mut out).await?;
        }
        Command::Bench(mut options) => {
            options.binary = std::env::current_exe().context("the coordinator binary's path")?;
            let report = bench::run(options.clone(), &mut std::io::stderr()).await?;
            report.write(&options, &mut out)?;
            let problems = report.problems();
            anyhow::ensure!(
                problems.is_empty(),
                "the control plane failed under load: {}",
                problems.join("; ")
            );
        }
        Command::Watch { id, connection } => {
            cli::watch(
                &mut client(&connection)?,
                &id,
                &mut out,
                std::io::stdout().is_terminal(),
            )
            .await?;
        }
    }
    Ok(())
}
