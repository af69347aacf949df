//! Typed telemetry: each event of the coordinator that matters is one [`InternalEvent`] value,
//! and [`InternalEvent::emit`] both logs it (a `tracing` event with its fields) and counts it
//! (a Prometheus metric of [`Telemetry`]), so that the log and the metrics cannot disagree and
//! tests read the counters rather than the log's wording.
//!
//! [`Telemetry`] holds the handles (shared atomics): the core and the job store emit into the
//! same one, and [`crate::metrics::Metrics`] registers it once for `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::core::State;

/// Bucket bounds of the queue wait, seconds (a second to a day).
const QUEUE_WAIT_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0, 86400.0,
];

/// The label of a job's final state (`succeeded`, `failed`, `cancelled`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// The state, in lower case.
    pub state: &'static str,
}

impl From<State> for StateLabel {
    fn from(state: State) -> Self {
        Self {
            state: state_label(state),
        }
    }
}

/// A state in lower case, as metric labels spell it.
pub fn state_label(state: State) -> &'static str {
    match state {
        State::Queued => "queued",
        State::Running => "running",
        State::Succeeded => "succeeded",
        State::Failed => "failed",
        State::Cancelled => "cancelled",
    }
}

/// What the coordinator counts since it started, for `/metrics`: handles on shared atomics
/// (clones count into the same metrics), added to only by [`InternalEvent::emit`].
#[derive(Debug, Clone)]
pub struct Telemetry {
    /// Workers dropped from the pool for missing their heartbeats.
    pub workers_lost: Counter,
    /// Gangs that failed and went back to the queue to restart from a checkpoint.
    pub restarts: Counter,
    /// Gangs stopped because a worker was shutting down (re-queued without using a restart).
    pub preemptions: Counter,
    /// Seconds from submission to a job's first assignment.
    pub queue_wait: Histogram,
    /// Jobs that reached a final state, by that state.
    pub jobs_ended: Family<StateLabel, Counter>,
    /// Job records written to the store.
    pub records_written: Counter,
    /// Workers that registered again (a restarted coordinator, a lost connection) while running
    /// their rank, and kept it.
    pub workers_reattached: Counter,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            workers_lost: Counter::default(),
            restarts: Counter::default(),
            preemptions: Counter::default(),
            queue_wait: Histogram::new(QUEUE_WAIT_BUCKETS.iter().copied()),
            jobs_ended: Family::default(),
            records_written: Counter::default(),
            workers_reattached: Counter::default(),
        }
    }
}

impl Telemetry {
    /// Registers every metric (under the registry's prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "workers_lost",
            "Workers dropped from the pool for missing their heartbeats",
            self.workers_lost.clone(),
        );
        registry.register(
            "job_restarts",
            "Gangs that failed and were re-queued to restart from their latest checkpoint",
            self.restarts.clone(),
        );
        registry.register(
            "job_preemptions",
            "Gangs stopped because a worker was shutting down, re-queued without using a restart",
            self.preemptions.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Seconds from a job's submission to its first assignment",
            self.queue_wait.clone(),
        );
        registry.register(
            "jobs_ended",
            "Jobs that reached a final state, by that state",
            self.jobs_ended.clone(),
        );
        registry.register(
            "job_records_written",
            "Job records written to the state store",
            self.records_written.clone(),
        );
        registry.register(
            "workers_reattached",
            "Workers that registered again while running their rank and kept it",
            self.workers_reattached.clone(),
        );
    }

    /// Jobs that ended in `state` so far.
    pub fn ended(&self, state: State) -> u64 {
        self.jobs_ended.get_or_create(&StateLabel::from(state)).get()
    }
}

/// An event that matters, logged and counted by one call to [`InternalEvent::emit`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum InternalEvent<'a> {
    /// A worker missed its heartbeats and left the pool.
    WorkerLost {
        /// Its id.
        worker_id: &'a str,
        /// Its host.
        hostname: &'a str,
        /// Its device.
        device: &'a str,
        /// Seconds it had been silent.
        silent_s: f64,
    },
    /// A job's gang started an attempt.
    JobStarted {
        /// The job.
        job_id: &'a str,
        /// The attempt's number (1 for the first).
        attempt: u32,
        /// Its workers by rank, joined by commas.
        gang: &'a str,
        /// Seconds since submission, for a first attempt (the queue wait); none after.
        first_wait_s: Option<f64>,
    },
    /// A gang failed and its job went back to the queue to restart from a checkpoint.
    JobRestarted {
        /// The job.
        job_id: &'a str,
        /// Why the gang failed.
        cause: &'a str,
        /// Attempts counted against `max_restarts` so far.
        attempts: u32,
    },
    /// A gang stopped because a worker shut down; its job went back to the queue.
    JobPreempted {
        /// The job.
        job_id: &'a str,
        /// Why.
        cause: &'a str,
    },
    /// A job reached a final state (its run ended for good).
    JobEnded {
        /// The job.
        job_id: &'a str,
        /// Its final state.
        state: State,
        /// Why.
        reason: &'a str,
    },
    /// A worker registered again while running its rank of a job's current attempt, and keeps it.
    WorkerReattached {
        /// Its id.
        worker_id: &'a str,
        /// The job.
        job_id: &'a str,
        /// Its rank.
        rank: u32,
    },
    /// A job record was written to the store.
    RecordWritten {
        /// The job.
        job_id: &'a str,
        /// The record's version.
        version: u64,
    },
}

