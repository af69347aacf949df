//! `worker serve`: the agent that joins a coordinator's pool. It registers (device, address),
//! heartbeats, runs each assignment's attempt in a child process of its own, streams the run's
//! start, metrics, checkpoints and end back, and stops a run within one step when told to. When
//! the coordinator restarts, the agent registers again under the same id and says what it is
//! running, so the job carries on.
//!
//! The child is the worker binary itself (`worker attempt`, hidden), as torchrun's agent runs
//! its ranks: a stop order, a peer lost mid-collective, an abort inside libtorch or an
//! out-of-memory kill ends the child, never the agent, which reports how the child ended (its
//! exit status or signal and its last error). The pipes between them:
//! - agent -> child stdin: the [`pb::Assignment`], length-delimited; then one byte per order:
//!   `s` stops the run at once, `p` (the agent is shutting down) stops it at the next step
//!   boundary after a checkpoint. The child stops when stdin closes too, and the kernel kills it when the agent dies,
//!   `kill -9` included (`PR_SET_PDEATHSIG`), so no orphan keeps a GPU or a collective port;
//! - child stdout -> agent: [`pb::WorkerEvent`]s, length-delimited;
//! - child stderr -> agent: the child's log lines (JSON), logged again by the agent with the
//!   job, attempt and rank.
//!
//! Stopping is saving: SIGTERM to the agent (a Kubernetes eviction, the end of a Slurm
//! allocation, a spot preemption) or to its child makes the gang agree on a step, rank 0 saves a
//! checkpoint there, every rank reports the run preempted, and the agent leaves the pool; the
//! coordinator queues the job again without counting a restart, and the next gang resumes from
//! that checkpoint.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use gantry_job::{DeviceSpec, JobConfig};
use gantry_proto::auth::Token;
use gantry_proto::client::ConnectError;
use gantry_proto::pb;
use gantry_proto::pb::worker_event::Event;
use gantry_proto::pb::worker_service_client::WorkerServiceClient;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;

use crate::Error;
use crate::collective::GroupSpec;
use crate::telemetry::{AssignmentLabels, WorkerMetrics};
use crate::train::{MetricsLine, Observer, TrainOptions};

/// How the agent reaches its coordinator and presents itself.
#[derive(Debug)]
pub struct AgentOptions {
    /// Coordinator address (`http://host:port` or `https://host:port`).
    pub coordinator: String,
    /// Worker API token.
    pub token: Token,
    /// CA certificate for `https`.
    pub tls_ca: Option<PathBuf>,
    /// Address peers dial for the gradient exchange.
    pub advertise: String,
    /// The advertised port, held while no rank 0 here uses it (when the agent picked it).
    pub port_hold: Option<crate::address::PortHold>,
    /// The network interface of the gradient exchange (`--ifname`), passed to Gloo and NCCL.
    pub ifname: Option<String>,
    /// How long a run may take to reach its step boundary and save when the agent shuts down,
    /// before its process is killed.
    pub shutdown_grace: Duration,
    /// Device for jobs whose `train.device` is `auto`: the device this worker resolved its own
    /// setting to (`cpu` or `cuda:N`).
    pub device: DeviceSpec,
    /// Host name, for people.
    pub hostname: String,
    /// The worker binary, run as `worker attempt` for each assignment.
    pub program: PathBuf,
    /// Memory a rank may use here (`--memory-limit`), bytes; None: the device's or host's.
    pub memory_limit: Option<u64>,
    /// Storage prefixes jobs may read and write here (`--allow-read`, `--allow-write`), as
    /// given; empty: anywhere.
    pub allow_read: Vec<String>,
    /// See `allow_read`.
    pub allow_write: Vec<String>,
    /// Where to serve Prometheus metrics (`GET /metrics`); None: nowhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl AgentOptions {
    /// What the agent tells the coordinator a rank may use here: the limit, else the host's
    /// total memory for a CPU worker, else the GPU's (from `nvidia-smi`); 0 when unknown.
    fn memory_bytes(&self) -> u64 {
        if let Some(limit) = self.memory_limit {
            return limit;
        }
        match self.device {
            DeviceSpec::Cuda(index) => gpu_memory(index).unwrap_or(0),
            _ => crate::device::total_memory().unwrap_or(0),
        }
    }
}

