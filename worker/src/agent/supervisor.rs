//! The parent side of a run: [`start`] spawns the attempt's child process (`worker attempt`)
//! and a [`Supervisor`] task that feeds it its assignment and orders, forwards its events and
//! log lines, kills it when it does not stop in time, and, when it ends without saying how,
//! reports how it died ([`describe_exit`]). The control loop holds the other end, a
//! [`Supervised`]: the run's [`Stop`] orders, its last step and its events.
//!
//! The supervisor's I/O is passed in (a [`Child`] of any pipes and any [`Process`]), so the
//! tests play the child in memory.

use std::future::Future;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use gantry_proto::pb;
use gantry_proto::pb::worker_event::Event;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::control::AgentOptions;
use super::pipe::{Order, PipeError, Reader, Writer};

/// How long a run told to stop may take to end its step before its process is killed: a rank
/// blocked in an exchange with a lost peer (or in the rendezvous of a gang that will never
/// form) would otherwise hold its worker for the whole collective timeout. The checkpoints are
/// safe; only the step in flight is lost.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);

/// How long a child may take to obey an order before it is killed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Graces {
    /// After [`Order::Stop`]: [`STOP_GRACE`].
    pub(crate) stop: Duration,
    /// After [`Order::Preempt`]: [`AgentOptions::shutdown_grace`].
    pub(crate) shutdown: Duration,
}

impl Graces {
    fn of(&self, order: Order) -> Duration {
        match order {
            Order::Stop => self.stop,
            Order::Preempt => self.shutdown,
        }
    }
}

/// Which run a child belongs to, for its log lines.
#[derive(Debug, Clone)]
pub(crate) struct RunIds {
    pub(crate) job_id: String,
    pub(crate) attempt: u32,
    pub(crate) rank: u32,
}

impl RunIds {
    /// The ids of an assignment's run.
    pub(crate) fn of(assignment: &pb::Assignment) -> RunIds {
        RunIds {
            job_id: assignment.job_id.clone(),
            attempt: assignment.attempt,
            rank: assignment.rank,
        }
    }
}

/// Stop orders for a run's child process.
#[derive(Debug)]
pub(crate) struct Stop {
    ordered: AtomicBool,
    orders: mpsc::UnboundedSender<Order>,
}

impl Stop {
    /// Orders the run to stop; whether this is the first order.
    pub(crate) fn order(&self) -> bool {
        let first = !self.ordered.swap(true, Ordering::Relaxed);
        if first {
            // A closed channel means the child has already ended.
            let _ = self.orders.send(Order::Stop);
        }
        first
    }

    /// Orders the run to save and stop (a stop order, if one came first, wins).
    pub(crate) fn preempt(&self) {
        if !self.ordered.load(Ordering::Relaxed) {
            let _ = self.orders.send(Order::Preempt);
        }
    }
}

/// The control loop's end of a supervised run.
#[derive(Debug)]
pub(crate) struct Supervised {
    /// Orders for the child.
    pub(crate) stop: Stop,
    /// The last step the child reported.
    pub(crate) step: Arc<AtomicU64>,
    /// The run's events; the channel closes after the last.
    pub(crate) events: mpsc::UnboundedReceiver<pb::WorkerEvent>,
}

/// The supervisor's end of a run: what it reports upward and the orders it passes on.
#[derive(Debug)]
pub(crate) struct Supervisor {
    ids: RunIds,
    events: mpsc::UnboundedSender<pb::WorkerEvent>,
    step: Arc<AtomicU64>,
    orders: mpsc::UnboundedReceiver<Order>,
    graces: Graces,
}

/// A supervisor and the control loop's end of it, joined.
pub(crate) fn link(ids: RunIds, graces: Graces) -> (Supervisor, Supervised) {
    let (events, events_rx) = mpsc::unbounded_channel();
    let (orders_tx, orders) = mpsc::unbounded_channel();
    let step = Arc::new(AtomicU64::new(0));
    let supervisor = Supervisor {
        ids,
        events,
        step: step.clone(),
        orders,
        graces,
    };
    let supervised = Supervised {
        stop: Stop {
            ordered: AtomicBool::new(false),
            orders: orders_tx,
        },
        step,
        events: events_rx,
    };
    (supervisor, supervised)
}

