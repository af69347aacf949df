//! `coordinator bench`: a load generator for the control plane. It starts a real coordinator
//! (this binary's `serve`) on a fresh local state folder, then drives it over gRPC as a cluster
//! would:
//!
//! 1. `workers` simulated agents register, each on its own connection, and heartbeat at the
//!    interval the coordinator gives them; an agent given an assignment reports its start, a
//!    step (rank 0) at each heartbeat, a checkpoint every few steps, and its end after
//!    `run_seconds`, then takes the next job;
//! 2. `jobs` jobs are submitted as fast as `submitters` concurrent clients go (the submit rate);
//! 3. for `seconds`, every job that ends is replaced by a new one, so the queue stays full;
//! 4. the coordinator is killed (`SIGKILL`) under that load, started again on the same state, and
//!    timed until it answers; every job whose submission was acknowledged must be there, and
//!    every job whose every rank's end was acknowledged must be SUCCEEDED.
//!
//! It prints the submit rate, heartbeat and report latency percentiles, heartbeat errors, false
//! losses (the coordinator's "worker lost" lines and "register again" answers: every simulated
//! agent is alive throughout), job-record writes per second, the coordinator's memory and the
//! restart time. It measures; [`BenchReport::problems`] lists what must never happen at any
//! speed (lost workers, failed calls, missing records).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gantry_job::JobConfig;
use gantry_proto::auth::Token;
use gantry_proto::pb;
use gantry_proto::pb::job_service_client::JobServiceClient;
use gantry_proto::pb::worker_event::Event as WorkerEvent;
use gantry_proto::pb::worker_service_client::WorkerServiceClient;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;

/// What can stop a bench run before it measures anything.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
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
pub struct BenchOptions {
    /// The `coordinator` binary to start (`serve`); set by the caller, not a flag.
    #[arg(skip)]
    pub binary: PathBuf,
    /// Folder for the state, tokens and logs (its `state` must not exist).
    #[arg(long)]
    pub dir: PathBuf,
    /// A packed dataset the jobs name (e.g. from `dataprep synth celeba` + `dataprep pack`).
    #[arg(long)]
    pub data: String,
    /// Simulated workers.
    #[arg(long, default_value_t = 1000)]
    pub workers: usize,
    /// Jobs submitted at first and kept queued.
    #[arg(long, default_value_t = 10000)]
    pub jobs: usize,
    /// Workers (ranks) per job.
    #[arg(long, default_value_t = 2)]
    pub ranks: u32,
    /// Seconds of steady load after the submissions.
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// Seconds a simulated run lasts.
    #[arg(long, default_value_t = 20.0)]
    pub run_seconds: f64,
    /// Steps (heartbeats) between simulated checkpoints; 0: none.
    #[arg(long, default_value_t = 10)]
    pub checkpoint_every: u64,
    /// The coordinator's --heartbeat-timeout; workers heartbeat at a quarter of it.
    #[arg(long, default_value_t = 4.0)]
    pub heartbeat_timeout: f64,
    /// Concurrent submissions.
    #[arg(long, default_value_t = 16)]
    pub submitters: usize,
    /// gRPC connections of the simulated workers (default: one per worker).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Skip the kill-and-restart check at the end.
    #[arg(long)]
    pub no_restart: bool,
}

/// Latencies of one kind of call, in microseconds.
#[derive(Debug, Clone, Default)]
pub struct Latencies(Vec<u32>);

impl Latencies {
    fn push(&mut self, d: Duration) {
        self.0.push(d.as_micros().min(u128::from(u32::MAX)) as u32);
    }