impl InternalEvent<'_> {
    /// Logs the event and counts it in `telemetry`.
    pub fn emit(&self, telemetry: &Telemetry) {
        match *self {
            Self::WorkerLost {
                worker_id,
                hostname,
                device,
                silent_s,
            } => {
                tracing::warn!(worker_id, hostname, device, silent_s, "worker lost");
                telemetry.workers_lost.inc();
            }
            Self::JobStarted {
                job_id,
                attempt,
                gang,
                first_wait_s,
            } => {
                tracing::info!(job_id, attempt, gang, "job started");
                if let Some(waited) = first_wait_s {
                    telemetry.queue_wait.observe(waited);
                }
            }
            Self::JobRestarted {
                job_id,
                cause,
                attempts,
            } => {
                tracing::warn!(job_id, cause, attempts, "gang failed; job re-queued");
                telemetry.restarts.inc();
            }
            Self::JobPreempted { job_id, cause } => {
                tracing::info!(job_id, cause, "gang preempted; job re-queued");
                telemetry.preemptions.inc();
            }
            Self::JobEnded { job_id, state, reason } => {
                let label = StateLabel::from(state);
                if state == State::Succeeded {
                    tracing::info!(job_id, state = label.state, reason, "job ended");
                } else {
                    tracing::warn!(job_id, state = label.state, reason, "job ended");
                }
                telemetry.jobs_ended.get_or_create(&label).inc();
            }
            Self::WorkerReattached {
                worker_id,
                job_id,
                rank,
            } => {
                tracing::info!(worker_id, job_id, rank, "worker re-attached to its job");
                telemetry.workers_reattached.inc();
            }
            Self::RecordWritten { job_id, version } => {
                tracing::debug!(job_id, version, "job record written");
                telemetry.records_written.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_emit_counts_each_event_in_its_metric() {
        let telemetry = Telemetry::default();
        let events = [
            InternalEvent::WorkerLost {
                worker_id: "w-1",
                hostname: "h",
                device: "cpu",
                silent_s: 4.0,
            },
            InternalEvent::JobStarted {
                job_id: "job-000001",
                attempt: 1,
                gang: "w-1",
                first_wait_s: Some(2.0),
            },
            InternalEvent::JobStarted {
                job_id: "job-000001",
                attempt: 2,
                gang: "w-1",
                first_wait_s: None,
            },
            InternalEvent::JobRestarted {
                job_id: "job-000001",
                cause: "x",
                attempts: 1,
            },
            InternalEvent::JobPreempted {
                job_id: "job-000001",
                cause: "y",
            },
            InternalEvent::JobEnded {
                job_id: "job-000001",
                state: State::Failed,
                reason: "z",
            },
            InternalEvent::RecordWritten {
                job_id: "job-000001",
                version: 3,
            },
            InternalEvent::WorkerReattached {
                worker_id: "w-1",
                job_id: "job-000001",
                rank: 0,
            },
        ];
        for event in &events {
            event.emit(&telemetry);
        }
        assert_eq!(telemetry.workers_lost.get(), 1);
        assert_eq!(telemetry.restarts.get(), 1);
        assert_eq!(telemetry.preemptions.get(), 1);
        assert_eq!(telemetry.records_written.get(), 1);
        assert_eq!(telemetry.ended(State::Failed), 1);
        assert_eq!(telemetry.ended(State::Succeeded), 0);
        // The queue wait is observed for a first attempt only.
        let mut registry = Registry::default();
        telemetry.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("queue_wait_seconds_count 1"), "{text}");
        assert!(text.contains("jobs_ended_total{state=\"failed\"} 1"), "{text}");
        assert!(text.contains("job_records_written_total 1"), "{text}");
        assert!(text.contains("workers_reattached_total 1"), "{text}");
    }
}
