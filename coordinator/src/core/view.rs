//! Reading the core: jobs as clients see them ([`Core::view`], with what a queued job waits for
//! and its place, derived now), pages and lists, and the pool and queue counted for `/metrics`
//! ([`Census`]) and shown by the dashboard ([`WorkerInfo`]).

use std::collections::{HashMap, HashSet};

use gantry_proto::pb;
use serde::Serialize;

use super::machine::{Core, canonical_output, planned};
use super::plan::can_run;
use super::record::{JobRecord, QueueKey, State};
use crate::{Error, Result};

/// A queued job's place: its reason with what it waits for, and its 1-based position.
pub(super) fn queued_reason(own: &str, waiting: &str) -> String {
    // Older records stored the derived part too ("<cause>; waiting ..."): it is derived again.
    let own = own.split_once("; waiting").map_or(own, |(cause, _)| cause);
    if own.is_empty() || own == "queued" || own.starts_with("waiting") {
        waiting.to_string()
    } else {
        format!("{own}; {waiting}")
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

impl Core {
    /// A job as clients see it: its record, and for a queued job what it waits for and its
    /// place in the queue, derived now.
    pub fn view(&self, id: &str) -> Result<pb::Job> {
        Ok(self.view_of(self.job(id)?))
    }

    pub(super) fn view_of(&self, job: &JobRecord) -> pb::Job {
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
        let mut counts: HashMap<(gantry_job::DeviceSpec, u64), (usize, usize)> = HashMap::new();
        jobs.iter()
            .map(|job| {
                let mut view = job.to_pb();
                if job.state == State::Queued {
                    let key = job.queue_key();
                    view.queue_position = places.get(&key).copied().unwrap_or(0);
                    let class = (job.config.train.device, job.memory_bytes);
                    let (capable, idle) = *counts.entry(class).or_insert_with(|| {
                        let queued = planned(job);
                        let can = self.workers.iter().filter(|(id, w)| can_run(&queued, &w.planned(id)));
                        can.fold((0, 0), |(all, idle), (_, w)| (all + 1, idle + usize::from(w.idle())))
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
        for (seen, (&seq, id)) in self.following(after).enumerate() {
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

    /// A job that has not ended and writes into `url` (compared in canonical form).
    pub fn output_in_use(&self, url: &str) -> Option<&JobRecord> {
        let id = self.outputs.get(&canonical_output(url))?;
        self.jobs.get(id).filter(|j| !j.state.is_final())
    }

    /// Jobs by state, the queue's oldest wait and the pool, counted now (`now_ms`: Unix ms).
    pub fn census(&self, now_ms: i64) -> Census {
        let mut jobs: Vec<(State, u64)> = State::ALL.iter().map(|s| (*s, 0)).collect();
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
    pub fn workers(&self, now: std::time::Instant) -> Vec<WorkerInfo> {
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
}