/// A GPU's total memory from `nvidia-smi`, bytes.
fn gpu_memory(index: usize) -> Option<u64> {
    let output = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=memory.total",
            "--format=csv,noheader,nounits",
            "-i",
            &index.to_string(),
        ])
        .output()
        .ok()?;
    let mib: u64 = String::from_utf8_lossy(&output.stdout).trim().parse().ok()?;
    Some(mib << 20)
}

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The coordinator address or TLS settings.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The coordinator refused the worker (a wrong token, for instance).
    #[error("coordinator {url} refused the worker: {}: {}", status.code(), status.message())]
    Refused {
        /// The coordinator.
        url: String,
        /// Its answer.
        status: tonic::Status,
    },
    /// The metrics endpoint could not listen.
    #[error("cannot serve metrics on {listen}: {source}")]
    Metrics {
        /// The address asked for.
        listen: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

type Client = WorkerServiceClient<InterceptedService<Channel, Token>>;

/// Events kept for the coordinator while it cannot be reached; older step metrics are dropped
/// beyond this (the run's own `metrics.jsonl` keeps them all).
const MAX_PENDING: usize = 1000;

/// How long a run told to stop may take to end its step before its process is killed: a rank
/// blocked in an exchange with a lost peer (or in the rendezvous of a gang that will never
/// form) would otherwise hold its worker for the whole collective timeout. The checkpoints are
/// safe; only the step in flight is lost.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Step metrics go to the coordinator in batches at most this often; the start, checkpoints and
/// the end of a run go at once.
const REPORT_EVERY: Duration = Duration::from_millis(200);

/// The default of [`AgentOptions::shutdown_grace`]: a step and a checkpoint write of a large
/// model on a slow bucket, inside a Kubernetes termination grace period of five minutes.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(240);

/// The run of one assignment.
struct Run {
    job_id: String,
    attempt: u32,
    rank: u32,
    stop: Stop,
    step: Arc<AtomicU64>,
    events: mpsc::UnboundedReceiver<pb::WorkerEvent>,
    /// The training thread sent its last event.
    ended: bool,
}

/// What the agent tells a run's child process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Stop at once (cancelled, or its gang failed): no checkpoint.
    Stop,
    /// The agent is shutting down: stop at the next step boundary after a checkpoint.
    Preempt,
}

impl Order {
    /// Its byte on the child's stdin.
    fn byte(self) -> u8 {
        match self {
            Order::Stop => b's',
            Order::Preempt => b'p',
        }
    }
}

/// Stop orders for a run's child process.
struct Stop {
    ordered: AtomicBool,
    orders: mpsc::UnboundedSender<Order>,
}

impl Stop {
    /// Orders the run to stop; whether this is the first order.
    fn order(&self) -> bool {
        let first = !self.ordered.swap(true, Ordering::Relaxed);
        if first {
            // A closed channel means the child has already ended.
            let _ = self.orders.send(Order::Stop);
        }
        first
    }

    /// Orders the run to save and stop (a stop order, if one came first, wins).
    fn preempt(&self) {
        if !self.ordered.load(Ordering::Relaxed) {
            let _ = self.orders.send(Order::Preempt);
        }
    }
}

impl Run {
    fn work(&self) -> pb::RunningWork {
        pb::RunningWork {
            job_id: self.job_id.clone(),
            attempt: self.attempt,
            rank: self.rank,
            step: self.step.load(Ordering::Relaxed),
        }
    }
}

/// Forwards the trainer's hooks to the agent.
struct Forward {
    events: mpsc::UnboundedSender<pb::WorkerEvent>,
    stop: Arc<AtomicBool>,
    preempt: Arc<AtomicBool>,
    step: Arc<AtomicU64>,
}

impl Forward {
    fn send(&self, event: Event) {
        // The agent outlives every run; a closed channel means it is shutting down.
        let _ = self.events.send(pb::WorkerEvent { event: Some(event) });
    }
}

impl Observer for Forward {
    fn started(&self, step: u64) {
        self.step.store(step, Ordering::Relaxed);
        self.send(Event::Started(step));
    }

