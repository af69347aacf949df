//! `worker serve`: the agent that joins a coordinator's pool. It registers (device, address),
//! heartbeats, runs each assignment with [`train`](crate::train::train) on a training thread,
//! streams the run's start, metrics, checkpoints and end back, and stops a run within one step
//! when told to. When the coordinator restarts, the agent registers again under the same id and
//! says what it is running, so the job carries on.

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
use crate::train::{MetricsLine, Observer, TrainOptions};

/// How the agent reaches its coordinator and presents itself.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Coordinator address (`http://host:port` or `https://host:port`).
    pub coordinator: String,
    /// Worker API token.
    pub token: Token,
    /// CA certificate for `https`.
    pub tls_ca: Option<PathBuf>,
    /// Address peers dial for the gradient exchange.
    pub advertise: String,
    /// Device for jobs whose `train.device` is `auto`: the device this worker resolved its own
    /// setting to (`cpu` or `cuda:N`).
    pub device: DeviceSpec,
    /// Host name, for people.
    pub hostname: String,
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
}

type Client = WorkerServiceClient<InterceptedService<Channel, Token>>;

/// Events kept for the coordinator while it cannot be reached; older step metrics are dropped
/// beyond this (the run's own `metrics.jsonl` keeps them all).
const MAX_PENDING: usize = 1000;

/// Step metrics go to the coordinator in batches at most this often; the start, checkpoints and
/// the end of a run go at once.
const REPORT_EVERY: Duration = Duration::from_millis(200);

/// The run of one assignment.
struct Run {
    job_id: String,
    attempt: u32,
    rank: u32,
    stop: Arc<AtomicBool>,
    step: Arc<AtomicU64>,
    events: mpsc::UnboundedReceiver<pb::WorkerEvent>,
    /// The training thread sent its last event.
    ended: bool,
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
        self.send(Event::Metrics(*line));
    }

    fn checkpoint(&self, step: u64, url: &str) {
        self.send(Event::Checkpoint(pb::CheckpointInfo {
            step,
            url: url.to_string(),
        }));
    }

    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
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
    )
}

/// The job an assignment describes, on this worker's device.
fn job_of(assignment: &pb::Assignment, device: DeviceSpec) -> Result<JobConfig, String> {
    let spec = assignment.spec.as_ref().ok_or("the assignment carries no job spec")?;
    let mut config = JobConfig::from_spec(spec).map_err(|e| dataprep::error_chain(&e))?;
    if assignment.world_size > 1 {
        return Err(format!(
            "job.workers is {}: data-parallel training needs the all-reduce between workers, which this worker does not have; run it with workers = 1",
            assignment.world_size
        ));
    }
    if config.train.device == DeviceSpec::Auto {
        config.train.device = device;
    }
    Ok(config)
}

/// Trains a job to its end; the event that says how it ended.
fn run_job(config: &JobConfig, forward: Arc<Forward>, runtime: &Handle) -> Event {
    let options = TrainOptions {
        observer: Some(forward),
        ..TrainOptions::default()
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::train::train(config, &options, runtime)
    }));
    match result {
        Ok(Ok(summary)) => Event::Finished(pb::CheckpointInfo {
            step: summary.steps,
            url: summary.checkpoint,
        }),
        Ok(Err(Error::Stopped { step })) => Event::Stopped(step),
        Ok(Err(e)) => Event::Failed(pb::Failure {
            message: dataprep::error_chain(&e),
            retryable: retryable(&e),
        }),
        Err(panic) => Event::Failed(pb::Failure {
            message: dataprep::Error::panicked("the trainer", panic).to_string(),
            retryable: true,
        }),
    }
}

/// Starts an assignment on a training thread; its I/O runs on the agent's runtime.
fn start(assignment: &pb::Assignment, device: DeviceSpec) -> Run {
    let runtime = Handle::current();
    let (tx, rx) = mpsc::unbounded_channel();
    let stop = Arc::new(AtomicBool::new(false));
    let step = Arc::new(AtomicU64::new(0));
    let forward = Forward {
        events: tx,
        stop: stop.clone(),
        step: step.clone(),
    };
    let job = job_of(assignment, device);
    let job_id = assignment.job_id.clone();
    tracing::info!(job_id = %job_id, attempt = assignment.attempt, rank = assignment.rank, "assignment started");
    std::thread::Builder::new()
        .name(format!("train-{job_id}"))
        .spawn(move || {
            let forward = Arc::new(forward);
            let end = match job {
                Err(message) => Event::Failed(pb::Failure {
                    message,
                    retryable: false,
                }),
                Ok(config) => run_job(&config, forward.clone(), &runtime),
            };
            forward.send(end);
        })
        .expect("spawn the training thread");
    Run {
        job_id: assignment.job_id.clone(),
        attempt: assignment.attempt,
        rank: assignment.rank,
        stop,
        step,
        events: rx,
        ended: false,
    }
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
            && !run.stop.swap(true, Ordering::Relaxed)
        {
            tracing::info!(job_id = %run.job_id, "stop ordered");
        }
        if let Some(assignment) = response.assignment
            && self.run.is_none()
        {
            self.run = Some(start(&assignment, self.options.device));
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
                if response.into_inner().stop && !run.stop.swap(true, Ordering::Relaxed) {
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
                Some(Event::Finished(_) | Event::Failed(_) | Event::Stopped(_))
            ) {
                run.ended = true;
            }
            self.pending.push(event);
            next = run.events.try_recv().ok();
        }
        if next_is_closed(run) {
            run.ended = true;
        }
    }
}

fn next_is_closed(run: &Run) -> bool {
    run.events.is_closed() && run.events.is_empty()
}

/// Runs the agent until `shutdown` resolves; a running job is then stopped (within one step)
/// and its end reported before returning.
pub async fn serve(options: AgentOptions, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let channel = gantry_proto::client::channel(&options.coordinator, options.tls_ca.as_deref())?;
    let client = WorkerServiceClient::with_interceptor(channel, options.token.clone());
    let mut agent = Agent {
        options,
        client,
        worker_id: String::new(),
        interval: Duration::from_secs(1),
        run: None,
        pending: Vec::new(),
        next_report: tokio::time::Instant::now(),
        reachable: true,
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
        tracing::info!(job_id = %run.job_id, "shutting down: stopping the running job");
        run.stop.store(true, Ordering::Relaxed);
    }
    while agent.run.as_ref().is_some_and(|r| !r.ended) {
        let event = Agent::next_event(&mut agent.run).await;
        agent.take_event(event);
    }
    agent.flush().await;
    Ok(())
}
