//! The scheduler as a pure function: [`plan`] reads the pool and the queue as they are (and
//! the standing decisions of the previous plan) and returns the [`Action`]s to take, changing
//! nothing; the core then applies them (records, worker slots, telemetry). Its rules can thus be
//! checked on any pool and queue without a core, a clock or a network.
//!
//! The rules, in the order the queue is walked (highest priority first, then submission order):
//!
//! - **Gang**: a job starts only on as many workers as it asks for, all idle at once, distinct,
//!   and each able to run it ([`gantry_job::DeviceSpec::runs_on`], and its memory estimate
//!   within what the worker offers, when both are known). Idle workers are taken in
//!   registration order.
//! - **Big jobs do not block**: a job larger than the pool, or than the workers able to run it,
//!   waits ([`WaitCause::Unplaceable`]) without holding up the jobs behind it.
//! - **No starvation**: the first job that fits the pool but not the idle workers holds up every
//!   job behind it ([`WaitCause::HoldsQueue`]): nothing behind it starts in that pass, so smaller
//!   jobs cannot take the workers it waits for, one by one, for ever.
//! - **Holds**: workers held for a job ([`Action::Hold`], until a deadline) go to no other job.
//!
//! Today a plan contains [`Action::Start`], [`Action::Wait`] and, re-issued while in force,
//! the holds of the previous plan. The other variants are what later features (quotas,
//! elastic gangs, reservations) will produce; the core already applies each of them, as their
//! documentation says.

use std::collections::HashMap;
use std::time::Instant;

use gantry_job::DeviceSpec;

/// A worker of the pool, as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolWorker<'a> {
    /// Its id.
    pub id: &'a str,
    /// The device it reports (`cpu`, `cuda:0`).
    pub device: &'a str,
    /// Memory a rank may use there, bytes; 0: unknown.
    pub memory_bytes: u64,
    /// Registration order: idle workers are taken in it.
    pub order: u64,
    /// It holds no rank and is not winding down a run that ended.
    pub idle: bool,
}

/// A queued job, as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueuedJob<'a> {
    /// Its id.
    pub id: &'a str,
    /// Workers it needs (its gang's size).
    pub workers: u32,
    /// The device it asks for.
    pub device: DeviceSpec,
    /// Memory a rank needs, bytes; 0: not estimated.
    pub memory_bytes: u64,
}

/// Why a job waits.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitCause {
    /// Larger than the pool, or than the workers able to run it: it waits for workers to join,
    /// and does not hold up the jobs behind it.
    Unplaceable,
    /// It fits the pool but not the idle workers: it waits for workers to become idle, and the
    /// jobs behind it wait for it.
    HoldsQueue,
    /// Over a quota: it stays queued with this reason (recorded on the job). Not produced yet.
    OverQuota {
        /// The quota and how the job exceeds it, as people read it.
        reason: String,
    },
}

/// What the planner decided for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Start a new attempt of a queued job on these workers (rank order). Applying it records
    /// the attempt, with a new gang secret, and gives each worker its rank.
    Start {
        /// The job.
        job: String,
        /// Worker ids by rank.
        workers: Vec<String>,
    },
    /// The job stays queued. Applying it records what holds the queue (for the reasons read
    /// later) and, over a quota, the reason on the job.
    Wait {
        /// The job.
        job: String,
        /// Why.
        cause: WaitCause,
    },
    /// Keep these idle workers for a queued job until `until`: no other job gets them. The
    /// core keeps the holds of the last plan and passes them back as `previous`; the planner
    /// issues them again while they are in force and the job has not started. Not produced yet
    /// (only carried over).
    Hold {
        /// The job.
        job: String,
        /// The workers held.
        workers: Vec<String>,
        /// When the hold lapses.
        until: Instant,
    },
    /// Order a running job's gang to checkpoint and stop; the job goes back to the queue,
    /// without using a restart. Not produced yet. Applying it today stops the gang as a
    /// preemption does (the wire has no checkpoint order yet: the workers are told to stop and
    /// the job resumes from its latest committed checkpoint).
    CheckpointAndStop {
        /// The job.
        job: String,
        /// Why, as people read it.
        reason: String,
    },
    /// Refuse a queued job for good (over a quota it can never meet): it fails with the
    /// reason. Not produced yet.
    Refuse {
        /// The job.
        job: String,
        /// Why, as people read it.
        reason: String,
    },
}

/// Whether `worker` can run a rank of `job`: its device runs the job's, and the job's memory
/// estimate fits what the worker offers (when both are known).
pub fn can_run(job: &QueuedJob<'_>, worker: &PoolWorker<'_>) -> bool {
    let memory_ok = worker.memory_bytes == 0 || job.memory_bytes <= worker.memory_bytes;
    job.device.runs_on(worker.device) && memory_ok
}

/// The actions that start what can start now. `pool`: every registered worker; `queue`: the
/// queued jobs in the scheduler's order (highest priority first, then submission order), read
/// only as far as needed; `now`: for the deadlines of holds; `previous`: the standing actions
/// of the last plan (its holds). Changes nothing; see the module's rules.
pub fn plan<'a>(
    pool: &[PoolWorker<'a>],
    queue: impl IntoIterator<Item = QueuedJob<'a>>,
    now: Instant,
    previous: &[Action],
) -> Vec<Action> {
    let mut actions = Vec::new();
    // Holds still in force: worker id -> the job it is kept for.
    let mut held: HashMap<&str, &str> = HashMap::new();
    let mut holds: Vec<&Action> = Vec::new();
    for action in previous {
        if let Action::Hold { job, workers, until } = action
            && *until > now
        {
            holds.push(action);
            for worker in workers {
                held.insert(worker.as_str(), job.as_str());
            }
        }
    }
    let mut idle: Vec<&PoolWorker<'a>> = pool.iter().filter(|w| w.idle).collect();
    idle.sort_by_key(|w| w.order);
    // Workers able to run a job, by what the job asks for (device, memory).
    let mut capable: HashMap<(DeviceSpec, u64), usize> = HashMap::new();
    let mut started: Vec<&str> = Vec::new();
    for job in queue {
        let n = job.workers as usize;
        let capable = *capable
            .entry((job.device, job.memory_bytes))
            .or_insert_with(|| pool.iter().filter(|w| can_run(&job, w)).count());
        if n > pool.len() || n > capable {
            actions.push(Action::Wait {
                job: job.id.to_string(),
                cause: WaitCause::Unplaceable,
            });
            continue;
        }
        let fitting: Vec<usize> = idle
            .iter()
            .enumerate()
            .filter(|(_, w)| can_run(&job, w) && held.get(w.id).is_none_or(|holder| *holder == job.id))
            .map(|(i, _)| i)
            .take(n)
            .collect();
        if fitting.len() < n {
            actions.push(Action::Wait {
                job: job.id.to_string(),
                cause: WaitCause::HoldsQueue,
            });
            break;
        }
        let workers = fitting.iter().map(|&i| idle[i].id.to_string()).collect();
        for &i in fitting.iter().rev() {
            idle.remove(i);
        }
        started.push(job.id);
        actions.push(Action::Start {
            job: job.id.to_string(),
            workers,
        });
    }
    for hold in holds {
        if let Action::Hold { job, .. } = hold
            && !started.contains(&job.as_str())
        {
            actions.push(hold.clone());
        }
    }
    actions
}