    fn step(&self, line: &MetricsLine) {
        self.step.store(line.step, Ordering::Relaxed);
        self.send(Event::Metrics(line.clone()));
    }

    fn checkpoint(&self, step: u64, url: &str, write_seconds: f64) {
        self.send(Event::Checkpoint(pb::CheckpointInfo {
            step,
            url: url.to_string(),
            write_seconds,
        }));
    }

    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn preempted(&self) -> bool {
        self.preempt.load(Ordering::Relaxed)
    }
}

/// Whether another attempt could succeed where this one failed: not for a job that is wrong in
/// itself (its spec, its dataset, a diverging run, a checkpoint of another job or one that does
/// not decode), nor after a panic of the data loader, which would meet the same rows again.
fn retryable(e: &Error) -> bool {
    !matches!(
        e,
        Error::Job(_)
            | Error::NonFinite { .. }
            | Error::Checkpoint { .. }
            | Error::CheckpointFile { .. }
            | Error::Data(dataprep::Error::Panicked { .. })
            | Error::TooLarge { .. }
            | Error::Denied { .. }
            | Error::Storage(base::Error::Foreign { .. })
            | Error::Data(dataprep::Error::Storage(base::Error::Foreign { .. }))
            | Error::Allocation { .. }
    )
}

/// The job an assignment describes, on this worker's device.
fn job_of(assignment: &pb::Assignment, device: DeviceSpec) -> Result<JobConfig, String> {
    let spec = assignment.spec.as_ref().ok_or("the assignment carries no job spec")?;
    let mut config = JobConfig::from_spec(spec).map_err(|e| base::error_chain(&e))?;
    if config.train.device == DeviceSpec::Auto {
        config.train.device = device;
    }
    Ok(config)
}

/// Trains a job to its end as this attempt's rank; the event that says how it ended.
fn run_job(
    config: &JobConfig,
    assignment: &pb::Assignment,
    base: TrainOptions,
    forward: Arc<Forward>,
    runtime: &Handle,
) -> Event {
    let mut options = TrainOptions {
        observer: Some(forward),
        ..base
    };
    if assignment.world_size > 1 {
        match GroupSpec::from_assignment(assignment, tch::Device::Cpu) {
            Ok(spec) => {
                options.ranks_on_host = ranks_on_host(assignment);
                options.group = Some(spec);
            }
            Err(e) => {
                return Event::Failed(pb::Failure {
                    message: base::error_chain(&e),
                    retryable: false,
                });
            }
        }
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::train::train(config, &options, runtime)
    }));
    match result {
        Ok(Ok(summary)) => Event::Finished(pb::CheckpointInfo {
            step: summary.steps,
            url: summary.checkpoint,
            ..Default::default()
        }),
        Ok(Err(Error::Stopped { step })) => Event::Stopped(step),
        Ok(Err(Error::Preempted { step, checkpoint })) => Event::Preempted(pb::CheckpointInfo {
            step,
            url: checkpoint.unwrap_or_default(),
            ..Default::default()
        }),
        Ok(Err(e)) => Event::Failed(pb::Failure {
            message: base::error_chain(&e),
            retryable: retryable(&e),
        }),
        Err(panic) => Event::Failed(pb::Failure {
            message: dataprep::Error::panicked("the trainer", panic).to_string(),
            retryable: true,
        }),
    }
}

/// Ranks of the assignment whose address names the same host as this rank's.
fn ranks_on_host(assignment: &pb::Assignment) -> usize {
    let host = |address: &str| address.rsplit_once(':').map_or(address, |(h, _)| h).to_string();
    let own = assignment.peers.get(assignment.rank as usize).map(|a| host(a));
    assignment.peers.iter().filter(|a| Some(host(a)) == own).count().max(1)
}

