//! The control loop of `worker serve`: [`serve`] registers with the coordinator (again, under
//! the same id, when it restarts), heartbeats, starts each assignment's run through the
//! [`supervisor`](super::supervisor), passes stop orders on, and reports the run's events,
//! batching step metrics and keeping them while the coordinator cannot be reached. On shutdown
//! it preempts the run, waits for its end and leaves the pool.
//!
//! Its options ([`AgentOptions`]) and errors ([`AgentError`]) live here too.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use gantry_job::DeviceSpec;
use gantry_proto::auth::Token;
use gantry_proto::client::ConnectError;
use gantry_proto::pb;
use gantry_proto::pb::worker_event::Event;
use gantry_proto::pb::worker_service_client::WorkerServiceClient;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;

use super::supervisor::{RunIds, Supervised};
use crate::telemetry::{AgentEvent, AssignmentLabels, StopCause, WorkerMetrics};

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

/// Step metrics go to the coordinator in batches at most this often; the start, checkpoints and
/// the end of a run go at once.
const REPORT_EVERY: Duration = Duration::from_millis(200);

/// The default of [`AgentOptions::shutdown_grace`]: a step and a checkpoint write of a large
/// model on a slow bucket, inside a Kubernetes termination grace period of five minutes.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(240);

/// How long a shutting-down agent keeps trying to tell an unreachable coordinator how its run
/// ended and that it leaves.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(15);

/// The run of one assignment, as the control loop follows it.
#[derive(Debug)]
struct Run {
    ids: RunIds,
    supervised: Supervised,
    /// Its last event has come (or its supervisor is gone without one).
    ended: bool,
}

impl Run {
    fn work(&self) -> pb::RunningWork {
        pb::RunningWork {
            job_id: self.ids.job_id.clone(),
            attempt: self.ids.attempt,
            rank: self.ids.rank,
            step: self.supervised.step.load(Ordering::Relaxed),
        }
    }

    /// Moves `first` and the events already queued behind it to `pending`, counting them in
    /// `metrics`. The run has ended at its terminal event, or when its supervisor is gone
    /// without sending one (counted as a lost run).
    fn take_events(
        &mut self,
        first: Option<pb::WorkerEvent>,
        pending: &mut Vec<pb::WorkerEvent>,
        metrics: &WorkerMetrics,
    ) {
        let mut next = first;
        while let Some(event) = next {
            self.ended |= event.is_terminal();
            metrics.emit(AgentEvent::Reported(&event));
            pending.push(event);
            next = self.supervised.events.try_recv().ok();
        }
        let events = &self.supervised.events;
        if events.is_closed() && events.is_empty() {
            if !self.ended {
                metrics.emit(AgentEvent::RunLost);
            }
            self.ended = true;
        }
    }
}

/// Whether pending events include one that should not wait for the next batch.
fn urgent(pending: &[pb::WorkerEvent]) -> bool {
    pending.iter().any(|e| !matches!(e.event, Some(Event::Metrics(_))))
}

