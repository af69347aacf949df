//! The core's unit tests: the lifecycle of jobs and workers through the core's calls, without
//! a network, and the record format.

use std::time::{Duration, Instant};

use gantry_job::JobConfig;
use gantry_proto::pb;

use super::view::queued_reason;
use super::*;

fn config(workers: u32, priority: i32) -> JobConfig {
    let mut c = JobConfig::from_toml("[data]\nurl = \"memory://d\"\n[output]\nurl = \"memory://o\"\n", "test").unwrap();
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
    assert_eq!(core.telemetry().workers_lost.get(), 2);
    assert_eq!(core.telemetry().restarts.get(), 1);
    assert_eq!(core.telemetry().preemptions.get(), 0);
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
    registry.register("wait", "", core.telemetry().queue_wait.clone());
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
    assert_eq!(core.telemetry().preemptions.get(), 1);
    assert_eq!(core.telemetry().restarts.get(), 0);
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

#[test]
fn actions_the_planner_does_not_produce_yet_are_applied_as_documented() {
    let (mut core, now) = core();
    let a = join(&mut core, "a", now);
    let running = core.submit(config(1, 0)).id;
    let b = join(&mut core, "b", now);
    // A pair waits for two idle workers; a held worker goes to it, not to an urgent single job.
    let pair = core.submit(config(2, 0)).id;
    core.apply(vec![Action::Hold {
        job: pair.clone(),
        workers: vec![b.clone()],
        until: now + Duration::from_secs(10),
    }]);
    let urgent = core.submit(config(1, 5)).id;
    assert_eq!(core.job(&urgent).unwrap().state, State::Queued);
    assert!(beat(&mut core, &b, now).assignment.is_none());
    // Once the hold lapses, the urgent job takes the worker.
    let later = now + Duration::from_secs(11);
    beat(&mut core, &a, later);
    beat(&mut core, &b, later);
    core.tick(later);
    assert_eq!(core.job(&urgent).unwrap().attempts[0].workers, vec![b.clone()]);

    // Checkpoint and stop: the gang is told to stop, the job re-queued without a restart.
    core.apply(vec![Action::CheckpointAndStop {
        job: running.clone(),
        reason: "making room".into(),
    }]);
    let job = core.job(&running).unwrap();
    assert_eq!(job.state, State::Queued);
    assert!(job.attempts[0].preempted);
    assert_eq!(job.attempts[0].reason, "making room");
    assert_eq!(core.telemetry().preemptions.get(), 1);
    let stop = core.heartbeat(
        &pb::HeartbeatRequest {
            worker_id: a.clone(),
            running: Some(pb::RunningWork {
                job_id: running.clone(),
                attempt: 1,
                rank: 0,
                step: 3,
            }),
            leaving: false,
        },
        later,
    );
    assert_eq!(stop.stop_job_ids, vec![running.clone()]);

    // Over a quota: the job keeps waiting with the reason, written once.
    let over = Action::Wait {
        job: pair.clone(),
        cause: WaitCause::OverQuota {
            reason: "over the team's quota of 4 workers".into(),
        },
    };
    core.apply(vec![over.clone()]);
    let version = core.job(&pair).unwrap().version;
    assert_eq!(core.job(&pair).unwrap().reason, "over the team's quota of 4 workers");
    core.apply(vec![over]);
    assert_eq!(core.job(&pair).unwrap().version, version);
    // Refused: it fails with the reason, counted as ended.
    core.apply(vec![Action::Refuse {
        job: pair.clone(),
        reason: "refused: more workers than the team's quota".into(),
    }]);
    let job = core.job(&pair).unwrap();
    assert_eq!(job.state, State::Failed);
    assert_eq!(job.reason, "refused: more workers than the team's quota");
    assert_eq!(core.telemetry().ended(State::Failed), 1);
}

/// A job record exactly as coordinators wrote it before records carried a format version.
const RECORD_BEFORE_FORMAT: &str = include_str!("testdata/record-before-format.json");

#[test]
fn a_record_written_before_the_format_version_still_loads() {
    let record: JobRecord = serde_json::from_str(RECORD_BEFORE_FORMAT).unwrap();
    assert_eq!(record.format, 0);
    assert_eq!(
        (record.id.as_str(), record.seq, record.state),
        ("job-000001", 1, State::Running)
    );
    assert_eq!(record.attempts.len(), 1);
    assert_eq!(record.attempts[0].workers, vec!["w-0a1b2c3d".to_string()]);
    assert_eq!(record.attempts[0].secret.len(), 64);
    assert_eq!(record.config.job.workers, 1);
    assert_eq!(
        record.checkpoint,
        Some((40, "memory://o/checkpoints/step-0000040".to_string()))
    );
    assert_eq!(record.memory_bytes, 3 << 30);
    // A core recovers it, and writes it back in the current format at its next change.
    let (core, now) = core();
    let mut core = Core::recover(core.timing(), vec![record], now);
    core.cancel("job-000001", "").unwrap();
    let json = serde_json::to_value(core.job("job-000001").unwrap()).unwrap();
    assert_eq!(json["format"], RECORD_FORMAT);
    assert_eq!(json["state"], "CANCELLED");
}
