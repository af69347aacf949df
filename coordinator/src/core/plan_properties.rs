//! Property tests of the scheduler's rules, over generated pools and queues: the planner alone
//! ([`plan`]) for the gang, priority and hold rules, and the whole core, on a clock it moves
//! and seeded ids, for no-starvation.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use gantry_job::{DeviceSpec, JobConfig};
use gantry_proto::pb;
use proptest::prelude::*;

use super::plan::can_run;
use super::*;
use crate::telemetry::Telemetry;

/// Cases per property: enough to meet the corners (empty pools, jobs too big, ties of priority),
/// few enough to keep the suite fast.
const CASES: u32 = 128;

const GIB: u64 = 1 << 30;

#[derive(Debug, Clone)]
struct GenWorker {
    device: &'static str,
    memory_bytes: u64,
    idle: bool,
}

#[derive(Debug, Clone)]
struct GenJob {
    workers: u32,
    priority: i32,
    device: DeviceSpec,
    memory_bytes: u64,
}

fn worker() -> impl Strategy<Value = GenWorker> {
    (
        prop_oneof![Just("cpu"), Just("cuda:0"), Just("cuda:1")],
        prop_oneof![Just(0), Just(4 * GIB), Just(16 * GIB)],
        prop::bool::weighted(0.7),
    )
        .prop_map(|(device, memory_bytes, idle)| GenWorker {
            device,
            memory_bytes,
            idle,
        })
}

fn job() -> impl Strategy<Value = GenJob> {
    (
        1u32..=4,
        0i32..3,
        prop_oneof![Just(DeviceSpec::Auto), Just(DeviceSpec::Cpu), Just(DeviceSpec::Cuda(0))],
        prop_oneof![Just(0), Just(2 * GIB), Just(8 * GIB), Just(32 * GIB)],
    )
        .prop_map(|(workers, priority, device, memory_bytes)| GenJob {
            workers,
            priority,
            device,
            memory_bytes,
        })
}

/// The pool as the planner sees it; registration order is the index.
fn pool(workers: &[GenWorker], ids: &[String]) -> Vec<PoolWorker<'static>> {
    workers
        .iter()
        .zip(ids)
        .enumerate()
        .map(|(i, (w, id))| PoolWorker {
            id: Box::leak(id.clone().into_boxed_str()),
            device: w.device,
            memory_bytes: w.memory_bytes,
            order: i as u64,
            idle: w.idle,
        })
        .collect()
}

/// The queue in the scheduler's order: highest priority first, then submission order.
fn queue(jobs: &[GenJob]) -> Vec<QueuedJob<'static>> {
    let mut keyed: Vec<(i64, usize, QueuedJob<'static>)> = jobs
        .iter()
        .enumerate()
        .map(|(seq, j)| {
            let id: &'static str = Box::leak(format!("job-{seq:06}").into_boxed_str());
            let queued = QueuedJob {
                id,
                workers: j.workers,
                device: j.device,
                memory_bytes: j.memory_bytes,
            };
            (-i64::from(j.priority), seq, queued)
        })
        .collect();
    keyed.sort_by_key(|(priority, seq, _)| (*priority, *seq));
    keyed.into_iter().map(|(_, _, job)| job).collect()
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("w-{i:02}")).collect()
}

/// Whether the pool could ever run `job` (enough workers, enough of them able to).
fn placeable(job: &QueuedJob<'_>, pool: &[PoolWorker<'_>]) -> bool {
    let n = job.workers as usize;
    n <= pool.len() && n <= pool.iter().filter(|w| can_run(job, w)).count()
}

