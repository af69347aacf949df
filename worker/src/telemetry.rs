//! The worker agent's telemetry: Prometheus metrics (`worker serve --metrics-listen`) of what
//! its runs report (step time and where it went, throughput, checkpoint writes) and whether it is
//! busy, served as text at `/metrics`; and the agent's events that matter ([`AgentEvent`]), each
//! logged and counted by one call of [`WorkerMetrics::emit`], so that the log and the metrics
//! cannot disagree and tests read the counters rather than the log's wording.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use gantry_proto::pb;
use gantry_proto::pb::worker_event::Event;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The assignment a worker runs.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AssignmentLabels {
    /// Job id.
    pub job: String,
    /// Attempt number.
    pub attempt: String,
    /// This worker's rank in the gang.
    pub rank: String,
}

/// How a run ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `finished`, `failed`, `stopped` or `preempted`.
    pub outcome: String,
}

/// Why the coordinator stopped the run here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// Its heartbeat answer named the job (cancelled, or its gang stopping).
    Ordered,
    /// It answered a report saying the job no longer runs on this worker.
    NotHere,
}

/// An event of the agent that matters: [`WorkerMetrics::emit`] logs it and counts it.
#[derive(Debug)]
pub enum AgentEvent<'a> {
    /// An assignment's run started here.
    RunStarted(&'a AssignmentLabels),
    /// An event the run reported (a step's metrics, a checkpoint, its end).
    Reported(&'a pb::WorkerEvent),
    /// The run's process ended without saying how.
    RunLost,
    /// The coordinator ordered the run here to stop.
    StopOrdered {
        /// The job.
        job_id: &'a str,
        /// Why.
        cause: StopCause,
    },
}

type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;

/// The metrics, updated from the events of the agent's runs.
#[derive(Debug)]
pub struct WorkerMetrics {
    registry: Registry,
    busy: Gauge,
    assignment: Family<AssignmentLabels, Gauge>,
    step: Gauge,
    steps: Counter,
    step_seconds: Histogram,
    step_seconds_total: FloatCounter,
    loader_wait_seconds_total: FloatCounter,
    collective_seconds_total: FloatCounter,
    collective_share: FloatGauge,
    images_per_second: FloatGauge,
    checkpoint_write_seconds: Histogram,
    checkpoints: Family<AssignmentLabels, Counter>,
    runs_started: Counter,
    stops_ordered: Counter,
    runs: Family<OutcomeLabels, Counter>,
    totals: std::sync::Mutex<RunTotals>,
    /// The assignment of the run in progress.
    current: std::sync::Mutex<Option<AssignmentLabels>>,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerMetrics {
    /// Metrics at zero, registered under `gantry_worker_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gantry_worker");
        let busy = Gauge::default();
        registry.register("busy", "1 while a run of a job is in progress here", busy.clone());
        let assignment = Family::<AssignmentLabels, Gauge>::default();
        registry.register(
            "assignment",
            "1 for the job, attempt and rank this worker runs",
            assignment.clone(),
        );
        let step = Gauge::default();
        registry.register("step", "The last step the run here completed", step.clone());
        let steps = Counter::default();
        registry.register("steps", "Steps completed by runs here", steps.clone());
        // 1 ms to about 65 s.
        let step_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register_with_unit(
            "step_duration",
            "Wall time of a step on this rank: batch wait, critic and generator updates, collectives",
            Unit::Seconds,
            step_seconds.clone(),
        );
        let step_seconds_total = FloatCounter::default();
        registry.register_with_unit(
            "step_time",
            "Wall time spent in steps",
            Unit::Seconds,
            step_seconds_total.clone(),
        );
        let loader_wait_seconds_total = FloatCounter::default();
        registry.register_with_unit(
            "loader_wait",
            "Of the step time, waiting for the data loader's next batch",
            Unit::Seconds,
            loader_wait_seconds_total.clone(),
        );
        let collective_seconds_total = FloatCounter::default();
        registry.register_with_unit(
            "collective_time",
            "Of the step time, in collectives (gradient all-reduces, agreement on stopping)",
            Unit::Seconds,
            collective_seconds_total.clone(),
        );
        let collective_share = FloatGauge::default();
        registry.register(
            "collective_share",
            "Share of the current run's step time spent in collectives (0 to 1)",
            collective_share.clone(),
        );
        let images_per_second = FloatGauge::default();
        registry.register(
            "images_per_second",
            "Training throughput of the gang since its run started",
            images_per_second.clone(),
        );
        // 10 ms to about 20 min.
        let checkpoint_write_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 18));
        registry.register_with_unit(
            "checkpoint_write",
            "Time rank 0 here took to write a checkpoint and the metrics file",
            Unit::Seconds,
            checkpoint_write_seconds.clone(),
        );
        let checkpoints = Family::<AssignmentLabels, Counter>::default();
        registry.register(
            "checkpoints",
            "Checkpoints the runs here wrote, by job, attempt and rank",
            checkpoints.clone(),
        );
        let runs_started = Counter::default();
        registry.register("runs_started", "Runs of assignments started here", runs_started.clone());
        let stops_ordered = Counter::default();
        registry.register(
            "stops_ordered",
            "Runs here that the coordinator ordered to stop",
            stops_ordered.clone(),
        );
        let runs = Family::<OutcomeLabels, Counter>::default();
        registry.register("runs", "Runs that ended here, by outcome", runs.clone());
        Self {
            registry,
            busy,
            assignment,
            step,
            steps,
            step_seconds,
            step_seconds_total,
            loader_wait_seconds_total,
            collective_seconds_total,
            collective_share,
            images_per_second,
            checkpoint_write_seconds,
            checkpoints,
            runs_started,
            stops_ordered,
            runs,
            totals: std::sync::Mutex::default(),
            current: std::sync::Mutex::default(),
        }
    }

    /// Logs `event` and counts it.
    pub fn emit(&self, event: AgentEvent<'_>) {
        match event {
            AgentEvent::RunStarted(labels) => {
                tracing::info!(job_id = %labels.job, attempt = %labels.attempt, rank = %labels.rank, "assignment started");
                self.run_started(labels);
            }
            AgentEvent::Reported(event) => self.event(event),
            AgentEvent::RunLost => {
                if self.busy.get() == 1 {
                    tracing::warn!("the run's process ended without reporting how");
                    self.run_ended("failed");
                }
            }
            AgentEvent::StopOrdered { job_id, cause } => {
                match cause {
                    StopCause::Ordered => tracing::info!(job_id = %job_id, "stop ordered"),
                    StopCause::NotHere => {
                        tracing::info!(job_id = %job_id, "the job no longer runs here; stopping")
                    }
                }
                self.stops_ordered.inc();
            }
        }
    }

    /// A run of `labels` started here.
    fn run_started(&self, labels: &AssignmentLabels) {
        self.runs_started.inc();
        *self.current.lock().expect("not poisoned") = Some(labels.clone());
        self.assignment.clear();
        self.assignment.get_or_create(labels).set(1);
        self.busy.set(1);
        *self.totals.lock().expect("not poisoned") = RunTotals::default();
        self.collective_share.set(0.0);
    }

    /// An event of the run here.
    fn event(&self, event: &pb::WorkerEvent) {
        match &event.event {
            Some(Event::Metrics(m)) => {
                self.step.set(m.step as i64);
                self.steps.inc();
                self.images_per_second.set(m.images_per_sec);
                if m.step_seconds > 0.0 {
                    self.step_seconds.observe(m.step_seconds);
                    self.step_seconds_total.inc_by(m.step_seconds);
                    self.loader_wait_seconds_total.inc_by(m.loader_wait_seconds);
                    self.collective_seconds_total.inc_by(m.collective_seconds);
                    let mut totals = self.totals.lock().expect("not poisoned");
                    totals.step += m.step_seconds;
                    totals.collective += m.collective_seconds;
                    self.collective_share
                        .set(totals.collective / totals.step.max(f64::MIN_POSITIVE));
                }
            }
            Some(Event::Checkpoint(c)) if c.write_seconds > 0.0 => {
                self.checkpoint_write_seconds.observe(c.write_seconds);
                if let Some(labels) = &*self.current.lock().expect("not poisoned") {
                    tracing::debug!(job_id = %labels.job, rank = %labels.rank, step = c.step, url = %c.url, "checkpoint reported");
                    self.checkpoints.get_or_create(labels).inc();
                }
            }
            _ => {}
        }
        if let Some(outcome) = event.outcome() {
            self.run_ended(outcome);
        }
    }

    fn run_ended(&self, outcome: &str) {
        tracing::info!(outcome, "run ended");
        *self.current.lock().expect("not poisoned") = None;
        self.busy.set(0);
        self.assignment.clear();
        self.runs
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// The metrics now, answering a scrape whose `Accept` header is `accept`: the content type
    /// and the text ([`base::exposition`]).
    pub fn respond(&self, accept: Option<&str>) -> (&'static str, String) {
        base::exposition::respond(&self.registry, accept)
    }
}

