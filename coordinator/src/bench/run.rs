//! A bench run: its options ([`BenchOptions`]), the `coordinator serve` child it drives, and
//! the phases ([`run`]): registration, the burst of submissions, the steady load, the kill and
//! the restart.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use gantry_job::JobConfig;
use gantry_proto::auth::Token;
use gantry_proto::pb;
use gantry_proto::pb::job_service_client::JobServiceClient;
use gantry_proto::pb::worker_service_client::WorkerServiceClient;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;

use super::report::{BenchReport, Latencies};
use super::scrape;
use super::simulate::{Shared, simulate_worker, submit_one};

/// What can stop a bench run before it measures anything.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum BenchError {
    /// The coordinator process could not be started, or did not say where it listens.
    #[error("starting the coordinator ({binary}): {message}")]
    Start {
        /// The binary.
        binary: String,
        /// What went wrong, with the end of its log.
        message: String,
    },
    /// A file of the bench's folder.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The dataset the jobs train on.
    #[error("--data {url}: {message}")]
    Data {
        /// Its URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// A call the bench cannot do without failed.
    #[error("{call}: {}: {}", status.code(), status.message())]
    Rpc {
        /// The call.
        call: &'static str,
        /// The answer.
        status: tonic::Status,
    },
}

type Result<T, E = BenchError> = std::result::Result<T, E>;

/// The load and the coordinator it runs against (the flags of `coordinator bench`).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BenchOptions {
    /// The `coordinator` binary to start (`serve`); set by the caller, not a flag.
    #[arg(skip)]
    pub(crate) binary: PathBuf,
    /// Folder for the state, tokens and logs (its `state` must not exist).
    #[arg(long)]
    pub(crate) dir: PathBuf,
    /// A packed dataset the jobs name (e.g. from `dataprep synth celeba` + `dataprep pack`).
    #[arg(long)]
    pub(crate) data: String,
    /// Simulated workers.
    #[arg(long, default_value_t = 1000)]
    pub(crate) workers: usize,
    /// Jobs submitted at first and kept queued.
    #[arg(long, default_value_t = 10000)]
    pub(crate) jobs: usize,
    /// Workers (ranks) per job.
    #[arg(long, default_value_t = 2)]
    pub(crate) ranks: u32,
    /// Seconds of steady load after the submissions.
    #[arg(long, default_value_t = 60.0)]
    pub(crate) seconds: f64,
    /// Seconds a simulated run lasts.
    #[arg(long, default_value_t = 20.0)]
    pub(crate) run_seconds: f64,
    /// Steps (heartbeats) between simulated checkpoints; 0: none.
    #[arg(long, default_value_t = 10)]
    pub(crate) checkpoint_every: u64,
    /// The coordinator's --heartbeat-timeout; workers heartbeat at a quarter of it.
    #[arg(long, default_value_t = 4.0)]
    pub(crate) heartbeat_timeout: f64,
    /// Concurrent submissions.
    #[arg(long, default_value_t = 16)]
    pub(crate) submitters: usize,
    /// gRPC connections of the simulated workers (default: one per worker).
    #[arg(long)]
    pub(crate) connections: Option<usize>,
    /// Skip the kill-and-restart check at the end.
    #[arg(long)]
    pub(crate) no_restart: bool,
}

const JOB_TOKEN: &str = "bench-job-token";
const WORKER_TOKEN: &str = "bench-worker-token";