/// Starts an assignment's attempt in a child process, supervised on the agent's runtime.
fn start(assignment: &pb::Assignment, options: &mut AgentOptions) -> Run {
    let (tx, rx) = mpsc::unbounded_channel();
    let (orders, stop_orders) = mpsc::unbounded_channel();
    let step = Arc::new(AtomicU64::new(0));
    let ids = RunIds {
        job_id: assignment.job_id.clone(),
        attempt: assignment.attempt,
        rank: assignment.rank,
    };
    tracing::info!(job_id = %ids.job_id, attempt = ids.attempt, rank = ids.rank, "assignment started");
    if assignment.rank == 0
        && let Some(hold) = &mut options.port_hold
    {
        // Rank 0 hosts the store on the advertised port.
        hold.release();
    }
    let mut command = tokio::process::Command::new(&options.program);
    command.args([
        "--log-format",
        "json",
        "attempt",
        "--device",
        &options.device.to_string(),
    ]);
    if let Some(limit) = options.memory_limit {
        command.args(["--memory-limit", &limit.to_string()]);
    }
    for prefix in &options.allow_read {
        command.args(["--allow-read", prefix]);
    }
    for prefix in &options.allow_write {
        command.args(["--allow-write", prefix]);
    }
    if let Some(name) = &options.ifname {
        for variable in crate::address::IFNAME_VARIABLES {
            if std::env::var_os(variable).is_none() {
                command.env(variable, name);
            }
        }
    }
    let child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let supervisor = supervise(
        child,
        assignment.clone(),
        ids,
        tx.clone(),
        step.clone(),
        stop_orders,
        options.shutdown_grace,
    );
    tokio::spawn(supervisor);
    Run {
        job_id: assignment.job_id.clone(),
        attempt: assignment.attempt,
        rank: assignment.rank,
        stop: Stop {
            ordered: AtomicBool::new(false),
            orders,
        },
        step,
        events: rx,
        ended: false,
    }
}

/// Which run a child belongs to, for its log lines.
#[derive(Debug, Clone)]
struct RunIds {
    job_id: String,
    attempt: u32,
    rank: u32,
}