/// A child process as the supervisor sees it: how it ends, and a way to end it.
pub(crate) trait Process {
    /// Kills the process (SIGKILL); it may have ended already.
    fn kill(&mut self);
    /// Waits for the process to end.
    fn wait(&mut self) -> impl Future<Output = std::io::Result<ExitStatus>> + Send;
}

impl Process for tokio::process::Child {
    fn kill(&mut self) {
        let _ = self.start_kill();
    }

    fn wait(&mut self) -> impl Future<Output = std::io::Result<ExitStatus>> + Send {
        tokio::process::Child::wait(self)
    }
}

/// A child process and the agent's ends of its pipes (see the package documentation).
#[derive(Debug)]
pub(crate) struct Child<P, W, R, E> {
    /// The process.
    pub(crate) process: P,
    /// Its stdin: the assignment, then orders.
    pub(crate) stdin: W,
    /// Its stdout: events.
    pub(crate) stdout: R,
    /// Its stderr: log lines.
    pub(crate) stderr: E,
}

/// Starts an assignment's attempt in a child process, supervised on the agent's runtime.
pub(crate) fn start(assignment: &pb::Assignment, options: &mut AgentOptions) -> Supervised {
    let ids = RunIds::of(assignment);
    if assignment.rank == 0
        && let Some(hold) = &mut options.port_hold
    {
        // Rank 0 hosts the store on the advertised port.
        hold.release();
    }
    let graces = Graces {
        stop: STOP_GRACE,
        shutdown: options.shutdown_grace,
    };
    let (supervisor, supervised) = link(ids, graces);
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
    let spawned = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut process = match spawned {
        Ok(process) => process,
        Err(e) => {
            supervisor.send(Event::Failed(pb::Failure {
                message: format!("starting the training process failed: {e}"),
                retryable: true,
            }));
            return supervised;
        }
    };
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (process.stdin.take(), process.stdout.take(), process.stderr.take())
    else {
        unreachable!("all three pipes were requested");
    };
    let child = Child {
        process,
        stdin,
        stdout,
        stderr,
    };
    let assignment = assignment.clone();
    tokio::spawn(async move { supervisor.run(child, &assignment).await });
    supervised
}

impl Supervisor {
    fn send(&self, event: Event) {
        // The control loop outlives every run; a closed channel means it is shutting down.
        let _ = self.events.send(pb::WorkerEvent { event: Some(event) });
    }

    /// Feeds the child its assignment and orders, forwards its events and log lines until it
    /// ends, and when it has not said how its run ended, reports how it died.
    pub(crate) async fn run<P, W, R, E>(mut self, child: Child<P, W, R, E>, assignment: &pb::Assignment)
    where
        P: Process,
        W: AsyncWrite + Unpin,
        R: AsyncRead + Unpin,
        E: AsyncRead + Unpin,
    {
        let Child {
            mut process,
            stdin,
            stdout,
            stderr,
        } = child;
        let last_error = Mutex::new(None::<String>);
        let ids = self.ids.clone();
        let (pumped, ()) = tokio::join!(
            self.pump(&mut process, stdin, stdout, assignment),
            relay_log(stderr, &ids, &last_error)
        );
        let status = process.wait().await;
        let how = match &status {
            Ok(status) => describe_exit(*status),
            Err(e) => format!("could not be waited for ({e})"),
        };
        tracing::info!(job_id = %ids.job_id, attempt = ids.attempt, rank = ids.rank, ended = %how, "training process ended");
        if let Pumped::Unfinished(broken) = pumped {
            let mut message = format!("the training process {how}");
            if let Some(e) = broken {
                message += &format!("; its events could not be read ({e})");
            }
            if let Some(error) = last_error.into_inner().unwrap_or_else(PoisonError::into_inner) {
                message += &format!("; its last error: {error}");
            }
            self.send(Event::Failed(pb::Failure {
                message,
                retryable: true,
            }));
        }
    }