/// Sums over the current run, for its collective share.
#[derive(Debug, Default, Clone, Copy)]
struct RunTotals {
    step: f64,
    collective: f64,
}

/// Serves `GET /metrics` on `listen` until the process ends; returns the bound address (port 0
/// picks a free one).
pub async fn serve(listen: SocketAddr, metrics: Arc<WorkerMetrics>) -> std::io::Result<SocketAddr> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    use axum::http::{HeaderMap, header};
    let app = axum::Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let metrics = metrics.clone();
            async move {
                let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
                let (content_type, text) = metrics.respond(accept);
                ([(header::CONTENT_TYPE, content_type)], text)
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics_event(step: u64, step_seconds: f64, collective_seconds: f64) -> pb::WorkerEvent {
        pb::WorkerEvent {
            event: Some(Event::Metrics(pb::StepMetrics {
                step,
                step_seconds,
                collective_seconds,
                loader_wait_seconds: 0.01,
                images_per_sec: 50.0,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn a_run_s_events_show_in_the_text() {
        let m = WorkerMetrics::new();
        m.emit(AgentEvent::RunStarted(&AssignmentLabels {
            job: "job-000001".into(),
            attempt: "1".into(),
            rank: "0".into(),
        }));
        m.emit(AgentEvent::Reported(&metrics_event(1, 0.5, 0.1)));
        m.emit(AgentEvent::Reported(&metrics_event(2, 0.5, 0.3)));
        m.emit(AgentEvent::Reported(&pb::WorkerEvent {
            event: Some(Event::Checkpoint(pb::CheckpointInfo {
                step: 2,
                url: "x".into(),
                write_seconds: 0.2,
            })),
        }));
        let (_, text) = m.respond(Some(base::exposition::OPENMETRICS_TEXT));
        assert!(text.contains("gantry_worker_busy 1"), "{text}");
        assert!(
            text.contains(r#"gantry_worker_assignment{job="job-000001",attempt="1",rank="0"} 1"#),
            "{text}"
        );
        assert!(text.contains("gantry_worker_step 2"), "{text}");
        assert!(text.contains("gantry_worker_step_duration_seconds_count 2"), "{text}");
        assert!(text.contains("gantry_worker_collective_share 0.4"), "{text}");
        assert!(
            text.contains("gantry_worker_checkpoint_write_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains(r#"gantry_worker_checkpoints_total{job="job-000001",attempt="1",rank="0"} 1"#),
            "{text}"
        );
        assert!(text.contains("gantry_worker_runs_started_total 1"), "{text}");
        m.emit(AgentEvent::StopOrdered {
            job_id: "job-000001",
            cause: StopCause::Ordered,
        });
        m.emit(AgentEvent::Reported(&pb::WorkerEvent {
            event: Some(Event::Finished(pb::CheckpointInfo::default())),
        }));
        let (_, text) = m.respond(Some(base::exposition::OPENMETRICS_TEXT));
        assert!(text.contains("gantry_worker_busy 0"), "{text}");
        assert!(
            text.contains(r#"gantry_worker_runs_total{outcome="finished"} 1"#),
            "{text}"
        );
        assert!(!text.contains("gantry_worker_assignment{"), "{text}");
        assert!(text.contains("gantry_worker_stops_ordered_total 1"), "{text}");
        // A lost run after the end is not counted twice.
        m.emit(AgentEvent::RunLost);
        let (_, text) = m.respond(None);
        assert!(!text.contains(r#"outcome="failed""#), "{text}");
    }
}