/// Feeds the child its assignment and stop orders, forwards its events and log lines, and when
/// it ends without saying how, reports how it died.
async fn supervise(
    child: std::io::Result<tokio::process::Child>,
    assignment: pb::Assignment,
    ids: RunIds,
    events: mpsc::UnboundedSender<pb::WorkerEvent>,
    step: Arc<AtomicU64>,
    mut stop_orders: mpsc::UnboundedReceiver<Order>,
    shutdown_grace: Duration,
) {
    use prost::Message;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

    let send = |event: Event| {
        let _ = events.send(pb::WorkerEvent { event: Some(event) });
    };
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            send(Event::Failed(pb::Failure {
                message: format!("starting the training process failed: {e}"),
                retryable: true,
            }));
            return;
        }
    };
    let (Some(mut stdin), Some(mut stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        unreachable!("all three pipes were requested");
    };
    let last_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let relay = tokio::spawn(relay_log(stderr, ids.clone(), last_error.clone()));
    // A child that died before reading its assignment shows in its exit status below.
    let _ = stdin.write_all(&assignment.encode_length_delimited_to_vec()).await;
    let mut ended = false;
    let mut orders_open = true;
    let mut kill_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            frame = read_frame(&mut stdout) => match frame {
                Some(Ok(event)) => {
                    match &event.event {
                        Some(Event::Metrics(m)) => step.store(m.step, Ordering::Relaxed),
                        Some(Event::Started(s)) => step.store(*s, Ordering::Relaxed),
                        Some(Event::Finished(_) | Event::Failed(_) | Event::Stopped(_) | Event::Preempted(_)) => ended = true,
                        _ => {}
                    }
                    let _ = events.send(event);
                }
                Some(Err(e)) => {
                    tracing::warn!(job_id = %ids.job_id, attempt = ids.attempt, rank = ids.rank, error = %e, "unreadable event from the training process");
                }
                None => break,
            },
            order = stop_orders.recv(), if orders_open => match order {
                Some(order) => {
                    let _ = stdin.write_all(&[order.byte()]).await;
                    let _ = stdin.flush().await;
                    let grace = match order {
                        Order::Stop => STOP_GRACE,
                        Order::Preempt => shutdown_grace,
                    };
                    let at = tokio::time::Instant::now() + grace;
                    kill_at = Some(kill_at.map_or(at, |earlier| earlier.min(at)));
                }
                None => orders_open = false,
            },
            _ = tokio::time::sleep_until(kill_at.unwrap_or_else(tokio::time::Instant::now)), if kill_at.is_some() => {
                tracing::warn!(job_id = %ids.job_id, attempt = ids.attempt, rank = ids.rank, "the training process did not stop in time; killing it");
                let _ = child.start_kill();
                kill_at = None;
            }
        }
    }
    drop(stdin);
    let status = child.wait().await;
    let _ = relay.await;
    let how = match &status {
        Ok(status) => describe_exit(*status),
        Err(e) => format!("could not be waited for ({e})"),
    };
    tracing::info!(job_id = %ids.job_id, attempt = ids.attempt, rank = ids.rank, ended = %how, "training process ended");
    if !ended {
        let last = last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        send(Event::Failed(pb::Failure {
            message: match last {
                Some(error) => format!("the training process {how}; its last error: {error}"),
                None => format!("the training process {how}"),
            },
            retryable: true,
        }));
    }

    /// The next length-delimited event; None at the end of the stream.
    async fn read_frame(stdout: &mut tokio::process::ChildStdout) -> Option<Result<pb::WorkerEvent, String>> {
        let mut length = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = stdout.read_u8().await.ok()?;
            length |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let mut bytes = vec![0u8; length as usize];
        stdout.read_exact(&mut bytes).await.ok()?;
        Some(pb::WorkerEvent::decode(bytes.as_slice()).map_err(|e| e.to_string()))
    }

    /// Logs the child's lines again with the run's ids; keeps the last error's text.
    async fn relay_log(
        stderr: tokio::process::ChildStderr,
        ids: RunIds,
        last_error: Arc<std::sync::Mutex<Option<String>>>,
    ) {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let parsed: Option<serde_json::Value> = serde_json::from_str(&line).ok();
            let level = parsed
                .as_ref()
                .and_then(|v| v["level"].as_str())
                .unwrap_or("ERROR")
                .to_string();
            let message = parsed
                .as_ref()
                .and_then(|v| v["fields"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| line.clone());
            let fields = parsed
                .as_ref()
                .and_then(|v| v["fields"].as_object())
                .map(|f| {
                    f.iter()
                        .filter(|(k, _)| k.as_str() != "message")
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let (job_id, attempt, rank) = (&ids.job_id, ids.attempt, ids.rank);
            match level.as_str() {
                "ERROR" => {
                    *last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(message.clone());
                    tracing::error!(job_id = %job_id, attempt, rank, fields = %fields, "{message}");
                }
                "WARN" => tracing::warn!(job_id = %job_id, attempt, rank, fields = %fields, "{message}"),
                "DEBUG" | "TRACE" => tracing::debug!(job_id = %job_id, attempt, rank, fields = %fields, "{message}"),
                _ => tracing::info!(job_id = %job_id, attempt, rank, fields = %fields, "{message}"),
            }
        }
    }
}

/// `exited with status 1`, `was killed by signal 9 (SIGKILL)`.
fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(signal) => {
            let name = match signal {
                libc::SIGKILL => " (SIGKILL: killed, for instance by the out-of-memory killer)",
                libc::SIGABRT => " (SIGABRT: aborted)",
                libc::SIGSEGV => " (SIGSEGV: invalid memory access)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGBUS => " (SIGBUS)",
                _ => "",
            };
            format!("was killed by signal {signal}{name}")
        }
        None => format!("ended ({status})"),
    }
}