    /// Writes the assignment and the orders to the child and forwards its events until its
    /// stdout ends (or can no longer be read, when it is killed).
    async fn pump<P, W, R>(&mut self, process: &mut P, stdin: W, stdout: R, assignment: &pb::Assignment) -> Pumped
    where
        P: Process,
        W: AsyncWrite + Unpin,
        R: AsyncRead + Unpin,
    {
        let ids = self.ids.clone();
        let mut stdin = Writer::new(stdin);
        let mut stdout = Reader::new(stdout);
        // A child that died before reading its assignment shows in its exit status.
        let _ = stdin.frame(assignment).await;
        let mut ended = false;
        let mut orders_open = true;
        let mut kill_at: Option<tokio::time::Instant> = None;
        let broken = loop {
            tokio::select! {
                frame = stdout.frame::<pb::WorkerEvent>() => match frame {
                    Ok(Some(event)) => {
                        match &event.event {
                            Some(Event::Metrics(m)) => self.step.store(m.step, Ordering::Relaxed),
                            Some(Event::Started(s)) => self.step.store(*s, Ordering::Relaxed),
                            _ => {}
                        }
                        ended |= event.is_terminal();
                        let _ = self.events.send(event);
                    }
                    Ok(None) => break None,
                    Err(e) if e.recoverable() => {
                        tracing::warn!(job_id = %ids.job_id, attempt = ids.attempt, rank = ids.rank, error = %e, "unreadable event from the training process");
                    }
                    Err(e @ PipeError::Truncated { .. }) | Err(e @ PipeError::Io(_)) => {
                        tracing::warn!(job_id = %ids.job_id, attempt = ids.attempt, rank = ids.rank, error = %e, "the training process's events ended");
                        break Some(e);
                    }
                    Err(e) => {
                        // Out of step with the child: nothing it sends can be read any more.
                        tracing::warn!(job_id = %ids.job_id, attempt = ids.attempt, rank = ids.rank, error = %e, "the training process's events cannot be read; killing it");
                        process.kill();
                        break Some(e);
                    }
                },
                order = self.orders.recv(), if orders_open => match order {
                    Some(order) => {
                        let _ = stdin.order(order).await;
                        let at = tokio::time::Instant::now() + self.graces.of(order);
                        kill_at = Some(kill_at.map_or(at, |earlier| earlier.min(at)));
                    }
                    None => orders_open = false,
                },
                _ = tokio::time::sleep_until(kill_at.unwrap_or_else(tokio::time::Instant::now)), if kill_at.is_some() => {
                    tracing::warn!(job_id = %ids.job_id, attempt = ids.attempt, rank = ids.rank, "the training process did not stop in time; killing it");
                    process.kill();
                    kill_at = None;
                }
            }
        };
        // Dropping stdin closes it, which stops a child still running.
        if ended {
            Pumped::Ended
        } else {
            Pumped::Unfinished(broken)
        }
    }
}

/// How the child's events ended.
#[derive(Debug)]
enum Pumped {
    /// With the event that ends the run.
    Ended,
    /// Without it; with why they could not be read, if that is why.
    Unfinished(Option<PipeError>),
}

/// Logs the child's lines again with the run's ids; keeps the last error's text.
async fn relay_log(stderr: impl AsyncRead + Unpin, ids: &RunIds, last_error: &Mutex<Option<String>>) {
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
                *last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(message.clone());
                tracing::error!(job_id = %job_id, attempt, rank, fields = %fields, "{message}");
            }
            "WARN" => tracing::warn!(job_id = %job_id, attempt, rank, fields = %fields, "{message}"),
            "DEBUG" | "TRACE" => tracing::debug!(job_id = %job_id, attempt, rank, fields = %fields, "{message}"),
            _ => tracing::info!(job_id = %job_id, attempt, rank, fields = %fields, "{message}"),
        }
    }
}

/// `exited with status 1`, `was killed by signal 9 (SIGKILL)`.
pub(crate) fn describe_exit(status: ExitStatus) -> String {
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
