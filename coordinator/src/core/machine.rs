//! The state machine ([`Core`]): jobs and their lifecycle, the worker pool, heartbeat deadlines
//! and restarts. Every change leaves the ids of the job records to persist and the events to
//! broadcast in an outbox that the service drains after each call, under the same lock.
//!
//! A record changes (and is written) only when its job's own state does. What a queued job
//! waits for and its place in the queue depend on the whole pool and queue: they are derived
//! when a job is read ([`Core::view`]), never stored, so a scheduling pass writes nothing for
//! the jobs it leaves waiting.
//!
//! Scheduling is two steps: [`super::plan::plan`] decides, from the pool and the queue, without
//! changing anything; [`Core`] applies the actions it returns. Telemetry is emitted as the
//! actions and events are applied ([`crate::telemetry::InternalEvent`]), never by the planner.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::time::{Duration, Instant};

use gantry_job::JobConfig;
use gantry_proto::pb;

use super::clock::{Clock, Ids, OsIds, SystemClock};
use super::plan::{self, Action, PoolWorker, QueuedJob, WaitCause};
use super::record::{AttemptRecord, JobRecord, QueueKey, RECORD_FORMAT, State};
use crate::telemetry::{InternalEvent, Telemetry};
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

/// What the core takes from outside besides its calls: the wall clock, the source of ids and
/// secrets, and the telemetry it emits into.
#[derive(Debug)]
pub struct Environment {
    /// Unix times of records.
    pub clock: Box<dyn Clock>,
    /// Worker ids and gang secrets.
    pub ids: Box<dyn Ids>,
    /// Where events are counted.
    pub telemetry: Telemetry,
}

impl Default for Environment {
    /// The system clock, the OS's randomness, fresh counters.
    fn default() -> Self {
        Self {
            clock: Box::new(SystemClock),
            ids: Box::new(OsIds),
            telemetry: Telemetry::default(),
        }
    }
}

/// What a worker is assigned, in the coordinator's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Slot {
    pub(super) job_id: String,
    pub(super) attempt: u32,
    pub(super) rank: u32,
}

#[derive(Debug)]
pub(super) struct Worker {
    pub(super) address: String,
    pub(super) device: String,
    pub(super) hostname: String,
    /// Registration order, for a stable pick of idle workers.
    pub(super) order: u64,
    pub(super) last_seen: Instant,
    /// Memory a rank may use there, bytes; 0: unknown.
    pub(super) memory_bytes: u64,
    pub(super) slot: Option<Slot>,
    /// Its run ended in the coordinator's view (a failed gang, a cancel, the job's end), but the
    /// worker has not yet said it runs nothing: it is not idle until its next heartbeat does. A
    /// worker whose agent died never says so, and leaves the pool with its missed heartbeats
    /// instead of being handed the restarted gang's rank.
    pub(super) draining: bool,
}

impl Worker {
    /// Holds no rank and is not winding down.
    pub(super) fn idle(&self) -> bool {
        self.slot.is_none() && !self.draining
    }

    /// As the planner sees it.
    pub(super) fn planned<'a>(&'a self, id: &'a str) -> PoolWorker<'a> {
        PoolWorker {
            id,
            device: &self.device,
            memory_bytes: self.memory_bytes,
            order: self.order,
            idle: self.idle(),
        }
    }
}

/// A queued job as the planner sees it.
pub(super) fn planned(job: &JobRecord) -> QueuedJob<'_> {
    QueuedJob {
        id: &job.id,
        workers: job.config.job.workers,
        device: job.config.train.device,
        memory_bytes: job.memory_bytes,
    }
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

/// The coordinator's state.
#[derive(Debug)]
pub struct Core {
    pub(super) timing: Timing,
    pub(super) jobs: BTreeMap<String, JobRecord>,
    pub(super) next_seq: u64,
    pub(super) workers: HashMap<String, Worker>,
    pub(super) next_order: u64,
    /// Running jobs recovered from the store get until then for their workers to re-register.
    pub(super) grace_until: Instant,
    /// Workers lost to missed heartbeats, with how long they had been silent.
    pub(super) lost: HashMap<String, Duration>,
    pub(super) outbox: Vec<Event>,
    /// Job ids by submission sequence.
    pub(super) by_seq: BTreeMap<u64, String>,
    /// The queued jobs, in the scheduler's order (kept by [`Core::touched`]).
    pub(super) queue: BTreeSet<QueueKey>,
    /// The first queued job that fits the pool but not its idle workers, after the last pass:
    /// the jobs behind it wait for it.
    pub(super) blocked_head: Option<String>,
    /// The standing actions of the last plan (its holds), passed to the next.
    pub(super) standing: Vec<Action>,
    /// Raised by every scheduling pass: what queued jobs wait for may have changed.
    pub(super) generation: u64,
    /// The outputs of the jobs that have not ended (canonical URL -> job id): one job per output.
    pub(super) outputs: HashMap<String, String>,
    pub(super) clock: Box<dyn Clock>,
    pub(super) ids: Box<dyn Ids>,
    /// Counted for `/metrics`.
    pub(super) telemetry: Telemetry,
}