/// `worker attempt`: runs one attempt in this process, the child of a `worker serve` agent
/// (see the module documentation for the pipes). Returns when the attempt has ended and its
/// last event is written.
pub fn run_attempt(device: DeviceSpec, base: TrainOptions) -> std::io::Result<()> {
    use prost::Message;
    use std::io::{Read, Write};

    // Die with the agent, whatever kills it.
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_PDEATHSIG only sets this process's parent-death signal.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    let parent = std::os::unix::process::parent_id();
    if parent == 1 {
        // The agent died before the death signal was armed.
        return Err(std::io::Error::other("the agent that started this attempt is gone"));
    }
    let mut stdin = std::io::stdin().lock();
    let mut length = 0u64;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8];
        stdin.read_exact(&mut byte)?;
        length |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let mut bytes = vec![0u8; length as usize];
    stdin.read_exact(&mut bytes)?;
    drop(stdin);
    let assignment = pb::Assignment::decode(bytes.as_slice()).map_err(std::io::Error::other)?;

    let (tx, mut rx) = mpsc::unbounded_channel::<pb::WorkerEvent>();
    let stop = Arc::new(AtomicBool::new(false));
    let preempt = Arc::new(AtomicBool::new(false));
    let forward = Arc::new(Forward {
        events: tx,
        stop: stop.clone(),
        preempt: preempt.clone(),
        step: Arc::new(AtomicU64::new(0)),
    });
    // Orders are bytes on stdin (see the module's doc); the agent gone (stdin closed) stops the
    // run too.
    let ordered = preempt.clone();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut byte = [0u8];
        while let Ok(1) = stdin.read(&mut byte) {
            if byte[0] != Order::Preempt.byte() {
                break;
            }
            ordered.store(true, Ordering::Relaxed);
        }
        stop.store(true, Ordering::Relaxed);
    });
    // Events go out as they come, from a thread of their own.
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut stdout = std::io::stdout().lock();
        while let Some(event) = rx.blocking_recv() {
            stdout.write_all(&event.encode_length_delimited_to_vec())?;
            stdout.flush()?;
        }
        Ok(())
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // A signal meant for the agent may reach its child too (Ctrl-C on a terminal signals the
    // whole process group, Slurm signals every process of a step): it saves and stops as well.
    runtime.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("signalled: saving a checkpoint at the next step boundary, then stopping");
            preempt.store(true, Ordering::Relaxed);
        }
    });
    let end = match job_of(&assignment, device) {
        Err(message) => Event::Failed(pb::Failure {
            message,
            retryable: false,
        }),
        Ok(config) => run_job(&config, &assignment, base, forward.clone(), runtime.handle()),
    };
    if let Event::Failed(failure) = &end {
        tracing::error!(job_id = %assignment.job_id, "{}", failure.message);
    }
    forward.send(end);
    drop(forward);
    writer
        .join()
        .map_err(|_| std::io::Error::other("the event writer panicked"))??;
    Ok(())
}

/// Whether the coordinator refused the worker, as opposed to failing to answer (down,
/// restarting, overloaded), which is retried.
fn refused(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
    )
}

/// The agent's connection and what it is doing.
struct Agent {
    options: AgentOptions,
    client: Client,
    worker_id: String,
    interval: Duration,
    run: Option<Run>,
    pending: Vec<pb::WorkerEvent>,
    /// When pending events may be sent next.
    next_report: tokio::time::Instant,
    /// The last report reached the coordinator (otherwise urgent events wait for the retry too).
    reachable: bool,
    /// Shutting down: no new work.
    leaving: bool,
    /// What `/metrics` shows.
    metrics: Arc<WorkerMetrics>,
}

