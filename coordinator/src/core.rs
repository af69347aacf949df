//! The coordinator's state machine, without I/O: jobs and their records, the worker pool, gang
//! scheduling, heartbeat deadlines and the job lifecycle. Every change leaves the ids of the job
//! records to persist and the events to broadcast in an outbox that the service drains after
//! each call, under the same lock.
//!
//! A record changes (and is written) only when its job's own state does. What a queued job
//! waits for and its place in the queue depend on the whole pool and queue: they are derived
//! when a job is read ([`Core::view`]), never stored, so a scheduling pass writes nothing for
//! the jobs it leaves waiting.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::time::{Duration, Instant};

use gantry_job::JobConfig;
use gantry_proto::pb;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Timing of the worker protocol.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A worker silent for this long is lost, and its gang fails.
    pub heartbeat_timeout: Duration,
}

impl Timing {
    /// How often workers are asked to heartbeat: a quarter of the timeout (at least 50 ms), so
    /// that three lost heartbeats in a row are tolerated.
    pub fn heartbeat_interval(&self) -> Duration {
        (self.heartbeat_timeout / 4).max(Duration::from_millis(50))
    }
}

/// Where a job is in its life: the coordinator's own type (records, scheduling, the CLI's
/// `--state`), converted to and from the wire's [`pb::JobState`] here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
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
    fn is_final(self) -> bool {
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

    fn current(&self) -> Option<&AttemptRecord> {
        self.attempts.last().filter(|_| self.state == State::Running)
    }

    fn label(&self) -> &'static str {
        self.state.label()
    }

    /// Its place in the scheduler's order: highest priority first, then submission order.
    fn queue_key(&self) -> QueueKey {
        (-i64::from(self.config.job.priority), self.seq)
    }
}

/// (minus the priority, submission sequence): queued jobs in the order the scheduler takes them.
type QueueKey = (i64, u64);

/// A queued job's place: its reason with what it waits for, and its 1-based position.
fn queued_reason(own: &str, waiting: &str) -> String {
    // Older records stored the derived part too ("<cause>; waiting ..."): it is derived again.
    let own = own.split_once("; waiting").map_or(own, |(cause, _)| cause);
    if own.is_empty() || own == "queued" || own.starts_with("waiting") {
        waiting.to_string()
    } else {
        format!("{own}; {waiting}")
    }
}

/// What a worker is assigned, in the coordinator's view.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    job_id: String,
    attempt: u32,
    rank: u32,
}

#[derive(Debug)]
struct Worker {
    address: String,
    device: String,
    hostname: String,
    /// Registration order, for a stable pick of idle workers.
    order: u64,
    last_seen: Instant,
    /// Memory a rank may use there, bytes; 0: unknown.
    memory_bytes: u64,
    slot: Option<Slot>,
    /// Its run ended in the coordinator's view (a failed gang, a cancel, the job's end), but the
    /// worker has not yet said it runs nothing: it is not idle until its next heartbeat does. A
    /// worker whose agent died never says so, and leaves the pool with its missed heartbeats
    /// instead of being handed the restarted gang's rank.
    draining: bool,
}

/// Something for the service to do after a call.
#[derive(Debug, Clone)]
pub enum Event {
    /// A job record changed: persist it, and broadcast the record as it was then.
    Job(String, Box<pb::Job>),
    /// A step completed (broadcast only).
    Metrics(String, pb::StepMetrics),
    /// A checkpoint was committed (broadcast; the record is persisted through [`Event::Job`]).
    Checkpoint(String, pb::CheckpointInfo),
}

/// Bucket bounds of the queue wait, seconds (a second to a day).
const QUEUE_WAIT_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0, 86400.0,
];

/// What the core counts since it started, for `/metrics`: handles on shared atomics that the
/// service registers once; the core only adds to them.
#[derive(Debug, Clone)]
pub struct Counters {
    /// Workers dropped from the pool for missing their heartbeats.
    pub workers_lost: Counter,
    /// Gangs that failed and went back to the queue to restart from a checkpoint.
    pub restarts: Counter,
    /// Gangs stopped because a worker was shutting down (re-queued without using a restart).
    pub preemptions: Counter,
    /// Seconds from submission to a job's first assignment.
    pub queue_wait: Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            workers_lost: Counter::default(),
            restarts: Counter::default(),
            preemptions: Counter::default(),
            queue_wait: Histogram::new(QUEUE_WAIT_BUCKETS.iter().copied()),
        }
    }
}

/// The pool and the queue counted now (for `/metrics`, read at scrape time).
#[derive(Debug, Clone, PartialEq)]
pub struct Census {
    /// Jobs in each state.
    pub jobs: Vec<(State, u64)>,
    /// Seconds the longest-waiting queued job has waited (since submission, or since its last
    /// attempt ended); 0 with an empty queue.
    pub oldest_wait_seconds: f64,
    /// Workers in the pool.
    pub workers: u64,
    /// Workers holding a rank of a running job.
    pub busy: u64,
}

/// A worker of the pool, as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerInfo {
    /// Its id.
    pub id: String,
    /// Address its peers dial.
    pub address: String,
    /// `cpu`, `cuda:0`.
    pub device: String,
    /// Host name.
    pub hostname: String,
    /// Memory a rank may use there, bytes; 0: unknown.
    pub memory_bytes: u64,
    /// The job it runs a rank of.
    pub job_id: Option<String>,
    /// That job's attempt.
    pub attempt: Option<u32>,
    /// Its rank there.
    pub rank: Option<u32>,
    /// Its run ended but it has not said it runs nothing yet.
    pub draining: bool,
    /// Seconds since it was last heard from.
    pub silent_seconds: f64,
}

/// The coordinator's state.
#[derive(Debug)]
pub struct Core {
    timing: Timing,
    jobs: BTreeMap<String, JobRecord>,
    next_seq: u64,
    workers: HashMap<String, Worker>,
    next_order: u64,
    /// Running jobs recovered from the store get until then for their workers to re-register.
    grace_until: Instant,
    /// Workers lost to missed heartbeats, with how long they had been silent.
    lost: HashMap<String, Duration>,
    outbox: Vec<Event>,
    /// Job ids by submission sequence.
    by_seq: BTreeMap<u64, String>,
    /// The queued jobs, in the scheduler's order (kept by [`Core::touched`]).
    queue: BTreeSet<QueueKey>,
    /// The first queued job that fits the pool but not its idle workers, after the last pass:
    /// the jobs behind it wait for it.
    blocked_head: Option<String>,
    /// Raised by every scheduling pass: what queued jobs wait for may have changed.
    generation: u64,
    /// The outputs of the jobs that have not ended (canonical URL -> job id): one job per output.
    outputs: HashMap<String, String>,
    /// Counted for `/metrics`.
    counters: Counters,
}

/// An output URL in the form the one-job-per-output check compares.
fn canonical_output(url: &str) -> String {
    base::access::normalize(url).unwrap_or_else(|_| url.trim().to_string())
}