/// Drops the oldest step metrics beyond [`MAX_PENDING`] events; the others are kept whatever
/// their number.
fn drop_excess(pending: &mut Vec<pb::WorkerEvent>) {
    let excess = pending.len().saturating_sub(MAX_PENDING);
    let mut dropped = 0;
    pending.retain(|e| {
        let drop = dropped < excess && matches!(e.event, Some(Event::Metrics(_)));
        dropped += usize::from(drop);
        !drop
    });
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
    /// What the agent tells the coordinator a rank may use here.
    fn memory_bytes(&self) -> u64 {
        crate::device::rank_memory(self.options.device, self.options.memory_limit)
    }

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
                memory_bytes: self.memory_bytes(),
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
            && response.stop_job_ids.contains(&run.ids.job_id)
            && run.supervised.stop.order()
        {
            self.metrics.emit(AgentEvent::StopOrdered {
                job_id: &run.ids.job_id,
                cause: StopCause::Ordered,
            });
        }
        if let Some(assignment) = response.assignment
            && self.run.is_none()
            && !self.leaving
        {
            self.metrics.emit(AgentEvent::RunStarted(&AssignmentLabels {
                job: assignment.job_id.clone(),
                attempt: assignment.attempt.to_string(),
                rank: assignment.rank.to_string(),
            }));
            self.run = Some(Run {
                ids: RunIds::of(&assignment),
                supervised: super::supervisor::start(&assignment, &mut self.options),
                ended: false,
            });
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
            job_id: run.ids.job_id.clone(),
            attempt: run.ids.attempt,
            rank: run.ids.rank,
            events: self.pending.clone(),
        };
        let result = self.client.report(request).await;
        self.next_report = tokio::time::Instant::now() + REPORT_EVERY;
        match result {
            Ok(response) => {
                self.reachable = true;
                self.pending.clear();
                if response.into_inner().stop && run.supervised.stop.order() {
                    self.metrics.emit(AgentEvent::StopOrdered {
                        job_id: &run.ids.job_id,
                        cause: StopCause::NotHere,
                    });
                }
            }
            Err(status) => {
                // Try again with the next heartbeat.
                self.reachable = false;
                self.next_report = tokio::time::Instant::now() + self.interval;
                tracing::warn!(error = %status.message(), pending = self.pending.len(), "report failed; keeping events");
                drop_excess(&mut self.pending);
            }
        }
        self.clear_if_ended();
    }

    /// Forgets the run once it has ended and the coordinator has heard everything about it.
    fn clear_if_ended(&mut self) {
        if self.pending.is_empty()
            && let Some(run) = self.run.take_if(|r| r.ended)
        {
            tracing::info!(job_id = %run.ids.job_id, "assignment ended");
            if let Some(hold) = &mut self.options.port_hold {
                hold.reclaim();
            }
        }
    }

    /// Waits for the next event of the run, if one is running.
    async fn next_event(run: &mut Option<Run>) -> Option<pb::WorkerEvent> {
        match run {
            Some(run) if !run.ended => run.supervised.events.recv().await,
            _ => std::future::pending().await,
        }
    }

    /// Takes a run's event (None: its supervisor is gone) and reports at once when it is urgent
    /// or a batch is due.
    async fn take_event(&mut self, event: Option<pb::WorkerEvent>) {
        if let Some(run) = &mut self.run {
            run.take_events(event, &mut self.pending, &self.metrics);
        }
        if (urgent(&self.pending) && self.reachable) || tokio::time::Instant::now() >= self.next_report {
            self.flush().await;
        }
    }

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
            event = Agent::next_event(&mut agent.run) => agent.take_event(event).await,
            _ = tokio::time::sleep_until(agent.next_report), if !agent.pending.is_empty() => {
                agent.flush().await;
            }
        }
    }
    if let Some(run) = &agent.run {
        tracing::info!(job_id = %run.ids.job_id, "shutting down: saving a checkpoint at the next step boundary, then stopping");
        run.supervised.stop.preempt();
    }
    agent.leaving = true;
    while agent.run.as_ref().is_some_and(|r| !r.ended) {
        // Heartbeats go on (the coordinator must not think this worker lost while its rank
        // saves), and so do progress and the checkpoint.
        tokio::select! {
            _ = ticker.tick() => agent.heartbeat().await?,
            event = Agent::next_event(&mut agent.run) => agent.take_event(event).await,
        }
    }
    agent.leave().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::supervisor::{Graces, link};
    use super::*;

    fn metrics(step: u64) -> pb::WorkerEvent {
        pb::WorkerEvent {
            event: Some(Event::Metrics(pb::StepMetrics {
                step,
                ..Default::default()
            })),
        }
    }

    fn started() -> pb::WorkerEvent {
        pb::WorkerEvent {
            event: Some(Event::Started(0)),
        }
    }

    fn run() -> (Run, super::super::supervisor::Supervisor) {
        let ids = RunIds {
            job_id: "job-000001".into(),
            attempt: 1,
            rank: 0,
        };
        let graces = Graces {
            stop: Duration::from_secs(1),
            shutdown: Duration::from_secs(1),
        };
        let (supervisor, supervised) = link(ids.clone(), graces);
        let run = Run {
            ids,
            supervised,
            ended: false,
        };
        (run, supervisor)
    }

    #[test]
    fn a_run_ends_at_its_terminal_event_and_counts_its_outcome() {
        let (mut run, supervisor) = run();
        let metrics = WorkerMetrics::new();
        let mut pending = Vec::new();
        run.take_events(Some(started()), &mut pending, &metrics);
        assert!(!run.ended);
        run.take_events(
            Some(pb::WorkerEvent {
                event: Some(Event::Stopped(7)),
            }),
            &mut pending,
            &metrics,
        );
        assert!(run.ended);
        assert_eq!(pending.len(), 2);
        assert!(urgent(&pending));
        let (_, text) = metrics.respond(None);
        assert!(
            text.contains(r#"gantry_worker_runs_total{outcome="stopped"} 1"#),
            "{text}"
        );
        drop(supervisor);
    }

    #[test]
    fn a_run_whose_supervisor_vanished_without_an_end_is_counted_as_lost() {
        let (mut run, supervisor) = run();
        let metrics = WorkerMetrics::new();
        metrics.emit(AgentEvent::RunStarted(&AssignmentLabels {
            job: "job-000001".into(),
            attempt: "1".into(),
            rank: "0".into(),
        }));
        let mut pending = Vec::new();
        drop(supervisor);
        run.take_events(None, &mut pending, &metrics);
        assert!(run.ended);
        assert!(pending.is_empty());
        let (_, text) = metrics.respond(None);
        assert!(
            text.contains(r#"gantry_worker_runs_total{outcome="failed"} 1"#),
            "{text}"
        );
        assert!(text.contains("gantry_worker_busy 0"), "{text}");
    }

    #[test]
    fn events_kept_for_an_unreachable_coordinator_drop_the_oldest_step_metrics_first() {
        let mut pending: Vec<_> = (0..MAX_PENDING as u64 + 10).map(metrics).collect();
        pending.insert(3, started());
        assert!(!urgent(&pending[4..]));
        drop_excess(&mut pending);
        assert_eq!(pending.len(), MAX_PENDING);
        // The eleven oldest step metrics go; the start, older than most of them, stays.
        assert_eq!(pending[0], started());
        assert_eq!(pending[1], metrics(11));
        assert_eq!(pending.last(), Some(&metrics(MAX_PENDING as u64 + 9)));
        let mut few = vec![metrics(1), metrics(2)];
        drop_excess(&mut few);
        assert_eq!(few, vec![metrics(1), metrics(2)]);
    }
}