    /// Calls measured.
    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// The `q` quantile (0..=1), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let i = ((sorted.len() - 1) as f64 * q).round() as usize;
        f64::from(sorted[i]) / 1000.0
    }

    fn line(&self) -> String {
        format!(
            "n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms max={:.1} ms",
            self.count(),
            self.quantile_ms(0.5),
            self.quantile_ms(0.9),
            self.quantile_ms(0.99),
            self.quantile_ms(1.0)
        )
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    /// Workers registered, and how long that took.
    pub registered: usize,
    /// Seconds all registrations took.
    pub register_s: f64,
    /// Jobs submitted in the first burst.
    pub submitted: usize,
    /// Seconds the burst took.
    pub submit_s: f64,
    /// Latency of every submission (burst and replacements).
    pub submit: Latencies,
    /// Heartbeats during the submissions and the steady load.
    pub heartbeat: Latencies,
    /// Heartbeats during the steady load only.
    pub heartbeat_steady: Latencies,
    /// Reports (start, steps, checkpoints, ends).
    pub report: Latencies,
    /// Calls that failed (before the kill).
    pub heartbeat_errors: u64,
    /// Reports that failed (before the kill).
    pub report_errors: u64,
    /// Submissions that failed.
    pub submit_errors: u64,
    /// "register again" answers to live workers.
    pub register_again: u64,
    /// "worker lost" lines in the coordinator's log.
    pub lost_in_log: usize,
    /// Simulated runs that ended (every rank's end acknowledged).
    pub runs_finished: u64,
    /// Seconds of steady load.
    pub steady_s: f64,
    /// Queued jobs at the end of the steady load.
    pub queued_at_end: usize,
    /// Job records written per second during the steady load, from the coordinator's log.
    pub records_per_s: Option<f64>,
    /// The coordinator's resident memory at the end, and its peak, bytes.
    pub memory: Option<(u64, u64)>,
    /// Records in the store when the coordinator was killed (as listed after the restart).
    pub records: usize,
    /// Seconds from starting the killed coordinator's successor to its first answer.
    pub restart_s: Option<f64>,
    /// Seconds to list every job (pages of 1000) after the restart.
    pub list_all_s: Option<f64>,
    /// Acknowledged jobs missing, or in the wrong state, after the restart.
    pub missing: Vec<String>,
}

impl BenchReport {
    /// Submissions per second of the first burst.
    pub fn submit_rate(&self) -> f64 {
        self.submitted as f64 / self.submit_s.max(1e-9)
    }

    /// What must not happen at any speed: a lost live worker, a failed call, a lost record.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.lost_in_log > 0 || self.register_again > 0 {
            problems.push(format!(
                "false losses: {} \"worker lost\" lines, {} \"register again\" answers",
                self.lost_in_log, self.register_again
            ));
        }
        for (what, n) in [
            ("heartbeats", self.heartbeat_errors),
            ("reports", self.report_errors),
            ("submissions", self.submit_errors),
        ] {
            if n > 0 {
                problems.push(format!("{n} {what} failed"));
            }
        }
        if !self.missing.is_empty() {
            problems.push(format!(
                "{} acknowledged jobs missing or wrong after the restart: {}",
                self.missing.len(),
                self.missing.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
            ));
        }
        problems
    }

    /// The figures, one per line.
    pub fn write(&self, options: &BenchOptions, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "load: {} workers, {} jobs of {} ranks queued, runs of {:.0} s, heartbeat timeout {:.1} s (heartbeat every {:.2} s)",
            options.workers,
            options.jobs,
            options.ranks,
            options.run_seconds,
            options.heartbeat_timeout,
            options.heartbeat_timeout / 4.0
        )?;
        writeln!(
            out,
            "register:  {} workers in {:.2} s",
            self.registered, self.register_s
        )?;
        writeln!(
            out,
            "submit:    {} jobs in {:.2} s = {:.0} jobs/s; latency {}",
            self.submitted,
            self.submit_s,
            self.submit_rate(),
            self.submit.line()
        )?;
        writeln!(out, "heartbeat: {}", self.heartbeat.line())?;
        writeln!(out, "heartbeat (steady load only): {}", self.heartbeat_steady.line())?;
        writeln!(out, "report:    {}", self.report.line())?;
        writeln!(
            out,
            "errors:    heartbeats {}, reports {}, submissions {}",
            self.heartbeat_errors, self.report_errors, self.submit_errors
        )?;
        writeln!(
            out,
            "false losses: {} (\"worker lost\" in the log: {}, \"register again\" answers: {})",
            self.lost_in_log + self.register_again as usize,
            self.lost_in_log,
            self.register_again
        )?;
        writeln!(
            out,
            "steady:    {:.0} s, {} runs ended ({:.1}/s), {} jobs queued at the end",
            self.steady_s,
            self.runs_finished,
            self.runs_finished as f64 / self.steady_s.max(1e-9),
            self.queued_at_end
        )?;
        match self.records_per_s {
            Some(rate) => writeln!(out, "records written: {rate:.1}/s during the steady load")?,
            None => writeln!(out, "records written: not logged (steady load shorter than 20 s)")?,
        }
        if let Some((rss, peak)) = self.memory {
            writeln!(
                out,
                "coordinator memory: {:.0} MiB resident, {:.0} MiB peak",
                rss as f64 / 1048576.0,
                peak as f64 / 1048576.0
            )?;
        }
        if let Some(restart) = self.restart_s {
            writeln!(
                out,
                "restart after SIGKILL: {} records, first answer after {restart:.2} s, all listed after {:.2} s, {} acknowledged jobs missing or wrong",
                self.records,
                self.list_all_s.unwrap_or(0.0),
                self.missing.len()
            )?;
        }
        Ok(())
    }
}