/// A `coordinator serve` child.
struct Server {
    child: Child,
    addr: String,
    /// Its `/metrics` (`serve --metrics-listen`): `http://HOST:PORT/metrics`.
    metrics: String,
    started: Instant,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |source| BenchError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn start(options: &BenchOptions, log: &Path) -> Result<Server> {
    let started = Instant::now();
    let err = |message: String| BenchError::Start {
        binary: options.binary.display().to_string(),
        message,
    };
    let stderr = std::fs::File::create(log).map_err(io(log))?;
    let mut child = Command::new(&options.binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--state"])
        .arg(options.dir.join("state"))
        .arg("--token-file")
        .arg(options.dir.join("job.token"))
        .arg("--worker-token-file")
        .arg(options.dir.join("worker.token"))
        .args(["--heartbeat-timeout", &options.heartbeat_timeout.to_string()])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    // "listening on ADDR", then "metrics on URL" (written at once).
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    let _ = stdout.read_line(&mut line);
    let mut second = String::new();
    let _ = stdout.read_line(&mut second);
    let listening = line.trim().strip_prefix("listening on ");
    let metrics = second.trim().strip_prefix("metrics on ");
    let (Some(addr), Some(metrics)) = (listening, metrics) else {
        let _ = child.kill();
        let _ = child.wait();
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(10).collect();
        return Err(err(format!(
            "it printed {line:?} and {second:?}, not \"listening on ADDR\" and \"metrics on URL\"; its log ends:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )));
    };
    Ok(Server {
        addr: format!("http://{addr}"),
        metrics: metrics.to_string(),
        child,
        started,
    })
}

pub(super) type Jobs = JobServiceClient<InterceptedService<Channel, Token>>;
pub(super) type Workers = WorkerServiceClient<InterceptedService<Channel, Token>>;

fn channel(addr: &str) -> Channel {
    gantry_proto::client::channel(addr, None).expect("a loopback address dials")
}

fn job_client(channel: Channel) -> Jobs {
    let token = Token::new(JOB_TOKEN, "bench").expect("a valid token");
    JobServiceClient::with_interceptor(channel, token).max_decoding_message_size(64 << 20)
}

fn worker_client(channel: Channel) -> Workers {
    let token = Token::new(WORKER_TOKEN, "bench").expect("a valid token");
    WorkerServiceClient::with_interceptor(channel, token)
}

/// The job every submission sends: small, on `options.data`, `options.ranks` workers.
async fn job_spec(options: &BenchOptions) -> Result<pb::JobSpec> {
    let data_error = |message: String| BenchError::Data {
        url: options.data.clone(),
        message,
    };
    let dataset = dataprep::Dataset::open(&options.data)
        .await
        .map_err(|e| data_error(base::error_chain(&e)))?;
    let manifest = dataset.manifest();
    let condition = if manifest.attributes.iter().any(|a| a == "Blond_Hair") {
        "Blond_Hair"
    } else {
        "label"
    };
    let text = format!(
        "[data]\nurl = \"{data}\"\ncondition = \"{condition}\"\n\
         [model]\nimage_size = {size}\nwidth = 8\n\
         [train]\nbatch_size = {batch}\nsteps = 1000\ndevice = \"cpu\"\nthreads = 1\n\
         [output]\nurl = \"{out}\"\n[job]\nname = \"bench\"\nworkers = {ranks}\nmax_restarts = 0\n",
        data = options.data,
        size = manifest.image.height,
        batch = 2 * options.ranks,
        out = options.dir.join("runs/bench").display(),
        ranks = options.ranks,
    );
    let config = JobConfig::from_toml(&text, "bench job").map_err(|e| data_error(base::error_chain(&e)))?;
    Ok(pb::JobSpec::from(&config))
}

fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|k| k * 1024)
    };
    Some((kib("VmRSS:")?, kib("VmHWM:")?))
}

/// Lists every job, a page of 1000 at a time.
async fn list_all(client: &mut Jobs) -> std::result::Result<Vec<pb::Job>, tonic::Status> {
    let mut jobs = Vec::new();
    let mut request = pb::ListJobsRequest {
        page_size: 1000,
        ..Default::default()
    };
    loop {
        let page = client.list_jobs(request.clone()).await?.into_inner();
        jobs.extend(page.jobs);
        if page.next_page_token.is_empty() {
            return Ok(jobs);
        }
        request.page_token = page.next_page_token;
    }
}

/// Queued jobs, counted a page at a time.
async fn queued(client: &mut Jobs) -> usize {
    let mut count = 0;
    let mut request = pb::ListJobsRequest {
        page_size: 1000,
        states: vec![pb::JobState::Queued as i32],
        ..Default::default()
    };
    while let Ok(page) = client.list_jobs(request.clone()).await {
        let page = page.into_inner();
        count += page.jobs.len();
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    count
}

/// Runs the bench; `progress` gets a line per phase.
pub(crate) async fn run(options: BenchOptions, progress: &mut (impl Write + Send)) -> Result<BenchReport> {
    let dir = &options.dir.clone();
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let state = dir.join("state");
    if state.exists() {
        return Err(BenchError::Io {
            path: state.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists: the bench starts from an empty job store (give another --dir)",
            ),
        });
    }
    for (file, token) in [("job.token", JOB_TOKEN), ("worker.token", WORKER_TOKEN)] {
        let path = dir.join(file);
        std::fs::write(&path, token).map_err(io(&path))?;
    }
    let spec = job_spec(&options).await?;
    let log = dir.join("coordinator.log");
    let server = start(&options, &log)?;
    let pid = server.child.id();
    let _ = writeln!(
        progress,
        "coordinator {} (pid {pid}), log {}",
        server.addr,
        log.display()
    );

    let options = Arc::new(options);
    let shared = Arc::new(Shared::default());
    let mut report = BenchReport::default();
    let (finished_tx, mut finished_rx) = tokio::sync::mpsc::unbounded_channel();

    // Workers, each on one of `connections` channels.
    let connections = options.connections.unwrap_or(options.workers).max(1);
    let channels: Vec<Channel> = (0..connections).map(|_| channel(&server.addr)).collect();
    let registering = Instant::now();
    let mut workers = Vec::with_capacity(options.workers);
    for i in 0..options.workers {
        let client = worker_client(channels[i % channels.len()].clone());
        workers.push(tokio::spawn(simulate_worker(
            i,
            client,
            shared.clone(),
            options.clone(),
            finished_tx.clone(),
        )));
    }
    while (shared.registered.load(Ordering::SeqCst) as usize) < options.workers {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report.registered = options.workers;
    report.register_s = registering.elapsed().as_secs_f64();
    let _ = writeln!(
        progress,
        "{} workers registered in {:.2} s",
        options.workers, report.register_s
    );

    // The burst of submissions.
    let submit_channels: Vec<Channel> = (0..options.submitters.max(1)).map(|_| channel(&server.addr)).collect();
    let next_job = Arc::new(AtomicU64::new(0));
    let submit_errors = Arc::new(AtomicU64::new(0));
    let bursting = Instant::now();
    let mut submitters = Vec::new();
    for channel in &submit_channels {
        let (next_job, shared, spec, errors) = (next_job.clone(), shared.clone(), spec.clone(), submit_errors.clone());
        let mut client = job_client(channel.clone());
        let total = options.jobs as u64;
        submitters.push(tokio::spawn(async move {
            let mut latencies = Latencies::default();
            while next_job.fetch_add(1, Ordering::SeqCst) < total {
                if !submit_one(&mut client, &spec, &shared, &mut latencies).await {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        }));
    }
    for s in submitters {
        report.submit.extend(s.await.expect("submitter"));
    }
    report.submitted = options.jobs;
    report.submit_s = bursting.elapsed().as_secs_f64();
    let _ = writeln!(
        progress,
        "{} jobs submitted in {:.2} s ({:.0}/s)",
        options.jobs,
        report.submit_s,
        report.submit_rate()
    );

    // Steady load: every run that ends is replaced by a new job.
    shared.steady.store(true, Ordering::SeqCst);
    let steady = Instant::now();
    let written_before = scrape::fetch(&server.metrics).await.ok();
    let replacer = {
        let (shared, spec, errors) = (shared.clone(), spec.clone(), submit_errors.clone());
        let mut client = job_client(submit_channels[0].clone());
        tokio::spawn(async move {
            let mut latencies = Latencies::default();
            while finished_rx.recv().await.is_some() {
                if shared.stop.load(Ordering::SeqCst) || shared.killed.load(Ordering::SeqCst) {
                    break;
                }
                if !submit_one(&mut client, &spec, &shared, &mut latencies).await {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        })
    };
    let seconds = Duration::from_secs_f64(options.seconds);
    let mut reported = Instant::now();
    while steady.elapsed() < seconds {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if reported.elapsed() >= Duration::from_secs(10) {
            reported = Instant::now();
            let _ = writeln!(
                progress,
                "steady {:.0} s: {} runs ended, {} heartbeat errors, {} register-again",
                steady.elapsed().as_secs_f64(),
                shared.runs_finished.load(Ordering::Relaxed),
                shared.heartbeat_errors.load(Ordering::Relaxed),
                shared.register_again.load(Ordering::Relaxed)
            );
        }
    }
    report.steady_s = steady.elapsed().as_secs_f64();
    report.memory = memory(pid);
    report.queued_at_end = queued(&mut job_client(submit_channels[0].clone())).await;
    match scrape::fetch(&server.metrics).await {
        Ok(after) => {
            report.workers_lost = after.value("gantry_workers_lost_total").map(|n| n as u64);
            let written = |scrape: &scrape::Scrape| scrape.value("gantry_job_records_written_total");
            if let Some(before) = &written_before
                && let (Some(from), Some(to)) = (written(before), written(&after))
            {
                let seconds = after.at.duration_since(before.at).as_secs_f64();
                report.records_per_s = Some((to - from) / seconds.max(1e-9));
            }
        }
        Err(e) => {
            let _ = writeln!(progress, "error: scraping {}: {e}", server.metrics);
        }
    }

    // Kill under load, then restart on the same state.
    shared.killed.store(true, Ordering::SeqCst);
    let mut server = server;
    let _ = server.child.kill();
    let _ = server.child.wait();
    shared.stop.store(true, Ordering::SeqCst);
    drop(finished_tx);
    for w in workers {
        let samples = w.await.expect("worker task");
        report.heartbeat.extend(samples.heartbeat);
        report.heartbeat_steady.extend(samples.heartbeat_steady);
        report.report.extend(samples.report);
    }
    report.submit.extend(replacer.await.expect("replacer"));
    report.heartbeat_errors = shared.heartbeat_errors.load(Ordering::Relaxed);
    report.report_errors = shared.report_errors.load(Ordering::Relaxed);
    report.submit_errors = submit_errors.load(Ordering::Relaxed);
    report.register_again = shared.register_again.load(Ordering::Relaxed);
    report.runs_finished = shared.runs_finished.load(Ordering::Relaxed);
    for line in shared
        .first_errors
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
    {
        let _ = writeln!(progress, "error: {line}");
    }
    drop(server);

    if !options.no_restart {
        let log = dir.join("coordinator-restarted.log");
        let server = start(&options, &log)?;
        let mut client = job_client(channel(&server.addr));
        let first = loop {
            match client
                .get_job(pb::GetJobRequest {
                    id: "job-000001".into(),
                })
                .await
            {
                Ok(_) => break server.started.elapsed(),
                Err(status) if server.started.elapsed() > Duration::from_secs(120) => {
                    return Err(BenchError::Rpc {
                        call: "get job-000001 after the restart",
                        status,
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        report.restart_s = Some(first.as_secs_f64());
        let jobs = list_all(&mut client).await.map_err(|status| BenchError::Rpc {
            call: "list after the restart",
            status,
        })?;
        report.list_all_s = Some(server.started.elapsed().as_secs_f64());
        report.records = jobs.len();
        let states: HashMap<&str, pb::JobState> = jobs.iter().map(|j| (j.id.as_str(), j.state())).collect();
        let submitted = shared.submitted.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let ended = shared.ended.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for id in &submitted {
            match states.get(id.as_str()) {
                None => report.missing.push(format!("{id} is missing")),
                Some(state)
                    if ended.get(id).is_some_and(|&n| n == options.ranks) && *state != pb::JobState::Succeeded =>
                {
                    report
                        .missing
                        .push(format!("{id} ended on every rank but is {}", state.label()))
                }
                Some(_) => {}
            }
        }
        let _ = writeln!(
            progress,
            "restarted on {} records: first answer after {:.2} s",
            jobs.len(),
            first.as_secs_f64()
        );
    }
    Ok(report)
}