/// Current Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(buf.as_mut_slice());
    hex::encode(buf)
}

impl Core {
    /// A coordinator with the jobs of a store (empty for a fresh one). Running jobs keep their
    /// gangs for one heartbeat timeout, waiting for the workers to re-register.
    pub fn recover(timing: Timing, records: Vec<JobRecord>, now: Instant) -> Self {
        let next_seq = records.iter().map(|r| r.seq).max().unwrap_or(0) + 1;
        let by_seq = records.iter().map(|r| (r.seq, r.id.clone())).collect();
        let queue = records
            .iter()
            .filter(|r| r.state == State::Queued)
            .map(JobRecord::queue_key)
            .collect();
        let outputs = records
            .iter()
            .filter(|r| !r.state.is_final())
            .map(|r| (canonical_output(&r.config.output.url), r.id.clone()))
            .collect();
        let mut core = Self {
            timing,
            jobs: records.into_iter().map(|r| (r.id.clone(), r)).collect(),
            next_seq,
            workers: HashMap::new(),
            next_order: 0,
            grace_until: now + timing.heartbeat_timeout,
            lost: HashMap::new(),
            outbox: Vec::new(),
            by_seq,
            queue,
            blocked_head: None,
            generation: 0,
            outputs,
            counters: Counters::default(),
        };
        core.schedule();
        core
    }

