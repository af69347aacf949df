//! The persisted record schema: [`JobRecord`] (`jobs/<id>.json` in the state store), its
//! attempts ([`AttemptRecord`]) and the job's [`State`], with their wire forms.
//!
//! Records carry a format version ([`RECORD_FORMAT`]). Records written before the field
//! existed have none and read as format 0, which has the same fields as format 1: the fields
//! added since the first records (`preempted`, `evaluation`, `memory_bytes`, `version`) have
//! defaults, so every record a coordinator ever wrote still loads.

use std::collections::BTreeSet;

use gantry_job::JobConfig;
use gantry_proto::pb;
use serde::{Deserialize, Serialize};

/// The format of the records this coordinator writes. 0: written before records said theirs.
pub const RECORD_FORMAT: u32 = 1;

/// Where a job is in its life: the coordinator's own type (records, scheduling, the CLI's
/// `--state`), converted to and from the wire's [`pb::JobState`] here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
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

impl From<State> for pb::JobState {
    fn from(state: State) -> Self {
        match state {
            State::Queued => pb::JobState::Queued,
            State::Running => pb::JobState::Running,
            State::Succeeded => pb::JobState::Succeeded,
            State::Failed => pb::JobState::Failed,
            State::Cancelled => pb::JobState::Cancelled,
        }
    }
}

impl TryFrom<pb::JobState> for State {
    type Error = pb::JobState;

    /// Every wire state but `UNSPECIFIED`, which is returned as the error.
    fn try_from(state: pb::JobState) -> std::result::Result<Self, pb::JobState> {
        Ok(match state {
            pb::JobState::Unspecified => return Err(state),
            pb::JobState::Queued => State::Queued,
            pb::JobState::Running => State::Running,
            pb::JobState::Succeeded => State::Succeeded,
            pb::JobState::Failed => State::Failed,
            pb::JobState::Cancelled => State::Cancelled,
        })
    }
}

impl State {
    /// Every state, in the order of their life.
    pub const ALL: [State; 5] = [
        State::Queued,
        State::Running,
        State::Succeeded,
        State::Failed,
        State::Cancelled,
    ];

    /// Whether a job in this state will not change again.
    pub fn is_final(self) -> bool {
        pb::JobState::from(self).is_final()
    }

    /// The state in capitals, as people read it (`QUEUED`).
    pub fn label(self) -> &'static str {
        pb::JobState::from(self).label()
    }
}

/// One try at running a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1 for the first try.
    pub number: u32,
    /// Worker ids by rank.
    pub workers: Vec<String>,
    /// Peer addresses by rank.
    pub peers: Vec<String>,
    /// The gang's shared secret.
    pub secret: String,
    /// Assignment time, Unix ms.
    pub started_ms: i64,
    /// End time, Unix ms; 0 while running.
    pub ended_ms: i64,
    /// Step the run resumed from, once reported.
    pub resumed_from: u64,
    /// Ranks that reported the end of the run.
    pub finished_ranks: BTreeSet<u32>,
    /// Why it ended, when it did not succeed.
    pub reason: String,
    /// It ended because a worker of its gang shut down, after a checkpoint: it does not count
    /// against `max_restarts`.
    #[serde(default)]
    pub preempted: bool,
}

/// A job's durable record (`jobs/<id>.json` in the state store).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// The record's format ([`RECORD_FORMAT`] when written by this coordinator); 0 for records
    /// written before the field existed.
    #[serde(default)]
    pub format: u32,
    /// `job-NNNNNN`.
    pub id: String,
    /// Submission order.
    pub seq: u64,
    /// The resolved spec.
    pub config: JobConfig,
    /// Its state.
    pub state: State,
    /// Why it is in that state.
    pub reason: String,
    /// Tries so far.
    pub attempts: Vec<AttemptRecord>,
    /// Unix ms.
    pub submitted_ms: i64,
    /// Unix ms; 0 until final.
    pub finished_ms: i64,
    /// The last reported step.
    pub metrics: Option<pb::StepMetrics>,
    /// The last committed checkpoint: (step, url).
    pub checkpoint: Option<(u64, String)>,
    /// The latest evaluation of the generator.
    #[serde(default)]
    pub evaluation: Option<pb::Evaluation>,
    /// Memory a rank needs, bytes (`gantry_job::memory`); 0: not estimated.
    #[serde(default)]
    pub memory_bytes: u64,
    /// Raised by every change of the record: of two writes of a record, the higher version wins.
    #[serde(default)]
    pub version: u64,
}

impl JobRecord {
    /// The wire form.
    pub fn to_pb(&self) -> pb::Job {
        pb::Job {
            id: self.id.clone(),
            spec: Some(pb::JobSpec::from(&self.config)),
            state: pb::JobState::from(self.state) as i32,
            reason: self.reason.clone(),
            attempts: self
                .attempts
                .iter()
                .map(|a| pb::Attempt {
                    number: a.number,
                    workers: a.workers.clone(),
                    started_ms: a.started_ms,
                    ended_ms: a.ended_ms,
                    resumed_from: a.resumed_from,
                    reason: a.reason.clone(),
                    preempted: a.preempted,
                })
                .collect(),
            submitted_ms: self.submitted_ms,
            finished_ms: self.finished_ms,
            metrics: self.metrics.clone(),
            checkpoint: self.checkpoint.as_ref().map(|(step, url)| pb::CheckpointInfo {
                step: *step,
                url: url.clone(),
                ..Default::default()
            }),
            queue_position: 0,
            evaluation: self.evaluation.clone(),
        }
    }

    /// The attempt that runs now, if the job runs.
    pub(crate) fn current(&self) -> Option<&AttemptRecord> {
        self.attempts.last().filter(|_| self.state == State::Running)
    }

    pub(crate) fn label(&self) -> &'static str {
        self.state.label()
    }

    /// Its place in the scheduler's order: highest priority first, then submission order.
    pub(crate) fn queue_key(&self) -> QueueKey {
        (-i64::from(self.config.job.priority), self.seq)
    }
}

/// (minus the priority, submission sequence): queued jobs in the order the scheduler takes them.
pub(crate) type QueueKey = (i64, u64);