fn started<'p>(actions: &'p [Action], job: &str) -> Option<&'p Vec<String>> {
    actions.iter().find_map(|a| match a {
        Action::Start { job: j, workers } if j == job => Some(workers),
        _ => None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// A job starts only on as many workers as it asks for, all idle, able to run it and
    /// distinct; no worker goes to two jobs.
    #[test]
    fn a_gang_starts_only_on_idle_capable_distinct_workers(
        workers in prop::collection::vec(worker(), 0..8),
        jobs in prop::collection::vec(job(), 0..10),
    ) {
        let ids = ids(workers.len());
        let pool = pool(&workers, &ids);
        let queue = queue(&jobs);
        let actions = plan(&pool, queue.iter().copied(), Instant::now(), &[]);
        let mut taken = HashSet::new();
        for action in &actions {
            let Action::Start { job, workers: gang } = action else { continue };
            let queued = queue.iter().find(|q| q.id == job).expect("a queued job");
            prop_assert_eq!(gang.len(), queued.workers as usize, "{} got {:?}", job, gang);
            for id in gang {
                let w = pool.iter().find(|w| w.id == id).expect("a worker of the pool");
                prop_assert!(w.idle, "{} is busy", id);
                prop_assert!(can_run(queued, w), "{} cannot run {}", id, job);
                prop_assert!(taken.insert(id.clone()), "{} given twice", id);
            }
        }
    }

    /// Priority, then submission order: every job ahead of a started one started too, or can
    /// never fit the pool (big jobs do not block the queue); the first job that fits the pool
    /// but not the idle workers holds every job behind it; without one, every job that fits
    /// started. Idle workers are taken in registration order.
    #[test]
    fn priority_then_fifo_and_only_unplaceable_jobs_are_skipped(
        workers in prop::collection::vec(worker(), 0..8),
        jobs in prop::collection::vec(job(), 0..10),
    ) {
        let ids = ids(workers.len());
        let pool = pool(&workers, &ids);
        let queue = queue(&jobs);
        let actions = plan(&pool, queue.iter().copied(), Instant::now(), &[]);
        let head = actions.iter().find_map(|a| match a {
            Action::Wait { job, cause: WaitCause::HoldsQueue } => Some(job.clone()),
            _ => None,
        });
        let mut free: Vec<&PoolWorker<'_>> = pool.iter().filter(|w| w.idle).collect();
        let mut behind_head = false;
        for job in &queue {
            if behind_head {
                prop_assert!(started(&actions, job.id).is_none(), "{} started behind {:?}", job.id, head);
                continue;
            }
            if !placeable(job, &pool) {
                prop_assert!(started(&actions, job.id).is_none(), "{} cannot fit yet started", job.id);
                let wait = Action::Wait { job: job.id.to_string(), cause: WaitCause::Unplaceable };
                prop_assert!(actions.contains(&wait), "{} waits without a wait action", job.id);
                continue;
            }
            // The first idle workers able to run it, in registration order, among those left.
            let expected: Vec<String> = free
                .iter()
                .filter(|w| can_run(job, w))
                .take(job.workers as usize)
                .map(|w| w.id.to_string())
                .collect();
            if expected.len() < job.workers as usize {
                prop_assert_eq!(head.as_deref(), Some(job.id), "{} fits the pool, not the idle workers", job.id);
                behind_head = true;
                continue;
            }
            prop_assert_eq!(started(&actions, job.id), Some(&expected), "{}", job.id);
            free.retain(|w| !expected.iter().any(|id| id == w.id));
        }
        prop_assert_eq!(behind_head, head.is_some());
    }

    /// Workers held for a job go to no other job while the hold lasts; a lapsed hold changes
    /// nothing.
    #[test]
    fn held_workers_go_to_no_other_job(
        workers in prop::collection::vec(worker(), 1..8),
        jobs in prop::collection::vec(job(), 1..10),
        held in prop::collection::vec(any::<bool>(), 8),
    ) {
        let ids = ids(workers.len());
        let pool = pool(&workers, &ids);
        let queue = queue(&jobs);
        let holder = queue.last().expect("a job").id.to_string();
        let kept: Vec<String> = ids.iter().zip(&held).filter(|(_, h)| **h).map(|(id, _)| id.clone()).collect();
        let now = Instant::now();
        let hold = |until| Action::Hold { job: holder.clone(), workers: kept.clone(), until };
        let actions = plan(&pool, queue.iter().copied(), now, &[hold(now + Duration::from_secs(5))]);
        for action in &actions {
            if let Action::Start { job, workers: gang } = action
                && *job != holder
            {
                prop_assert!(gang.iter().all(|w| !kept.contains(w)), "{} took held workers {:?}", job, gang);
            }
        }
        // Issued again while in force, unless its job started.
        if started(&actions, &holder).is_none() {
            prop_assert!(actions.contains(&hold(now + Duration::from_secs(5))));
        }
        let lapsed = plan(&pool, queue.iter().copied(), now, &[hold(now)]);
        prop_assert_eq!(lapsed, plan(&pool, queue.iter().copied(), now, &[]));
    }

    /// No starvation: with the pool up and every run ending, every job that fits the pool
    /// eventually runs to its end, whatever its priority and whatever was submitted with it;
    /// the counters follow what was applied.
    #[test]
    fn every_job_that_fits_the_pool_eventually_runs(
        workers in prop::collection::vec(worker(), 1..6),
        jobs in prop::collection::vec(job(), 1..12),
        seed in any::<u64>(),
    ) {
        let clock = ManualClock::at(1_700_000_000_000);
        let telemetry = Telemetry::default();
        let environment = Environment {
            clock: Box::new(clock.clone()),
            ids: Box::new(SeededIds::new(seed)),
            telemetry: telemetry.clone(),
        };
        let timing = Timing { heartbeat_timeout: Duration::from_secs(3600) };
        let mut core = Core::recover_with(timing, Vec::new(), clock.instant(), environment);
        let mut registered = Vec::new();
        for (i, w) in workers.iter().enumerate() {
            let req = pb::RegisterRequest {
                address: format!("10.0.0.{i}:29500"),
                device: w.device.into(),
                hostname: format!("h{i}"),
                memory_bytes: w.memory_bytes,
                ..Default::default()
            };
            registered.push(core.register(&req, clock.instant()).0);
        }
        let pool: Vec<PoolWorker<'_>> = workers
            .iter()
            .zip(&registered)
            .enumerate()
            .map(|(i, (w, id))| PoolWorker { id, device: w.device, memory_bytes: w.memory_bytes, order: i as u64, idle: true })
            .collect();
        let mut submitted = Vec::new();
        for j in &jobs {
            let mut config = JobConfig::from_toml(
                &format!("[data]\nurl = \"memory://d\"\n[output]\nurl = \"memory://o/{}\"\n", submitted.len()),
                "test",
            ).unwrap();
            config.job.workers = j.workers;
            config.job.priority = j.priority;
            config.train.device = j.device;
            submitted.push((core.submit_estimated(config, j.memory_bytes).id, j.clone()));
        }
        // Rounds: each running gang ends, its workers say they run nothing.
        for _ in 0..=jobs.len() {
            clock.advance(1000);
            let now = clock.instant();
            let running: Vec<(String, u32, Vec<String>)> = core
                .list(&[State::Running])
                .into_iter()
                .map(|j| (j.id.clone(), j.attempts.len() as u32, j.attempts.last().unwrap().workers.clone()))
                .collect();
            for (id, attempt, gang) in running {
                for (rank, worker) in gang.iter().enumerate() {
                    let done = pb::worker_event::Event::Finished(pb::CheckpointInfo { step: 1, url: "x".into(), ..Default::default() });
                    let report = pb::ReportRequest {
                        worker_id: worker.clone(),
                        job_id: id.clone(),
                        attempt,
                        rank: rank as u32,
                        events: vec![pb::WorkerEvent { event: Some(done) }],
                    };
                    core.report(&report, now);
                }
            }
            for worker in &registered {
                core.heartbeat(&pb::HeartbeatRequest { worker_id: worker.clone(), running: None, leaving: false }, now);
            }
        }
        let mut succeeded = 0;
        for (id, j) in &submitted {
            let queued = QueuedJob { id, workers: j.workers, device: j.device, memory_bytes: j.memory_bytes };
            let record = core.job(id).unwrap();
            if placeable(&queued, &pool) {
                prop_assert_eq!(record.state, State::Succeeded, "{} ({:?}) never ran: {}", id, j, core.view(id).unwrap().reason);
                prop_assert_eq!(record.attempts.len(), 1);
                prop_assert_eq!(record.attempts[0].secret.len(), 64);
                succeeded += 1;
            } else {
                prop_assert_eq!(record.state, State::Queued, "{} cannot fit, yet it ran", id);
            }
        }
        prop_assert_eq!(telemetry.ended(State::Succeeded), succeeded);
        prop_assert_eq!(core.census(clock.unix_ms()).jobs[0].1, jobs.len() as u64 - succeeded);
    }
}

/// The same inputs, clock and seed give the same records, secrets and worker ids included.
#[test]
fn a_core_run_is_a_function_of_its_inputs() {
    let run = || {
        let clock = ManualClock::at(1_700_000_000_000);
        let environment = Environment {
            clock: Box::new(clock.clone()),
            ids: Box::new(SeededIds::new(7)),
            telemetry: Telemetry::default(),
        };
        let timing = Timing {
            heartbeat_timeout: Duration::from_secs(3),
        };
        let mut core = Core::recover_with(timing, Vec::new(), clock.instant(), environment);
        let config =
            JobConfig::from_toml("[data]\nurl = \"memory://d\"\n[output]\nurl = \"memory://o\"\n", "test").unwrap();
        let id = core.submit(config).id;
        clock.advance(2500);
        let worker = core.register(&pb::RegisterRequest::default(), clock.instant()).0;
        let record = core.job(&id).unwrap().clone();
        (worker, serde_json::to_string(&record).unwrap())
    };
    let (first, second) = (run(), run());
    assert_eq!(first, second);
    assert!(first.0.starts_with("w-") && first.0.len() == 10, "{}", first.0);
    assert!(first.1.contains("\"submitted_ms\":1700000000000"), "{}", first.1);
    assert!(first.1.contains("\"started_ms\":1700000002500"), "{}", first.1);
}