    /// The protocol timing.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Takes what the last calls left to persist and broadcast, in order.
    pub fn drain(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.outbox)
    }

    /// A record changed: its version rises, the queue follows its state, and the change is
    /// left to persist and broadcast.
    fn touched(&mut self, id: &str) {
        let job = self.jobs.get_mut(id).expect("known job");
        job.version += 1;
        let key = job.queue_key();
        if job.state == State::Queued {
            self.queue.insert(key);
        } else {
            self.queue.remove(&key);
        }
        let snapshot = Box::new(self.view_of(&self.jobs[id]));
        self.outbox.push(Event::Job(id.to_string(), snapshot));
    }

    /// Raised by every scheduling pass: a queued job's derived reason may have changed since a
    /// reader last looked when this did.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A job as clients see it: its record, and for a queued job what it waits for and its
    /// place in the queue, derived now.
    pub fn view(&self, id: &str) -> Result<pb::Job> {
        Ok(self.view_of(self.job(id)?))
    }

    fn view_of(&self, job: &JobRecord) -> pb::Job {
        self.views(&[job]).pop().expect("one view")
    }

    /// [`Core::view`] of several jobs, with one walk of the queue for all their places.
    pub fn views(&self, jobs: &[&JobRecord]) -> Vec<pb::Job> {
        let wanted: HashSet<QueueKey> = jobs
            .iter()
            .filter(|j| j.state == State::Queued)
            .map(|j| j.queue_key())
            .collect();
        let mut places = HashMap::with_capacity(wanted.len());
        if !wanted.is_empty() {
            for (place, key) in self.queue.iter().enumerate() {
                if wanted.contains(key) {
                    places.insert(*key, place as u32 + 1);
                    if places.len() == wanted.len() {
                        break;
                    }
                }
            }
        }
        let head = self
            .blocked_head
            .as_ref()
            .and_then(|id| self.jobs.get(id))
            .map(|j| (j.queue_key(), j.id.as_str()));
        // Counts of workers that can run a job, and of those idle, by what the job asks for.
        let mut counts: HashMap<(bool, u64), (usize, usize)> = HashMap::new();
        jobs.iter()
            .map(|job| {
                let mut view = job.to_pb();
                if job.state == State::Queued {
                    let key = job.queue_key();
                    view.queue_position = places.get(&key).copied().unwrap_or(0);
                    let class = (
                        matches!(job.config.train.device, gantry_job::DeviceSpec::Cuda(_)),
                        job.memory_bytes,
                    );
                    let (capable, idle) = *counts.entry(class).or_insert_with(|| {
                        let can = self.workers.values().filter(|w| Self::can_run(job, w));
                        can.fold((0, 0), |(all, idle), w| {
                            (all + 1, idle + usize::from(w.slot.is_none() && !w.draining))
                        })
                    });
                    let waiting = self.waiting(job, head.filter(|(k, _)| *k < key).map(|(_, id)| id), capable, idle);
                    view.reason = queued_reason(&job.reason, &waiting);
                }
                view
            })
            .collect()
    }

    /// What a queued job waits for, given the job ahead of it that holds the queue (if any),
    /// the workers that can run it and how many of those are idle.
    fn waiting(&self, job: &JobRecord, behind: Option<&str>, capable: usize, idle: usize) -> String {
        let n = job.config.job.workers as usize;
        let pool = self.workers.len();
        if n > pool {
            format!("waiting: needs {n} workers, {pool} registered")
        } else if n > capable {
            format!(
                "waiting: needs {n} workers that can run it (train.device {}, about {} per rank), {capable} of {pool} registered can",
                job.config.train.device,
                gantry_job::memory::Bytes(job.memory_bytes)
            )
        } else if let Some(head) = behind {
            format!("waiting behind {head}")
        } else {
            format!("waiting for {n} idle workers ({idle} of {pool} idle)")
        }
    }

    /// A job by id.
    pub fn job(&self, id: &str) -> Result<&JobRecord> {
        self.jobs
            .get(id)
            .ok_or_else(|| Error::JobNotFound { id: id.to_string() })
    }

    /// All jobs in submission order, optionally only those in `states`.
    pub fn list(&self, states: &[State]) -> Vec<&JobRecord> {
        let mut jobs: Vec<&JobRecord> = self
            .jobs
            .values()
            .filter(|j| states.is_empty() || states.contains(&j.state))
            .collect();
        jobs.sort_by_key(|j| j.seq);
        jobs
    }

    /// One page of jobs in submission order, after sequence `after`: at most `limit` that pass
    /// `filter`, looking at no more than `budget` jobs. Returns the page and, when more jobs
    /// follow, the sequence to continue after (a page may be short, even empty, when few jobs
    /// pass the filter).
    pub fn page(
        &self,
        after: u64,
        limit: usize,
        budget: usize,
        filter: impl Fn(&JobRecord) -> bool,
    ) -> (Vec<&JobRecord>, Option<u64>) {
        let mut page = Vec::new();
        let mut last = after;
        let following = self.by_seq.range((Bound::Excluded(after), Bound::Unbounded));
        for (seen, (&seq, id)) in following.enumerate() {
            if page.len() == limit || seen == budget {
                return (page, Some(last));
            }
            last = seq;
            let job = &self.jobs[id];
            if filter(job) {
                page.push(job);
            }
        }
        (page, None)
    }

    /// Queues a validated job.
    pub fn submit(&mut self, config: JobConfig) -> JobRecord {
        self.submit_estimated(config, 0)
    }

    /// [`Core::submit`] for a job whose rank needs `memory_bytes` (0: unknown): it is placed
    /// only on workers that offer that much.
    pub fn submit_estimated(&mut self, config: JobConfig, memory_bytes: u64) -> JobRecord {
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = format!("job-{seq:06}");
        let record = JobRecord {
            id: id.clone(),
            seq,
            config,
            state: State::Queued,
            reason: "queued".to_string(),
            attempts: Vec::new(),
            submitted_ms: now_ms(),
            finished_ms: 0,
            metrics: None,
            checkpoint: None,
            evaluation: None,
            memory_bytes,
            version: 0,
        };
        self.outputs
            .insert(canonical_output(&record.config.output.url), id.clone());
        self.jobs.insert(id.clone(), record);
        self.by_seq.insert(seq, id.clone());
        self.touched(&id);
        self.schedule();
        self.jobs[&id].clone()
    }

    /// A job that has not ended and writes into `url` (compared in canonical form).
    pub fn output_in_use(&self, url: &str) -> Option<&JobRecord> {
        let id = self.outputs.get(&canonical_output(url))?;
        self.jobs.get(id).filter(|j| !j.state.is_final())
    }

    /// Cancels a queued or running job; its workers are told to stop and become idle.
    pub fn cancel(&mut self, id: &str, reason: &str) -> Result<JobRecord> {
        let job = self.job(id)?;
        if job.state.is_final() {
            return Err(Error::JobState {
                id: id.to_string(),
                state: job.label(),
                message: "only a queued or running job can be cancelled".to_string(),
            });
        }
        let reason = if reason.trim().is_empty() {
            "cancelled".to_string()
        } else {
            format!("cancelled: {}", reason.trim())
        };
        self.end_attempt(id, &reason);
        self.finish(id, State::Cancelled, reason);
        self.schedule();
        Ok(self.jobs[id].clone())
    }

    /// Ends the current attempt of a running job and frees its workers.
    fn end_attempt(&mut self, id: &str, reason: &str) {
        let job = self.jobs.get_mut(id).expect("known job");
        if job.state != State::Running {
            return;
        }
        let attempt = job.attempts.last_mut().expect("a running job has an attempt");
        attempt.ended_ms = now_ms();
        attempt.reason = reason.to_string();
        let number = attempt.number;
        for worker in self.workers.values_mut() {
            if worker
                .slot
                .as_ref()
                .is_some_and(|s| s.job_id == id && s.attempt == number)
            {
                worker.slot = None;
                worker.draining = true;
            }
        }
    }

    fn finish(&mut self, id: &str, state: State, reason: String) {
        let job = self.jobs.get_mut(id).expect("known job");
        job.state = state;
        job.reason = reason;
        job.finished_ms = now_ms();
        let output = canonical_output(&job.config.output.url);
        if self.outputs.get(&output).is_some_and(|holder| holder == id) {
            self.outputs.remove(&output);
        }
        self.touched(id);
    }

    /// A rank failed or was lost: the whole gang stops, and the job goes back to the queue to
    /// restart from its latest checkpoint, unless it has used its restarts or `retryable` is false.
    fn fail_gang(&mut self, id: &str, cause: String, retryable: bool) {
        self.end_attempt(id, &cause);
        let job = &self.jobs[id];
        // Preempted attempts are not restarts.
        let attempts = job.attempts.iter().filter(|a| !a.preempted).count() as u32;
        let max = job.config.job.max_restarts;
        if !retryable {
            tracing::warn!(job_id = %id, %cause, "job failed; not retryable");
            self.finish(id, State::Failed, cause);
        } else if attempts > max {
            tracing::warn!(job_id = %id, %cause, attempts, "job failed; out of restarts");
            self.finish(id, State::Failed, format!("{cause} (gave up after {max} restarts)"));
        } else {
            tracing::warn!(job_id = %id, %cause, attempts, "gang failed; job re-queued");
            self.counters.restarts.inc();
            let job = self.jobs.get_mut(id).expect("known job");
            job.state = State::Queued;
            job.reason = format!("restarting from the latest checkpoint (restart {attempts} of {max}) after: {cause}");
            self.touched(id);
        }
        self.schedule();
    }

    /// A worker of the gang is shutting down and its gang stopped after saving a checkpoint:
    /// the job goes back to the queue, to resume from it on the next gang, and this attempt
    /// does not count as a restart.
    fn preempt_gang(&mut self, id: &str, cause: String) {
        self.end_attempt(id, &cause);
        let job = self.jobs.get_mut(id).expect("known job");
        let attempt = job.attempts.last_mut().expect("a preempted job has an attempt");
        attempt.preempted = true;
        tracing::info!(job_id = %id, %cause, "gang preempted; job re-queued");
        self.counters.preemptions.inc();
        job.state = State::Queued;
        job.reason = format!("re-queued after {cause}; resumes from its latest checkpoint");
        self.touched(id);
        self.schedule();
    }

    /// A worker joins the pool, or re-joins it with its id (and the work it still runs, which
    /// is kept when it is still that worker's rank of a running job).
    pub fn register(&mut self, req: &pb::RegisterRequest, now: Instant) -> (String, Duration) {
        let id = if req.worker_id.is_empty() {
            format!("w-{}", random_hex(4))
        } else {
            req.worker_id.clone()
        };
        let slot = req.running.as_ref().and_then(|r| {
            let job = self.jobs.get(&r.job_id)?;
            let current = job.current()?;
            let owns = current.number == r.attempt && current.workers.get(r.rank as usize) == Some(&id);
            owns.then(|| Slot {
                job_id: r.job_id.clone(),
                attempt: r.attempt,
                rank: r.rank,
            })
        });
        if let Some(slot) = &slot {
            tracing::info!(worker_id = %id, job_id = %slot.job_id, rank = slot.rank, "worker re-attached to its job");
        }
        let order = match self.workers.get(&id) {
            Some(w) => w.order,
            None => {
                self.next_order += 1;
                self.next_order
            }
        };
        self.lost.remove(&id);
        self.workers.insert(
            id.clone(),
            Worker {
                address: req.address.clone(),
                device: req.device.clone(),
                hostname: req.hostname.clone(),
                order,
                last_seen: now,
                memory_bytes: req.memory_bytes,
                // Whatever it ran before it registered is over unless it still runs it now.
                draining: req.running.is_some() && slot.is_none(),
                slot,
            },
        );
        tracing::info!(worker_id = %id, address = %req.address, device = %req.device, pool = self.workers.len(), "worker registered");
        self.schedule();
        (id, self.timing.heartbeat_interval())
    }

    /// A worker is alive. Answers with the work it should start, and the jobs it should stop.
    pub fn heartbeat(&mut self, req: &pb::HeartbeatRequest, now: Instant) -> pb::HeartbeatResponse {
        let Some(worker) = self.workers.get_mut(&req.worker_id) else {
            return pb::HeartbeatResponse {
                register_again: true,
                ..Default::default()
            };
        };
        worker.last_seen = now;
        if req.leaving {
            let worker = self.workers.remove(&req.worker_id).expect("known worker");
            tracing::info!(worker_id = %req.worker_id, hostname = %worker.hostname, "worker left the pool");
            // It still holds a rank when it was assigned one just before it was told to shut
            // down (a run it had started ends, reported, before it leaves): a shutdown, not a
            // failure of the job, so the gang is re-queued without using a restart.
            if let Some(slot) = worker.slot {
                let cause = format!(
                    "worker {} left the pool (shutting down) while holding rank {}",
                    req.worker_id, slot.rank
                );
                self.preempt_gang(&slot.job_id, cause);
            }
            self.schedule();
            return pb::HeartbeatResponse::default();
        }
        if worker.draining && req.running.is_none() {
            worker.draining = false;
            self.schedule();
        }
        let slot = self.workers[&req.worker_id].slot.clone();
        let mut response = pb::HeartbeatResponse::default();
        if let Some(running) = &req.running {
            let mine = slot
                .as_ref()
                .is_some_and(|s| s.job_id == running.job_id && s.attempt == running.attempt);
            if !mine {
                response.stop_job_ids.push(running.job_id.clone());
            }
        }
        if let Some(slot) = slot {
            let runs_it = req
                .running
                .as_ref()
                .is_some_and(|r| r.job_id == slot.job_id && r.attempt == slot.attempt);
            if !runs_it {
                response.assignment = self.assignment(&slot);
            }
        }
        response
    }

    fn assignment(&self, slot: &Slot) -> Option<pb::Assignment> {
        let job = self.jobs.get(&slot.job_id)?;
        let attempt = job.current()?;
        Some(pb::Assignment {
            job_id: job.id.clone(),
            attempt: attempt.number,
            rank: slot.rank,
            world_size: attempt.workers.len() as u32,
            peers: attempt.peers.clone(),
            secret: attempt.secret.clone(),
            spec: Some(pb::JobSpec::from(&job.config)),
        })
    }

    /// News from a worker about its assignment. Returns whether the worker should stop it
    /// (the job no longer runs there).
    pub fn report(&mut self, req: &pb::ReportRequest, now: Instant) -> bool {
        if let Some(worker) = self.workers.get_mut(&req.worker_id) {
            worker.last_seen = now;
        }
        let current = self
            .jobs
            .get(&req.job_id)
            .and_then(|j| j.current())
            .is_some_and(|a| a.number == req.attempt && a.workers.get(req.rank as usize) == Some(&req.worker_id));
        if !current {
            return true;
        }
        let id = req.job_id.as_str();
        for event in &req.events {
            let Some(event) = &event.event else { continue };
            let job = self.jobs.get_mut(id).expect("known job");
            if job.state != State::Running {
                return true;
            }
            let attempt = job.attempts.last_mut().expect("a running job has an attempt");
            use pb::worker_event::Event as E;
            match event {
                E::Started(step) => {
                    attempt.resumed_from = *step;
                    job.reason = if *step > 0 {
                        format!("running attempt {}, resumed from step {step}", attempt.number)
                    } else {
                        format!("running attempt {}", attempt.number)
                    };
                    self.touched(id);
                }
                // Every rank reports the same averaged metrics and checkpoint: rank 0's speak
                // for the gang.
                E::Metrics(_) | E::Checkpoint(_) if req.rank != 0 => {}
                E::Metrics(m) => {
                    let mut latest = m.clone();
                    if let Some(evaluation) = latest.evaluation.take() {
                        // Kept on the record (the latest one), which is stored again.
                        job.evaluation = Some(evaluation);
                        self.touched(id);
                    }
                    let job = self.jobs.get_mut(id).expect("known job");
                    job.metrics = Some(latest);
                    self.outbox.push(Event::Metrics(id.to_string(), m.clone()));
                }
                E::Checkpoint(c) => {
                    job.checkpoint = Some((c.step, c.url.clone()));
                    self.outbox.push(Event::Checkpoint(id.to_string(), c.clone()));
                    self.touched(id);
                }

                E::Finished(c) => {
                    job.checkpoint = Some((c.step, c.url.clone()));
                    attempt.finished_ranks.insert(req.rank);
                    if attempt.finished_ranks.len() == attempt.workers.len() {
                        self.end_attempt(id, "");
                        self.finish(id, State::Succeeded, format!("trained to step {}", c.step));
                        self.schedule();
                    } else {
                        self.touched(id);
                    }
                }
                E::Failed(f) => {
                    let cause = format!("rank {} on worker {} failed: {}", req.rank, req.worker_id, f.message);
                    self.fail_gang(id, cause, f.retryable);
                    return true;
                }
                E::Stopped(step) => {
                    let cause = format!("rank {} on worker {} stopped at step {step}", req.rank, req.worker_id);
                    self.fail_gang(id, cause, true);
                    return true;
                }
                E::Preempted(c) => {
                    if !c.url.is_empty() {
                        job.checkpoint = Some((c.step, c.url.clone()));
                    }
                    let saved = if c.url.is_empty() {
                        "nothing to save".to_string()
                    } else {
                        format!("checkpoint at step {}", c.step)
                    };
                    // Every rank reports it, the one whose worker shuts down maybe not first: the
                    // worker that leaves says so itself (its leaving heartbeat).
                    let cause = format!(
                        "preemption at step {} (a worker of the gang is shutting down; {saved})",
                        c.step
                    );
                    self.preempt_gang(id, cause);
                    return true;
                }
            }
        }
        false
    }

    /// Periodic work: workers silent past the timeout are dropped from the pool and fail their
    /// gangs; running jobs whose workers are gone fail theirs.
    pub fn tick(&mut self, now: Instant) {
        let timeout = self.timing.heartbeat_timeout;
        let silent: Vec<(String, Duration)> = self
            .workers
            .iter()
            .map(|(id, w)| (id.clone(), now.saturating_duration_since(w.last_seen)))
            .filter(|(_, silent)| *silent > timeout)
            .collect();
        for (id, silent) in silent {
            let worker = self.workers.remove(&id).expect("known worker");
            tracing::warn!(worker_id = %id, hostname = %worker.hostname, device = %worker.device, silent_s = silent.as_secs_f64(), "worker lost");
            self.lost.insert(id, silent);
            self.counters.workers_lost.inc();
        }
        let running: Vec<(String, Vec<String>)> = self
            .jobs
            .values()
            .filter_map(|j| j.current().map(|a| (j.id.clone(), a.workers.clone())))
            .collect();
        for (job_id, gang) in running {
            let missing = gang.iter().enumerate().find(|(_, w)| !self.workers.contains_key(*w));
            let Some((rank, worker)) = missing else { continue };
            let cause = match self.lost.get(worker) {
                Some(silent) => format!(
                    "worker {worker} (rank {rank}) missed heartbeats for {:.1} s (timeout {:.1} s)",
                    silent.as_secs_f64(),
                    timeout.as_secs_f64()
                ),
                None if now < self.grace_until => continue,
                None => format!(
                    "worker {worker} (rank {rank}) did not re-register within {:.1} s of the coordinator's restart",
                    timeout.as_secs_f64()
                ),
            };
            self.fail_gang(&job_id, cause, true);
        }
        self.schedule();
    }

    /// What the core counts (handles to register with a metrics registry).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Jobs by state, the queue's oldest wait and the pool, counted now (`now_ms`: Unix ms).
    pub fn census(&self, now_ms: i64) -> Census {
        let states = [
            State::Queued,
            State::Running,
            State::Succeeded,
            State::Failed,
            State::Cancelled,
        ];
        let mut jobs: Vec<(State, u64)> = states.iter().map(|s| (*s, 0)).collect();
        let mut oldest = None::<i64>;
        for job in self.jobs.values() {
            if let Some(entry) = jobs.iter_mut().find(|(s, _)| *s == job.state) {
                entry.1 += 1;
            }
            if job.state == State::Queued {
                let since = job
                    .attempts
                    .last()
                    .map_or(job.submitted_ms, |a| a.ended_ms.max(job.submitted_ms));
                oldest = Some(oldest.map_or(since, |o| o.min(since)));
            }
        }
        Census {
            jobs,
            oldest_wait_seconds: oldest.map_or(0.0, |since| (now_ms - since).max(0) as f64 / 1000.0),
            workers: self.workers.len() as u64,
            busy: self.workers.values().filter(|w| w.slot.is_some()).count() as u64,
        }
    }

    /// The pool, in registration order.
    pub fn workers(&self, now: Instant) -> Vec<WorkerInfo> {
        let mut workers: Vec<(u64, WorkerInfo)> = self
            .workers
            .iter()
            .map(|(id, w)| {
                (
                    w.order,
                    WorkerInfo {
                        id: id.clone(),
                        address: w.address.clone(),
                        device: w.device.clone(),
                        hostname: w.hostname.clone(),
                        memory_bytes: w.memory_bytes,
                        job_id: w.slot.as_ref().map(|s| s.job_id.clone()),
                        attempt: w.slot.as_ref().map(|s| s.attempt),
                        rank: w.slot.as_ref().map(|s| s.rank),
                        draining: w.draining,
                        silent_seconds: now.saturating_duration_since(w.last_seen).as_secs_f64(),
                    },
                )
            })
            .collect();
        workers.sort_by_key(|(order, _)| *order);
        workers.into_iter().map(|(_, w)| w).collect()
    }

    /// The most memory a registered worker offers a rank, if any worker said.
    pub fn largest_worker_memory(&self) -> Option<u64> {
        self.workers.values().map(|w| w.memory_bytes).filter(|&m| m > 0).max()
    }

    /// Whether `worker` can run a rank of `job`: a CUDA job needs a CUDA worker, and the job's
    /// memory estimate must fit what the worker offers (when both are known).
    fn can_run(job: &JobRecord, worker: &Worker) -> bool {
        let device_ok = match job.config.train.device {
            gantry_job::DeviceSpec::Cuda(_) => worker.device.starts_with("cuda"),
            _ => true,
        };
        let memory_ok = worker.memory_bytes == 0 || job.memory_bytes <= worker.memory_bytes;
        device_ok && memory_ok
    }

    /// Starts queued jobs on idle workers: highest priority first, FIFO within a priority, a job
    /// only when all its workers are idle at once (gang). A job larger than the whole pool
    /// waits without holding up the others; one that fits the pool but not the idle workers
    /// holds up the jobs behind it, so it is not starved by smaller ones.
    fn schedule(&mut self) {
        self.generation += 1;
        self.blocked_head = None;
        let pool = self.workers.len();
        let mut idle: Vec<(u64, String)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.slot.is_none() && !w.draining)
            .map(|(id, w)| (w.order, id.clone()))
            .collect();
        idle.sort();
        // Workers that can run a job, by what the job asks for (device kind, memory).
        let mut capable: HashMap<(bool, u64), usize> = HashMap::new();
        let mut cursor: Option<QueueKey> = None;
        loop {
            let next = match cursor {
                None => self.queue.first().copied(),
                Some(c) => self.queue.range((Bound::Excluded(c), Bound::Unbounded)).next().copied(),
            };
            let Some(key) = next else { break };
            cursor = Some(key);
            let id = self.by_seq[&key.1].clone();
            let job = &self.jobs[&id];
            let n = job.config.job.workers as usize;
            let class = (
                matches!(job.config.train.device, gantry_job::DeviceSpec::Cuda(_)),
                job.memory_bytes,
            );
            let capable = *capable
                .entry(class)
                .or_insert_with(|| self.workers.values().filter(|w| Self::can_run(job, w)).count());
            // A job larger than the pool, or than the workers that can run it, waits without
            // holding up the others (its reason says why, when it is read).
            if n > pool || n > capable {
                continue;
            }
            let fitting: Vec<usize> = idle
                .iter()
                .enumerate()
                .filter(|(_, (_, w))| Self::can_run(job, &self.workers[w]))
                .map(|(i, _)| i)
                .take(n)
                .collect();
            if fitting.len() < n {
                // It holds up every job behind it: nothing more starts in this pass.
                self.blocked_head = Some(id);
                break;
            }
            let gang: Vec<String> = fitting.iter().map(|&i| idle[i].1.clone()).collect();
            for &i in fitting.iter().rev() {
                idle.remove(i);
            }
            self.start(&id, gang);
        }
    }

    fn start(&mut self, id: &str, gang: Vec<String>) {
        let peers: Vec<String> = gang.iter().map(|w| self.workers[w].address.clone()).collect();
        let job = self.jobs.get_mut(id).expect("known job");
        let number = job.attempts.len() as u32 + 1;
        let started_ms = now_ms();
        if number == 1 {
            let waited = (started_ms - job.submitted_ms).max(0) as f64 / 1000.0;
            self.counters.queue_wait.observe(waited);
        }
        job.attempts.push(AttemptRecord {
            number,
            workers: gang.clone(),
            peers,
            secret: random_hex(32),
            started_ms,
            ended_ms: 0,
            resumed_from: 0,
            finished_ranks: BTreeSet::new(),
            reason: String::new(),
            preempted: false,
        });
        job.state = State::Running;
        job.reason = format!("assigned attempt {number} to {}", gang.join(", "));
        tracing::info!(job_id = %id, attempt = number, gang = %gang.join(","), "job started");
        for (rank, worker) in gang.iter().enumerate() {
            let w = self.workers.get_mut(worker).expect("idle worker");
            w.slot = Some(Slot {
                job_id: id.to_string(),
                attempt: number,
                rank: rank as u32,
            });
        }
        self.touched(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(workers: u32, priority: i32) -> JobConfig {
        let mut c =
            JobConfig::from_toml("[data]\nurl = \"memory://d\"\n[output]\nurl = \"memory://o\"\n", "test").unwrap();
        c.job.workers = workers;
        c.job.priority = priority;
        c
    }

    fn core() -> (Core, Instant) {
        let timing = Timing {
            heartbeat_timeout: Duration::from_secs(3),
        };
        let now = Instant::now();
        (Core::recover(timing, Vec::new(), now), now)
    }

    fn join(core: &mut Core, name: &str, now: Instant) -> String {
        let req = pb::RegisterRequest {
            address: format!("{name}:29500"),
            device: "cpu".into(),
            hostname: name.into(),
            ..Default::default()
        };
        core.register(&req, now).0
    }

    /// A report of one event from `worker`, rank `rank` of `job`'s attempt `attempt`.
    fn report(worker: &str, job: &str, attempt: u32, rank: u32, event: pb::worker_event::Event) -> pb::ReportRequest {
        pb::ReportRequest {
            worker_id: worker.into(),
            job_id: job.into(),
            attempt,
            rank,
            events: vec![pb::WorkerEvent { event: Some(event) }],
        }
    }

    fn failure(message: &str, retryable: bool) -> pb::worker_event::Event {
        pb::worker_event::Event::Failed(pb::Failure {
            message: message.into(),
            retryable,
        })
    }

    fn beat(core: &mut Core, worker: &str, now: Instant) -> pb::HeartbeatResponse {
        let req = pb::HeartbeatRequest {
            worker_id: worker.into(),
            running: None,
            leaving: false,
        };
        core.heartbeat(&req, now)
    }

    #[test]
    fn a_job_goes_only_where_its_device_and_memory_fit() {
        let (mut core, now) = core();
        let register = |core: &mut Core, name: &str, device: &str, gib: u64| {
            let req = pb::RegisterRequest {
                address: format!("{name}:29500"),
                device: device.into(),
                hostname: name.into(),
                memory_bytes: gib << 30,
                ..Default::default()
            };
            core.register(&req, now).0
        };
        let small = register(&mut core, "small", "cpu", 4);
        assert_eq!(core.largest_worker_memory(), Some(4 << 30));
        // 6 GiB per rank: not on the 4 GiB worker.
        let big = core.submit_estimated(config(1, 0), 6 << 30).id;
        let job = core.view(&big).unwrap();
        assert_eq!(job.state(), pb::JobState::Queued);
        assert_eq!(
            job.reason,
            "waiting: needs 1 workers that can run it (train.device auto, about 6.0 GiB per rank), 0 of 1 registered can"
        );
        // A CUDA job does not go to a CPU worker either.
        let mut cuda = config(1, 0);
        cuda.train.device = "cuda".parse().unwrap();
        let gpu_job = core.submit_estimated(cuda, 1 << 30).id;
        assert!(
            core.view(&gpu_job).unwrap().reason.contains("train.device cuda"),
            "{}",
            core.view(&gpu_job).unwrap().reason
        );
        // A large CPU worker takes the big job, a GPU worker the CUDA job; the small one stays idle.
        let large = register(&mut core, "large", "cpu", 64);
        assert_eq!(core.job(&big).unwrap().attempts[0].workers, vec![large]);
        let gpu = register(&mut core, "gpu", "cuda:0", 80);
        assert_eq!(core.job(&gpu_job).unwrap().attempts[0].workers, vec![gpu]);
        assert!(beat(&mut core, &small, now).assignment.is_none());
    }

    #[test]
    fn a_gang_starts_only_when_all_its_workers_are_idle() {
        let (mut core, now) = core();
        let a = join(&mut core, "a", now);
        let big = core.submit(config(2, 0));
        assert_eq!(core.job(&big.id).unwrap().state, State::Queued);
        assert_eq!(
            core.view(&big.id).unwrap().reason,
            "waiting: needs 2 workers, 1 registered"
        );
        let b = join(&mut core, "b", now);
        let job = core.job(&big.id).unwrap();
        assert_eq!(job.state, State::Running);
        let assignments: Vec<pb::Assignment> = [&a, &b]
            .iter()
            .map(|w| beat(&mut core, w, now).assignment.expect("assigned"))
            .collect();
        assert_eq!(assignments[0].rank, 0);
        assert_eq!(assignments[1].rank, 1);
        assert!(assignments.iter().all(|x| x.world_size == 2));
        assert_eq!(assignments[0].peers, vec!["a:29500", "b:29500"]);
        assert_eq!(assignments[0].secret, assignments[1].secret);
        assert_eq!(assignments[0].secret.len(), 64);
    }

    #[test]
    fn priority_first_then_fifo_and_big_jobs_do_not_block_the_queue() {
        let (mut core, now) = core();
        let low = core.submit(config(1, 0)).id;
        let huge = core.submit(config(5, 9)).id;
        let high = core.submit(config(1, 1)).id;
        let low2 = core.submit(config(1, 0)).id;
        let w = join(&mut core, "a", now);
        assert_eq!(core.job(&high).unwrap().state, State::Running);
        assert_eq!(
            core.view(&huge).unwrap().reason,
            "waiting: needs 5 workers, 1 registered"
        );
        assert_eq!(
            core.view(&low).unwrap().reason,
            "waiting for 1 idle workers (0 of 1 idle)"
        );
        assert_eq!(core.view(&low2).unwrap().reason, format!("waiting behind {low}"));
        core.cancel(&high, "").unwrap();
        // The worker is still running the cancelled job: told to stop it, and not given the next
        // job until it says it runs nothing.
        let stop = core.heartbeat(
            &pb::HeartbeatRequest {
                worker_id: w.clone(),
                running: Some(pb::RunningWork {
                    job_id: high.clone(),
                    attempt: 1,
                    rank: 0,
                    step: 3,
                }),
                leaving: false,
            },
            now,
        );
        assert_eq!(stop.stop_job_ids, vec![high]);
        assert!(stop.assignment.is_none());
        assert_eq!(core.job(&low).unwrap().state, State::Queued);
        assert_eq!(beat(&mut core, &w, now).assignment.unwrap().job_id, low);
        assert_eq!(core.job(&low).unwrap().state, State::Running);
    }

    #[test]
    fn a_silent_worker_fails_its_gang_and_the_job_restarts_then_fails() {
        let (mut core, mut now) = core();
        let mut c = config(1, 0);
        c.job.max_restarts = 1;
        let id = core.submit(c).id;
        for attempt in 1..=2 {
            let w = join(&mut core, &format!("w{attempt}"), now);
            assert_eq!(core.job(&id).unwrap().attempts.len(), attempt);
            assert_eq!(beat(&mut core, &w, now).assignment.unwrap().attempt, attempt as u32);
            now += Duration::from_secs(4);
            core.tick(now);
        }
        let job = core.job(&id).unwrap();
        assert_eq!(job.state, State::Failed);
        assert!(job.reason.contains("missed heartbeats for 4.0 s"), "{}", job.reason);
        assert!(job.reason.contains("gave up after 1 restarts"), "{}", job.reason);
        assert!(core.workers.is_empty());
        // Counted for /metrics: both workers lost, one restart, one first assignment.
        assert_eq!(core.counters().workers_lost.get(), 2);
        assert_eq!(core.counters().restarts.get(), 1);
        assert_eq!(core.counters().preemptions.get(), 0);
    }

    #[test]
    fn the_census_counts_jobs_by_state_the_queue_and_the_pool() {
        let (mut core, now) = core();
        let running = core.submit(config(1, 0)).id;
        let queued = core.submit(config(1, 0)).id;
        core.submit(config(1, 0));
        core.cancel(&queued, "").unwrap();
        let w = join(&mut core, "a", now);
        join(&mut core, "b", now);
        let census = core.census(now_ms());
        let count = |state| census.jobs.iter().find(|(s, _)| *s == state).unwrap().1;
        assert_eq!(count(State::Running), 2);
        assert_eq!(count(State::Cancelled), 1);
        assert_eq!(count(State::Queued), 0);
        assert_eq!((census.workers, census.busy), (2, 2));
        assert_eq!(census.oldest_wait_seconds, 0.0);
        // Two first assignments observed.
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("wait", "", core.counters().queue_wait.clone());
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("wait_count 2"), "{text}");
        // A queued job's age: from its submission.
        let waiting = core.submit(config(1, 0)).id;
        core.jobs.get_mut(&waiting).unwrap().submitted_ms -= 5_000;
        assert!(core.census(now_ms()).oldest_wait_seconds >= 5.0);
        let workers = core.workers(now);
        assert_eq!(workers.len(), 2);
        assert_eq!(workers[0].id, w);
        assert_eq!(workers[0].job_id.as_deref(), Some(running.as_str()));
        assert_eq!(workers[0].rank, Some(0));
    }

    #[test]
    fn a_preempted_gang_requeues_without_using_a_restart_and_a_leaving_worker_is_gone_at_once() {
        let (mut core, now) = core();
        let mut c = config(2, 0);
        c.job.max_restarts = 0;
        let id = core.submit(c).id;
        let a = join(&mut core, "a", now);
        let b = join(&mut core, "b", now);
        // Rank 1's worker is shutting down: its gang agreed on step 40 and rank 0 saved there.
        let preempted = pb::worker_event::Event::Preempted(pb::CheckpointInfo {
            step: 40,
            url: "runs/x/checkpoints/step-0000040".into(),
            ..Default::default()
        });
        assert!(core.report(&report(&b, &id, 1, 1, preempted), now));
        let job = core.job(&id).unwrap();
        assert_eq!(job.state, State::Queued);
        assert!(
            job.attempts[0].reason.contains("preemption at step 40"),
            "{}",
            job.attempts[0].reason
        );
        assert!(job.attempts[0].preempted);
        assert_eq!(core.counters().preemptions.get(), 1);
        assert_eq!(core.counters().restarts.get(), 0);
        assert_eq!(
            job.checkpoint,
            Some((40, "runs/x/checkpoints/step-0000040".to_string()))
        );
        assert!(job.to_pb().attempts[0].preempted);
        // It leaves: removed at once, no assignment, nothing counted as lost.
        let left = core.heartbeat(
            &pb::HeartbeatRequest {
                worker_id: b.clone(),
                running: None,
                leaving: true,
            },
            now,
        );
        assert!(left.assignment.is_none());
        assert!(!core.workers.contains_key(&b));
        // A new worker takes its place: attempt 2 runs, although max_restarts is 0.
        assert!(beat(&mut core, &a, now).assignment.is_none());
        let c2 = join(&mut core, "c", now);
        let first = beat(&mut core, &a, now).assignment.expect("attempt 2, rank 0");
        assert_eq!(first.attempt, 2);
        assert_eq!(beat(&mut core, &c2, now).assignment.unwrap().rank, 1);
        // A worker that leaves while it holds a rank (assigned as it was told to shut down)
        // re-queues the gang at once, still without using a restart ...
        core.heartbeat(
            &pb::HeartbeatRequest {
                worker_id: c2.clone(),
                running: None,
                leaving: true,
            },
            now,
        );
        let job = core.job(&id).unwrap();
        assert_eq!(job.state, State::Queued);
        assert!(job.attempts[1].preempted);
        assert!(
            job.attempts[1]
                .reason
                .contains("left the pool (shutting down) while holding rank 1"),
            "{}",
            job.attempts[1].reason
        );
        // ... but a failure does, and with no restarts allowed the job fails.
        let d = join(&mut core, "d", now);
        assert!(beat(&mut core, &a, now).assignment.is_some());
        assert!(beat(&mut core, &d, now).assignment.is_some());
        let failed = report(&a, &id, 3, 0, failure("CUDA error: an illegal memory access", true));
        assert!(core.report(&failed, now));
        let job = core.job(&id).unwrap();
        assert_eq!(job.state, State::Failed);
        assert!(job.reason.contains("gave up after 0 restarts"), "{}", job.reason);
    }

    #[test]
    fn a_failure_that_cannot_be_retried_fails_the_job_at_once() {
        let (mut core, now) = core();
        let id = core.submit(config(1, 0)).id;
        let w = join(&mut core, "a", now);
        let failed = report(&w, &id, 1, 0, failure("data.condition: no attribute Blond", false));
        assert!(core.report(&failed, now));
        let job = core.job(&id).unwrap();
        assert_eq!(job.state, State::Failed);
        assert!(job.reason.contains("no attribute Blond"), "{}", job.reason);
        assert!(beat(&mut core, &w, now).assignment.is_none());
    }

    #[test]
    fn a_failed_rank_stops_the_others_and_the_gang_restarts() {
        let (mut core, now) = core();
        let id = core.submit(config(2, 0)).id;
        let a = join(&mut core, "a", now);
        let b = join(&mut core, "b", now);
        let running = |rank: u32, attempt: u32| {
            Some(pb::RunningWork {
                job_id: id.clone(),
                attempt,
                rank,
                step: 7,
            })
        };
        let failed = report(&a, &id, 1, 0, failure("CUDA error: an illegal memory access", true));
        core.drain();
        assert!(core.report(&failed, now));
        // Watchers see the job go back to the queue.
        let states: Vec<pb::JobState> = core
            .drain()
            .iter()
            .filter_map(|e| match e {
                Event::Job(_, job) => Some(job.state()),
                _ => None,
            })
            .collect();
        assert_eq!(states.first(), Some(&pb::JobState::Queued));
        assert!(!states.contains(&pb::JobState::Running), "{states:?}");
        let job = core.job(&id).unwrap();
        assert!(
            job.attempts[0].reason.contains("rank 0 on worker"),
            "{}",
            job.attempts[0].reason
        );
        assert!(job.attempts[0].reason.contains("illegal memory access"));
        // Rank 1, still running attempt 1, is told to stop it; the gang is placed again once
        // both workers say they run nothing (a worker whose agent died never does).
        let stop = core.heartbeat(
            &pb::HeartbeatRequest {
                worker_id: b.clone(),
                running: running(1, 1),
                leaving: false,
            },
            now,
        );
        assert_eq!(stop.stop_job_ids, vec![id.clone()]);
        assert!(stop.assignment.is_none());
        assert!(beat(&mut core, &a, now).assignment.is_none());
        assert_eq!(core.job(&id).unwrap().state, State::Queued);
        let second = beat(&mut core, &b, now).assignment.expect("attempt 2");
        assert_eq!(second.attempt, 2);
        let job = core.job(&id).unwrap();
        assert_eq!(job.state, State::Running);
        assert_eq!(job.attempts.len(), 2);
        // A stale report of attempt 1 changes nothing and is told to stop.
        let finished = pb::worker_event::Event::Finished(pb::CheckpointInfo {
            step: 9,
            url: "x".into(),
            ..Default::default()
        });
        let stale = report(&b, &id, 1, 1, finished);
        assert!(core.report(&stale, now));
        assert_eq!(core.job(&id).unwrap().state, State::Running);
    }

    #[test]
    fn a_recovered_running_job_keeps_a_worker_that_re_registers() {
        let (mut core, now) = core();
        let id = core.submit(config(1, 0)).id;
        let w = join(&mut core, "a", now);
        let records: Vec<JobRecord> = core.list(&[]).into_iter().cloned().collect();
        let mut restarted = Core::recover(core.timing(), records, now);
        let req = pb::RegisterRequest {
            worker_id: w.clone(),
            address: "a:29500".into(),
            running: Some(pb::RunningWork {
                job_id: id.clone(),
                attempt: 1,
                rank: 0,
                step: 5,
            }),
            ..Default::default()
        };
        restarted.register(&req, now + Duration::from_secs(1));
        restarted.tick(now + Duration::from_millis(3500));
        assert_eq!(restarted.job(&id).unwrap().state, State::Running);
        assert_eq!(
            restarted.workers[&w].slot.as_ref().map(|s| s.job_id.as_str()),
            Some(id.as_str())
        );
    }

    #[test]
    fn a_scheduling_pass_writes_nothing_for_the_jobs_it_leaves_waiting() {
        let (mut core, now) = core();
        let ids: Vec<String> = (0..50).map(|_| core.submit(config(2, 0)).id).collect();
        let versions: Vec<u64> = ids.iter().map(|id| core.job(id).unwrap().version).collect();
        core.drain();
        // Workers join and heartbeat; the waiting jobs' reasons change, their records do not.
        let a = join(&mut core, "a", now);
        beat(&mut core, &a, now);
        core.tick(now);
        assert!(core.drain().is_empty(), "a pass rewrote waiting jobs");
        assert_eq!(
            core.view(&ids[7]).unwrap().reason,
            "waiting: needs 2 workers, 1 registered"
        );
        // The second worker starts the first job: one record changes, the others stay.
        join(&mut core, "b", now);
        let changed: Vec<String> = core
            .drain()
            .into_iter()
            .filter_map(|e| match e {
                Event::Job(id, _) => Some(id),
                _ => None,
            })
            .collect();
        assert_eq!(changed, vec![ids[0].clone()]);
        for (id, version) in ids.iter().zip(&versions).skip(1) {
            assert_eq!(core.job(id).unwrap().version, *version, "{id}");
        }
        assert_eq!(
            core.view(&ids[1]).unwrap().reason,
            "waiting for 2 idle workers (0 of 2 idle)"
        );
        assert_eq!(core.view(&ids[2]).unwrap().reason, format!("waiting behind {}", ids[1]));
        // Places follow the scheduler's order; a running job has none.
        assert_eq!(core.view(&ids[0]).unwrap().queue_position, 0);
        assert_eq!(core.view(&ids[1]).unwrap().queue_position, 1);
        assert_eq!(core.view(&ids[49]).unwrap().queue_position, 49);
        let urgent = core.submit(config(2, 5)).id;
        assert_eq!(core.view(&urgent).unwrap().queue_position, 1);
        assert_eq!(core.view(&ids[1]).unwrap().queue_position, 2);
        let views = core.views(&[core.job(&ids[49]).unwrap(), core.job(&ids[1]).unwrap()]);
        assert_eq!((views[0].queue_position, views[1].queue_position), (50, 2));
    }

    #[test]
    fn a_restarting_job_keeps_its_cause_beside_what_it_waits_for() {
        let (mut core, now) = core();
        let id = core.submit(config(1, 0)).id;
        let w = join(&mut core, "a", now);
        assert!(core.report(&report(&w, &id, 1, 0, failure("disk full", true)), now));
        let reason = core.view(&id).unwrap().reason;
        assert!(
            reason.starts_with("restarting from the latest checkpoint (restart 1 of 2) after: rank 0"),
            "{reason}"
        );
        assert!(
            reason.ends_with("; waiting for 1 idle workers (0 of 1 idle)"),
            "{reason}"
        );
        // The record keeps the cause alone: the waiting part is derived.
        assert!(!core.job(&id).unwrap().reason.contains("waiting"));
        // A record stored by an older coordinator, with the waiting part in it, reads the same.
        assert_eq!(
            queued_reason("cause; waiting: needs 2 workers, 1 registered", "now"),
            "cause; now"
        );
        assert_eq!(queued_reason("waiting behind job-000001", "now"), "now");
    }

    #[test]
    fn pages_follow_submission_order_with_filters() {
        let (mut core, now) = core();
        let ids: Vec<String> = (0..10).map(|i| core.submit(config(1 + (i % 2), 0)).id).collect();
        join(&mut core, "a", now);
        let running = core.job(&ids[0]).unwrap();
        assert_eq!(running.state, State::Running);
        let (page, next) = core.page(0, 4, 100, |_| true);
        let seqs: Vec<u64> = page.iter().map(|j| j.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        assert_eq!(next, Some(4));
        let (page, next) = core.page(8, 4, 100, |_| true);
        assert_eq!(page.iter().map(|j| j.seq).collect::<Vec<_>>(), vec![9, 10]);
        assert_eq!(next, None);
        // A filter that few jobs pass: pages may be short while more follow.
        let (page, next) = core.page(0, 4, 3, |j| j.config.job.workers == 2);
        assert_eq!(page.iter().map(|j| j.seq).collect::<Vec<_>>(), vec![2]);
        assert_eq!(next, Some(3));
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let (page, next) = core.page(after, 2, 3, |j| j.state == State::Queued);
            all.extend(page.iter().map(|j| j.seq));
            match next {
                Some(n) => after = n,
                None => break,
            }
        }
        assert_eq!(all, (2..=10).collect::<Vec<_>>());
    }
}