impl Agent {
    /// Registers (again), keeping the id and the running work. A refusal (a wrong token) is
    /// fatal; an unreachable or restarting coordinator is retried.
    async fn register(&mut self) -> Result<(), AgentError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let request = pb::RegisterRequest {
                worker_id: self.worker_id.clone(),
                address: self.options.advertise.clone(),
                device: self.options.device.to_string(),
                hostname: self.options.hostname.clone(),
                running: self.run.as_ref().map(Run::work),
                memory_bytes: self.options.memory_bytes(),
            };
            match self.client.register(request).await {
                Ok(response) => {
                    let response = response.into_inner();
                    self.worker_id = response.worker_id;
                    self.interval = Duration::from_millis(response.heartbeat_interval_ms.max(10));
                    tracing::info!(worker_id = %self.worker_id, coordinator = %self.options.coordinator, heartbeat_ms = response.heartbeat_interval_ms, "registered");
                    return Ok(());
                }
                Err(status) if !refused(&status) => {
                    tracing::warn!(coordinator = %self.options.coordinator, code = ?status.code(), error = %status.message(), "coordinator unreachable; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(status) => {
                    return Err(AgentError::Refused {
                        url: self.options.coordinator.clone(),
                        status,
                    });
                }
            }
        }
    }

    async fn heartbeat(&mut self) -> Result<(), AgentError> {
        let request = pb::HeartbeatRequest {
            worker_id: self.worker_id.clone(),
            running: self.run.as_ref().map(Run::work),
            leaving: false,
        };
        let response = match self.client.heartbeat(request).await {
            Ok(response) => response.into_inner(),
            Err(status) if !refused(&status) => {
                tracing::warn!(code = ?status.code(), error = %status.message(), "heartbeat failed; coordinator unreachable");
                return Ok(());
            }
            Err(status) => {
                return Err(AgentError::Refused {
                    url: self.options.coordinator.clone(),
                    status,
                });
            }
        };
        if response.register_again {
            return self.register().await;
        }
        if let Some(run) = &self.run
            && response.stop_job_ids.contains(&run.job_id)
            && run.stop.order()
        {
            tracing::info!(job_id = %run.job_id, "stop ordered");
        }
        if let Some(assignment) = response.assignment
            && self.run.is_none()
            && !self.leaving
        {
            self.metrics.run_started(AssignmentLabels {
                job: assignment.job_id.clone(),
                attempt: assignment.attempt.to_string(),
                rank: assignment.rank.to_string(),
            });
            self.run = Some(start(&assignment, &mut self.options));
        }
        Ok(())
    }

    /// Sends the pending events; keeps them when the coordinator cannot be reached.
    async fn flush(&mut self) {
        let Some(run) = &self.run else { return };
        if self.pending.is_empty() {
            self.clear_if_ended();
            return;
        }
        let request = pb::ReportRequest {
            worker_id: self.worker_id.clone(),
            job_id: run.job_id.clone(),
            attempt: run.attempt,
            rank: run.rank,
            events: self.pending.clone(),
        };
        let result = self.client.report(request).await;
        self.next_report = tokio::time::Instant::now() + REPORT_EVERY;
        match result {
            Ok(response) => {
                self.reachable = true;
                self.pending.clear();
                if response.into_inner().stop && run.stop.order() {
                    tracing::info!(job_id = %run.job_id, "the job no longer runs here; stopping");
                }
            }
            Err(status) => {
                // Try again with the next heartbeat.
                self.reachable = false;
                self.next_report = tokio::time::Instant::now() + self.interval;
                tracing::warn!(error = %status.message(), pending = self.pending.len(), "report failed; keeping events");
                if self.pending.len() > MAX_PENDING {
                    let excess = self.pending.len() - MAX_PENDING;
                    let mut dropped = 0;
                    self.pending.retain(|e| {
                        let drop = dropped < excess && matches!(e.event, Some(Event::Metrics(_)));
                        dropped += usize::from(drop);
                        !drop
                    });
                }
            }
        }
        self.clear_if_ended();
    }

    /// Forgets the run once it has ended and the coordinator has heard everything about it.
    fn clear_if_ended(&mut self) {
        if self.pending.is_empty()
            && let Some(run) = self.run.take_if(|r| r.ended)
        {
            tracing::info!(job_id = %run.job_id, "assignment ended");
            if let Some(hold) = &mut self.options.port_hold {
                hold.reclaim();
            }
        }
    }

    /// Waits for the next event of the run, if one is running.
    async fn next_event(run: &mut Option<Run>) -> Option<pb::WorkerEvent> {
        match run {
            Some(run) if !run.ended => run.events.recv().await,
            _ => std::future::pending().await,
        }
    }

    /// Whether pending events include one that should not wait for the next batch.
    fn urgent(&self) -> bool {
        self.pending.iter().any(|e| !matches!(e.event, Some(Event::Metrics(_))))
    }

    fn take_event(&mut self, event: Option<pb::WorkerEvent>) {
        let Some(run) = &mut self.run else { return };
        let mut next = event;
        while let Some(event) = next {
            if matches!(
                event.event,
                Some(Event::Finished(_) | Event::Failed(_) | Event::Stopped(_) | Event::Preempted(_))
            ) {
                run.ended = true;
            }
            self.metrics.event(&event);
            self.pending.push(event);
            next = run.events.try_recv().ok();
        }
        if next_is_closed(run) {
            if !run.ended {
                self.metrics.run_lost();
            }
            run.ended = true;
        }
    }
}