/// An output URL in the form the one-job-per-output check compares.
pub(super) fn canonical_output(url: &str) -> String {
    base::access::normalize(url).unwrap_or_else(|_| url.trim().to_string())
}

impl Core {
    /// A coordinator with the jobs of a store (empty for a fresh one), on the system clock and
    /// the OS's randomness. Running jobs keep their gangs for one heartbeat timeout, waiting for
    /// the workers to re-register.
    pub fn recover(timing: Timing, records: Vec<JobRecord>, now: Instant) -> Self {
        Self::recover_with(timing, records, now, Environment::default())
    }

    /// [`Core::recover`] with the clock, ids and telemetry of `environment`.
    pub fn recover_with(timing: Timing, records: Vec<JobRecord>, now: Instant, environment: Environment) -> Self {
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
            standing: Vec::new(),
            generation: 0,
            outputs,
            clock: environment.clock,
            ids: environment.ids,
            telemetry: environment.telemetry,
        };
        core.schedule(now);
        core
    }

    /// The protocol timing.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// What the core counts (handles to register with a metrics registry).
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Takes what the last calls left to persist and broadcast, in order.
    pub fn drain(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.outbox)
    }

    /// A record changed: its version rises, the queue follows its state, and the change is
    /// left to persist and broadcast.
    pub(super) fn touched(&mut self, id: &str) {
        let job = self.jobs.get_mut(id).expect("known job");
        job.version += 1;
        job.format = RECORD_FORMAT;
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
            format: RECORD_FORMAT,
            id: id.clone(),
            seq,
            config,
            state: State::Queued,
            reason: "queued".to_string(),
            attempts: Vec::new(),
            submitted_ms: self.clock.unix_ms(),
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
        self.schedule(self.clock.instant());
        self.jobs[&id].clone()
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
        self.schedule(self.clock.instant());
        Ok(self.jobs[id].clone())
    }

    /// Ends the current attempt of a running job and frees its workers.
    fn end_attempt(&mut self, id: &str, reason: &str) {
        let ended_ms = self.clock.unix_ms();
        let job = self.jobs.get_mut(id).expect("known job");
        if job.state != State::Running {
            return;
        }
        let attempt = job.attempts.last_mut().expect("a running job has an attempt");
        attempt.ended_ms = ended_ms;
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
        let finished_ms = self.clock.unix_ms();
        let job = self.jobs.get_mut(id).expect("known job");
        job.state = state;
        job.reason = reason;
        job.finished_ms = finished_ms;
        let output = canonical_output(&job.config.output.url);
        if self.outputs.get(&output).is_some_and(|holder| holder == id) {
            self.outputs.remove(&output);
        }
        let job = &self.jobs[id];
        InternalEvent::JobEnded {
            job_id: id,
            state,
            reason: &job.reason,
        }
        .emit(&self.telemetry);
        self.touched(id);
    }

    /// A rank failed or was lost: the whole gang stops, and the job goes back to the queue to
    /// restart from its latest checkpoint, unless it has used its restarts or `retryable` is false.
    fn fail_gang(&mut self, id: &str, cause: String, retryable: bool, now: Instant) {
        self.end_attempt(id, &cause);
        let job = &self.jobs[id];
        // Preempted attempts are not restarts.
        let attempts = job.attempts.iter().filter(|a| !a.preempted).count() as u32;
        let max = job.config.job.max_restarts;
        if !retryable {
            self.finish(id, State::Failed, cause);
        } else if attempts > max {
            self.finish(id, State::Failed, format!("{cause} (gave up after {max} restarts)"));
        } else {
            InternalEvent::JobRestarted {
                job_id: id,
                cause: &cause,
                attempts,
            }
            .emit(&self.telemetry);
            let job = self.jobs.get_mut(id).expect("known job");
            job.state = State::Queued;
            job.reason = format!("restarting from the latest checkpoint (restart {attempts} of {max}) after: {cause}");
            self.touched(id);
        }
        self.schedule(now);
    }

    /// A worker of the gang is shutting down and its gang stopped after saving a checkpoint:
    /// the job goes back to the queue, to resume from it on the next gang, and this attempt
    /// does not count as a restart.
    fn preempt_gang(&mut self, id: &str, cause: String, now: Instant) {
        self.requeue_preempted(id, cause);
        self.schedule(now);
    }

    /// [`Core::preempt_gang`] without the scheduling pass that follows.
    fn requeue_preempted(&mut self, id: &str, cause: String) {
        self.end_attempt(id, &cause);
        let job = self.jobs.get_mut(id).expect("known job");
        let attempt = job.attempts.last_mut().expect("a preempted job has an attempt");
        attempt.preempted = true;
        InternalEvent::JobPreempted {
            job_id: id,
            cause: &cause,
        }
        .emit(&self.telemetry);
        let job = self.jobs.get_mut(id).expect("known job");
        job.state = State::Queued;
        job.reason = format!("re-queued after {cause}; resumes from its latest checkpoint");
        self.touched(id);
    }

    /// A worker joins the pool, or re-joins it with its id (and the work it still runs, which
    /// is kept when it is still that worker's rank of a running job).
    pub fn register(&mut self, req: &pb::RegisterRequest, now: Instant) -> (String, Duration) {
        let id = if req.worker_id.is_empty() {
            self.ids.worker_id()
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
            InternalEvent::WorkerReattached {
                worker_id: &id,
                job_id: &slot.job_id,
                rank: slot.rank,
            }
            .emit(&self.telemetry);
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
        self.schedule(now);
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
                self.preempt_gang(&slot.job_id, cause, now);
            }
            self.schedule(now);
            return pb::HeartbeatResponse::default();
        }
        if worker.draining && req.running.is_none() {
            worker.draining = false;
            self.schedule(now);
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
                        self.schedule(now);
                    } else {
                        self.touched(id);
                    }
                }
                E::Failed(f) => {
                    let cause = format!("rank {} on worker {} failed: {}", req.rank, req.worker_id, f.message);
                    self.fail_gang(id, cause, f.retryable, now);
                    return true;
                }
                E::Stopped(step) => {
                    let cause = format!("rank {} on worker {} stopped at step {step}", req.rank, req.worker_id);
                    self.fail_gang(id, cause, true, now);
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
                    self.preempt_gang(id, cause, now);
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
            InternalEvent::WorkerLost {
                worker_id: &id,
                hostname: &worker.hostname,
                device: &worker.device,
                silent_s: silent.as_secs_f64(),
            }
            .emit(&self.telemetry);
            self.lost.insert(id, silent);
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
            self.fail_gang(&job_id, cause, true, now);
        }
        self.schedule(now);
    }

    /// A scheduling pass: plans over the pool and the queue ([`plan::plan`], which changes
    /// nothing), then applies the plan's actions.
    pub(super) fn schedule(&mut self, now: Instant) {
        let actions = {
            let pool: Vec<PoolWorker<'_>> = self.workers.iter().map(|(id, w)| w.planned(id)).collect();
            let queue = self.queue.iter().map(|key| planned(&self.jobs[&self.by_seq[&key.1]]));
            plan::plan(&pool, queue, now, &self.standing)
        };
        self.apply(actions);
    }

    /// Applies a plan: every variant of [`Action`], including those the planner does not
    /// produce yet, as their documentation says.
    pub(super) fn apply(&mut self, actions: Vec<Action>) {
        self.generation += 1;
        self.blocked_head = None;
        self.standing.clear();
        for action in actions {
            match action {
                Action::Start { job, workers } => self.start(&job, workers),
                Action::Wait { job, cause } => match cause {
                    WaitCause::Unplaceable => {}
                    WaitCause::HoldsQueue => self.blocked_head = Some(job),
                    WaitCause::OverQuota { reason } => {
                        let record = self.jobs.get_mut(&job).expect("a planned job");
                        if record.state == State::Queued && record.reason != reason {
                            record.reason = reason;
                            self.touched(&job);
                        }
                    }
                },
                Action::Hold { ref job, .. } => {
                    if self.jobs.get(job).is_some_and(|j| j.state == State::Queued) {
                        self.standing.push(action);
                    }
                }
                Action::CheckpointAndStop { job, reason } => {
                    if self.jobs.get(&job).is_some_and(|j| j.state == State::Running) {
                        self.requeue_preempted(&job, reason);
                    }
                }
                Action::Refuse { job, reason } => {
                    if self.jobs.get(&job).is_some_and(|j| j.state == State::Queued) {
                        self.finish(&job, State::Failed, reason);
                    }
                }
            }
        }
    }

    fn start(&mut self, id: &str, gang: Vec<String>) {
        let peers: Vec<String> = gang.iter().map(|w| self.workers[w].address.clone()).collect();
        let started_ms = self.clock.unix_ms();
        let secret = self.ids.secret();
        let job = self.jobs.get_mut(id).expect("known job");
        let number = job.attempts.len() as u32 + 1;
        let first_wait_s = (number == 1).then(|| (started_ms - job.submitted_ms).max(0) as f64 / 1000.0);
        job.attempts.push(AttemptRecord {
            number,
            workers: gang.clone(),
            peers,
            secret,
            started_ms,
            ended_ms: 0,
            resumed_from: 0,
            finished_ranks: BTreeSet::new(),
            reason: String::new(),
            preempted: false,
        });
        job.state = State::Running;
        job.reason = format!("assigned attempt {number} to {}", gang.join(", "));
        InternalEvent::JobStarted {
            job_id: id,
            attempt: number,
            gang: &gang.join(","),
            first_wait_s,
        }
        .emit(&self.telemetry);
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

    /// Job ids in submission order after `after` (for [`Core::page`]).
    pub(super) fn following(&self, after: u64) -> impl Iterator<Item = (&u64, &String)> {
        self.by_seq.range((Bound::Excluded(after), Bound::Unbounded))
    }
}