const JOB_TOKEN: &str = "bench-job-token";
const WORKER_TOKEN: &str = "bench-worker-token";

/// A `coordinator serve` child.
struct Server {
    child: Child,
    addr: String,
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
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
    let Some(addr) = line.trim().strip_prefix("listening on ") else {
        let _ = child.kill();
        let _ = child.wait();
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(10).collect();
        return Err(err(format!(
            "it printed {line:?}, not \"listening on ADDR\"; its log ends:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )));
    };
    Ok(Server {
        addr: format!("http://{addr}"),
        child,
        started,
    })
}

type Jobs = JobServiceClient<InterceptedService<Channel, Token>>;
type Workers = WorkerServiceClient<InterceptedService<Channel, Token>>;

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

/// State shared by the simulated workers and submitters.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Set when the coordinator is killed: failures after it are expected.
    killed: AtomicBool,
    /// Set when the steady load begins.
    steady: AtomicBool,
    registered: AtomicU64,
    heartbeat_errors: AtomicU64,
    report_errors: AtomicU64,
    register_again: AtomicU64,
    runs_finished: AtomicU64,
    /// Submissions sent.
    submissions: AtomicU64,
    /// Jobs whose submission was acknowledged.
    submitted: Mutex<HashSet<String>>,
    /// Jobs with the ranks whose end was acknowledged.
    ended: Mutex<HashMap<String, u32>>,
    /// First-error messages, for the report.
    first_errors: Mutex<Vec<String>>,
}

impl Shared {
    fn failed(&self, counter: &AtomicU64, what: &str, status: &tonic::Status) {
        if self.killed.load(Ordering::SeqCst) {
            return;
        }
        counter.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap_or_else(PoisonError::into_inner);
        if first.len() < 5 {
            first.push(format!("{what}: {}: {}", status.code(), status.message()));
        }
    }
}

/// What a simulated worker measured.
#[derive(Default)]
struct WorkerSamples {
    heartbeat: Latencies,
    heartbeat_steady: Latencies,
    report: Latencies,
}

struct Run {
    job_id: String,
    attempt: u32,
    rank: u32,
    world: u32,
    started: Instant,
    step: u64,
}

async fn report(
    client: &mut Workers,
    shared: &Shared,
    samples: &mut WorkerSamples,
    worker_id: &str,
    run: &Run,
    event: WorkerEvent,
) -> Option<bool> {
    let request = pb::ReportRequest {
        worker_id: worker_id.to_string(),
        job_id: run.job_id.clone(),
        attempt: run.attempt,
        rank: run.rank,
        events: vec![pb::WorkerEvent { event: Some(event) }],
    };
    let sent = Instant::now();
    match client.report(request).await {
        Ok(answer) => {
            samples.report.push(sent.elapsed());
            Some(answer.into_inner().stop)
        }
        Err(status) => {
            shared.failed(&shared.report_errors, "report", &status);
            None
        }
    }
}

/// One simulated agent: registers, heartbeats, runs what it is given.
async fn simulate_worker(
    index: usize,
    mut client: Workers,
    shared: Arc<Shared>,
    options: Arc<BenchOptions>,
    finished: tokio::sync::mpsc::UnboundedSender<()>,
) -> WorkerSamples {
    let mut samples = WorkerSamples::default();
    let register = pb::RegisterRequest {
        worker_id: String::new(),
        address: format!("10.{}.{}.{}:29500", index / 65536, (index / 256) % 256, index % 256),
        device: "cpu".into(),
        hostname: format!("sim-{index}"),
        running: None,
        memory_bytes: 64 << 30,
    };
    let answer = loop {
        match client.register(register.clone()).await {
            Ok(answer) => break answer.into_inner(),
            Err(status) => {
                shared.failed(&shared.heartbeat_errors, "register", &status);
                if shared.stop.load(Ordering::SeqCst) {
                    return samples;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    shared.registered.fetch_add(1, Ordering::SeqCst);
    let worker_id = answer.worker_id;
    let interval = Duration::from_millis(answer.heartbeat_interval_ms.max(1));
    // Spread the first heartbeats over one interval, as agents started over time would be.
    let offset = interval.mul_f64(index as f64 / options.workers.max(1) as f64);
    let mut next = tokio::time::Instant::now() + offset;
    let mut run: Option<Run> = None;
    let run_for = Duration::from_secs_f64(options.run_seconds);
    while !shared.stop.load(Ordering::SeqCst) {
        tokio::time::sleep_until(next).await;
        next += interval;
        let now = tokio::time::Instant::now();
        if next < now {
            next = now + interval;
        }
        let request = pb::HeartbeatRequest {
            worker_id: worker_id.clone(),
            running: run.as_ref().map(|r| pb::RunningWork {
                job_id: r.job_id.clone(),
                attempt: r.attempt,
                rank: r.rank,
                step: r.step,
            }),
            leaving: false,
        };
        let sent = Instant::now();
        let answer = match client.heartbeat(request).await {
            Ok(answer) => answer.into_inner(),
            Err(status) => {
                shared.failed(&shared.heartbeat_errors, "heartbeat", &status);
                continue;
            }
        };
        let took = sent.elapsed();
        samples.heartbeat.push(took);
        if shared.steady.load(Ordering::Relaxed) {
            samples.heartbeat_steady.push(took);
        }
        if answer.register_again {
            if !shared.killed.load(Ordering::SeqCst) {
                shared.register_again.fetch_add(1, Ordering::Relaxed);
            }
            let mut again = register.clone();
            again.worker_id = worker_id.clone();
            let _ = client.register(again).await;
            run = None;
            continue;
        }
        if let Some(r) = &run
            && answer.stop_job_ids.contains(&r.job_id)
        {
            run = None;
        }
        if let Some(a) = answer.assignment {
            let started = Run {
                job_id: a.job_id,
                attempt: a.attempt,
                rank: a.rank,
                world: a.world_size,
                started: Instant::now(),
                step: 0,
            };
            let stop = report(
                &mut client,
                &shared,
                &mut samples,
                &worker_id,
                &started,
                WorkerEvent::Started(0),
            )
            .await;
            run = (stop != Some(true)).then_some(started);
            continue;
        }
        let Some(r) = run.as_mut() else { continue };
        r.step += 1;
        let event = if r.started.elapsed() >= run_for {
            WorkerEvent::Finished(pb::CheckpointInfo {
                step: r.step,
                url: format!("file:///bench/{}/checkpoints/step-{:07}", r.job_id, r.step),
                ..Default::default()
            })
        } else if r.rank == 0 && options.checkpoint_every > 0 && r.step % options.checkpoint_every == 0 {
            WorkerEvent::Checkpoint(pb::CheckpointInfo {
                step: r.step,
                url: format!("file:///bench/{}/checkpoints/step-{:07}", r.job_id, r.step),
                ..Default::default()
            })
        } else if r.rank == 0 {
            WorkerEvent::Metrics(pb::StepMetrics {
                step: r.step,
                images_per_sec: 100.0,
                ..Default::default()
            })
        } else {
            continue;
        };
        let finishing = matches!(event, WorkerEvent::Finished(_));
        let stop = report(&mut client, &shared, &mut samples, &worker_id, r, event).await;
        if finishing && stop.is_some() {
            let mut ended = shared.ended.lock().unwrap_or_else(PoisonError::into_inner);
            let ranks = ended.entry(r.job_id.clone()).or_default();
            *ranks += 1;
            if *ranks == r.world {
                shared.runs_finished.fetch_add(1, Ordering::Relaxed);
                let _ = finished.send(());
            }
        }
        if finishing || stop == Some(true) {
            run = None;
        }
    }
    samples
}

/// Submits one job; its id and how long it took.
async fn submit_one(client: &mut Jobs, spec: &pb::JobSpec, shared: &Shared, latencies: &mut Latencies) -> bool {
    // One output per job, as the coordinator requires (nothing is ever written there).
    let mut spec = spec.clone();
    if let Some(output) = spec.output.as_mut() {
        let n = shared.submissions.fetch_add(1, Ordering::Relaxed);
        output.url = format!("{}/{n}", output.url);
    }
    let sent = Instant::now();
    match client.submit_job(pb::SubmitJobRequest { spec: Some(spec) }).await {
        Ok(answer) => {
            latencies.push(sent.elapsed());
            if let Some(job) = answer.into_inner().job {
                shared
                    .submitted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(job.id);
            }
            true
        }
        // After the kill, failures are expected.
        Err(_) if shared.killed.load(Ordering::SeqCst) => true,
        Err(status) => {
            shared.failed(&AtomicU64::new(0), "submit", &status);
            false
        }
    }
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

/// Reads `records_written=N` and `uptime_s=T` from the coordinator's periodic "job store" lines.
fn store_lines(log: &Path) -> Vec<(f64, u64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let field = |line: &str, key: &str| -> Option<String> {
        let start = line.find(key)? + key.len();
        Some(line[start..].split_whitespace().next()?.to_string())
    };
    text.lines()
        .filter(|l| l.contains("job store writes"))
        .filter_map(|l| {
            let written = field(l, "records_written=")?.parse().ok()?;
            let uptime = field(l, "uptime_s=")?.parse().ok()?;
            Some((uptime, written))
        })
        .collect()
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
pub async fn run(options: BenchOptions, progress: &mut (impl Write + Send)) -> Result<BenchReport> {
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
        report.submit.0.extend(s.await.expect("submitter").0);
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
    report.lost_in_log = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("worker lost"))
        .count();
    let lines = store_lines(&log);
    let since = server.started.elapsed().as_secs_f64() - report.steady_s;
    let window: Vec<&(f64, u64)> = lines.iter().filter(|(t, _)| *t >= since).collect();
    if let (Some(first), Some(last)) = (window.first(), window.last())
        && last.0 > first.0
    {
        report.records_per_s = Some((last.1 - first.1) as f64 / (last.0 - first.0));
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
        report.heartbeat.0.extend(samples.heartbeat.0);
        report.heartbeat_steady.0.extend(samples.heartbeat_steady.0);
        report.report.0.extend(samples.report.0);
    }
    report.submit.0.extend(replacer.await.expect("replacer").0);
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