fn next_is_closed(run: &Run) -> bool {
    run.events.is_closed() && run.events.is_empty()
}

/// Runs the agent until `shutdown` resolves; a running job then saves a checkpoint at its next
/// step boundary and stops (its process is killed after [`AgentOptions::shutdown_grace`]), its
/// end is reported, and the agent leaves the pool before returning.
pub async fn serve(options: AgentOptions, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let channel = gantry_proto::client::channel(&options.coordinator, options.tls_ca.as_deref())?;
    let client = WorkerServiceClient::with_interceptor(channel, options.token.clone());
    let metrics = Arc::new(WorkerMetrics::new());
    if let Some(listen) = options.metrics_listen {
        let bound = crate::telemetry::serve(listen, metrics.clone())
            .await
            .map_err(|source| AgentError::Metrics { listen, source })?;
        tracing::info!(address = %bound, "serving Prometheus metrics at http://{bound}/metrics");
    }
    let mut agent = Agent {
        options,
        client,
        worker_id: String::new(),
        interval: Duration::from_secs(1),
        run: None,
        pending: Vec::new(),
        next_report: tokio::time::Instant::now(),
        reachable: true,
        leaving: false,
        metrics,
    };
    tokio::pin!(shutdown);
    tokio::select! {
        registered = agent.register() => registered?,
        _ = &mut shutdown => return Ok(()),
    }
    let mut ticker = tokio::time::interval(agent.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticker.tick() => {
                let interval = agent.interval;
                agent.heartbeat().await?;
                if agent.interval != interval {
                    ticker = tokio::time::interval(agent.interval);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                }
                agent.flush().await;
            }
            event = Agent::next_event(&mut agent.run) => {
                agent.take_event(event);
                if (agent.urgent() && agent.reachable) || tokio::time::Instant::now() >= agent.next_report {
                    agent.flush().await;
                }
            }
            _ = tokio::time::sleep_until(agent.next_report), if !agent.pending.is_empty() => {
                agent.flush().await;
            }
        }
    }
    if let Some(run) = &agent.run {
        tracing::info!(job_id = %run.job_id, "shutting down: saving a checkpoint at the next step boundary, then stopping");
        run.stop.preempt();
    }
    agent.leaving = true;
    while agent.run.as_ref().is_some_and(|r| !r.ended) {
        // Heartbeats go on (the coordinator must not think this worker lost while its rank
        // saves), and so do progress and the checkpoint.
        tokio::select! {
            _ = ticker.tick() => agent.heartbeat().await?,
            event = Agent::next_event(&mut agent.run) => {
                agent.take_event(event);
                if (agent.urgent() && agent.reachable) || tokio::time::Instant::now() >= agent.next_report {
                    agent.flush().await;
                }
            }
        }
    }
    agent.leave().await;
    Ok(())
}

/// How long a shutting-down agent keeps trying to tell an unreachable coordinator how its run
/// ended and that it leaves.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(15);

impl Agent {
    /// Reports what is left and leaves the pool, retrying a coordinator that does not answer
    /// for a while; without it, the coordinator notices the silence after its heartbeat
    /// timeout.
    async fn leave(&mut self) {
        let deadline = tokio::time::Instant::now() + LEAVE_TIMEOUT;
        loop {
            self.flush().await;
            if self.pending.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    pending = self.pending.len(),
                    "the coordinator did not take the run's last events"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if self.worker_id.is_empty() {
            return;
        }
        let request = pb::HeartbeatRequest {
            worker_id: self.worker_id.clone(),
            running: None,
            leaving: true,
        };
        let left = tokio::time::timeout_at(deadline, self.client.heartbeat(request)).await;
        match left {
            Ok(Ok(_)) => tracing::info!(worker_id = %self.worker_id, "left the pool"),
            Ok(Err(status)) => tracing::warn!(error = %status.message(), "leaving the pool failed"),
            Err(_) => tracing::warn!("the coordinator did not answer the leaving heartbeat"),
        }
    }
}
