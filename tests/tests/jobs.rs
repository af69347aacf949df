//! The coordinator and workers as real processes on loopback: submission, queueing, cancel,
//! coordinator restarts, lost workers, tokens, bad specs and TLS. The Python client has its own
//! test binary (`python_client.rs`).

use std::process::Command;
use std::time::Duration;

use gantry_proto::pb;
use gantry_proto::pb::job_event::Event;

use crate::cluster::*;
use crate::observability::{scrape, worker_metrics_url};
use crate::util::*;

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn submit_watch_and_find_the_checkpoints_in_storage() {
    serial(async {
        let scratch = Scratch::new();
        // With the test S3 server up, the job store and the job's output live there.
        let (state, output) = match std::env::var("GANTRY_TEST_S3") {
            Ok(bucket) => {
                let unique = format!("coordinator-{}-{}", std::process::id(), rand_suffix());
                (format!("{bucket}/{unique}/state"), format!("{bucket}/{unique}/run"))
            }
            Err(_) => {
                assert!(
                    std::env::var("GANTRY_REQUIRE_S3").is_err(),
                    "GANTRY_REQUIRE_S3 is set but GANTRY_TEST_S3 is not: tests/run.sh starts the S3 server"
                );
                eprintln!(
                    "GANTRY_TEST_S3 is not set: the job store and the output are local folders, not an S3 API (tests/run.sh sets it)"
                );
                (
                    scratch.path("state").display().to_string(),
                    scratch.path("run").display().to_string(),
                )
            }
        };
        let coord = coordinator(&scratch, &state, "127.0.0.1:0", &[]);
        let _worker = worker(&scratch, &coord.addr, "w1");
        let file = scratch.job_file("first", 12, 5, "");
        let job = std::fs::read_to_string(&file)
            .unwrap()
            .replace(&scratch.path("runs/first").display().to_string(), &output);
        std::fs::write(&file, job).unwrap();

        let out = scratch.cli(&coord.addr, &["submit", file.to_str().unwrap(), "--wait"]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}\n{stderr}\n{}", scratch.log("w1.log"));
        let id = stdout.lines().next().unwrap().to_string();
        assert_eq!(id, "job-000001");
        for needle in [
            "RUNNING",
            "step 12 ",
            &format!("checkpoint step 5 {output}/checkpoints/step-0000005"),
            &format!("checkpoint step 10 {output}/checkpoints/step-0000010"),
            &format!("checkpoint step 12 {output}/checkpoints/step-0000012"),
            "SUCCEEDED: trained to step 12",
        ] {
            assert!(stdout.contains(needle), "{needle:?} missing from\n{stdout}");
        }

        // The latest checkpoint in storage is complete: the generator loads from it.
        let images = scratch.path("generated");
        ok(run(
            "worker",
            &[
                "generate",
                "--checkpoint",
                &output,
                "--count",
                "2",
                "--out",
                images.to_str().unwrap(),
                "--device",
                "cpu",
            ],
        ));
        for file in [
            "Blond_Hair/0.png",
            "Blond_Hair/1.png",
            "not_Blond_Hair/0.png",
            "not_Blond_Hair/1.png",
        ] {
            assert!(images.join(file).is_file(), "{file} was not generated");
        }

        let status = ok(scratch.cli(&coord.addr, &["status", &id]));
        assert!(status.contains("state:      SUCCEEDED"), "{status}");
        assert!(status.contains("checkpoint: step 12"), "{status}");
        assert!(status.contains("attempt 1:  on w-"), "{status}");
        let list = ok(scratch.cli(&coord.addr, &["list", "--state", "succeeded"]));
        assert!(
            list.contains("job-000001   SUCCEEDED        1     12/12  first"),
            "{list}"
        );
    });
}

#[test]
fn two_jobs_queue_behind_one_worker_and_run_in_order() {
    serial(async {
        let scratch = Scratch::new();
        let coord = coordinator(&scratch, scratch.path("state").to_str().unwrap(), "127.0.0.1:0", &[]);
        let mut client = jobs(&coord.addr, JOB_TOKEN);
        let mut ids = Vec::new();
        for name in ["a", "b"] {
            let file = scratch.job_file(name, 6, 0, "");
            ids.push(
                ok(scratch.cli(&coord.addr, &["submit", file.to_str().unwrap()]))
                    .trim()
                    .to_string(),
            );
        }
        for id in &ids {
            let job = get(&mut client, id).await;
            assert_eq!(job.state(), pb::JobState::Queued);
            assert_eq!(job.reason, "waiting: needs 1 workers, 0 registered");
        }

        let _worker = worker(&scratch, &coord.addr, "w1");
        let second = watch_until(
            &mut client,
            &ids[1],
            LIMIT,
            |e| matches!(e, Event::Job(j) if j.reason.starts_with("waiting for 1 idle workers")),
        )
        .await;
        assert_eq!(second.state(), pb::JobState::Queued);
        let first = watch_to_end(&mut client, &ids[0], LIMIT).await;
        let second = watch_to_end(&mut client, &ids[1], LIMIT).await;
        assert_eq!(first.state(), pb::JobState::Succeeded, "{}", first.reason);
        assert_eq!(second.state(), pb::JobState::Succeeded, "{}", second.reason);
        // One worker: the second job started only after the first ended.
        assert!(
            first.finished_ms <= second.attempts[0].started_ms,
            "{} > {}",
            first.finished_ms,
            second.attempts[0].started_ms
        );
        assert_eq!(first.attempts[0].workers, second.attempts[0].workers);
    });
}

/// Submits a job file; its id.
fn submit(scratch: &Scratch, coordinator: &str, file: &std::path::Path) -> String {
    ok(scratch.cli(coordinator, &["submit", file.to_str().unwrap()]))
        .trim()
        .to_string()
}

/// A job restarted once after a loss at step `killed_at`: its second attempt resumed from that
/// checkpoint or later, its last step is committed, and `metrics.jsonl` holds each step once.
fn assert_resumed_once(scratch: &Scratch, job: &pb::Job, name: &str, steps: u64, killed_at: u64) {
    assert_eq!(job.attempts.len(), 2);
    assert!(
        job.attempts[1].resumed_from >= killed_at,
        "resumed from {} but step {killed_at} was committed",
        job.attempts[1].resumed_from
    );
    assert!(committed(&scratch.path(&format!("runs/{name}")), steps));
    assert_eq!(metric_steps(scratch, name), (1..=steps).collect::<Vec<_>>());
}

/// Steps of `runs/<name>/metrics.jsonl`, in file order.
fn metric_steps(scratch: &Scratch, name: &str) -> Vec<u64> {
    std::fs::read_to_string(scratch.path(&format!("runs/{name}/metrics.jsonl")))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn a_gang_of_two_is_placed_together_and_trains_one_model() {
    serial(async {
        let scratch = Scratch::new();
        let coord = coordinator(&scratch, scratch.path("state").to_str().unwrap(), "127.0.0.1:0", &[]);
        let mut client = jobs(&coord.addr, JOB_TOKEN);
        let metrics = ["--metrics-listen", "127.0.0.1:0"];
        let _w1 = worker_with(&scratch, &coord.addr, "w1", &metrics);
        let file = scratch.job_file("pair", 30, 10, "workers = 2\n");
        let id = submit(&scratch, &coord.addr, &file);
        let waiting = watch_until(
            &mut client,
            &id,
            LIMIT,
            |e| matches!(e, Event::Job(j) if j.reason == "waiting: needs 2 workers, 1 registered"),
        )
        .await;
        assert_eq!(waiting.state(), pb::JobState::Queued);
        let _w2 = worker_with(&scratch, &coord.addr, "w2", &metrics);
        let job = watch_to_end(&mut client, &id, LIMIT).await;
        assert_eq!(
            job.state(),
            pb::JobState::Succeeded,
            "{}\n{}\n{}",
            job.reason,
            scratch.log("w1.log"),
            scratch.log("w2.log")
        );
        assert_eq!(job.attempts.len(), 1);
        assert_eq!(job.attempts[0].workers.len(), 2);
        assert!(committed(&scratch.path("runs/pair"), 30));
        assert_eq!(metric_steps(&scratch, "pair"), (1..=30).collect::<Vec<_>>());
        // Each agent ran its rank in a child process to the end; rank 0 alone wrote the
        // checkpoints (steps 10, 20 and 30), as each agent's metrics count them.
        let scrapes = ["w1.log", "w2.log"].map(|log| scrape(&worker_metrics_url(&scratch, log), None));
        for s in &scrapes {
            assert_eq!(s.value("gantry_worker_runs_started_total", &[]), Some(1.0));
            assert_eq!(
                s.value("gantry_worker_runs_total", &[("outcome", "finished")]),
                Some(1.0)
            );
        }
        let writers: Vec<_> = scrapes
            .iter()
            .filter_map(|s| s.value("gantry_worker_checkpoints_total", &[]).map(|n| (s, n)))
            .collect();
        assert_eq!(writers.len(), 1, "checkpoints counted by {} agents", writers.len());
        let rank_0 = [("job", id.as_str()), ("attempt", "1"), ("rank", "0")];
        assert_eq!(
            writers[0].0.value("gantry_worker_checkpoints_total", &rank_0),
            Some(3.0)
        );
    });
}

#[test]
fn a_killed_agent_takes_its_rank_along_and_the_gang_restarts_from_the_checkpoint() {
    serial(async {
        let scratch = Scratch::new();
        let coord = coordinator(
            &scratch,
            scratch.path("state").to_str().unwrap(),
            "127.0.0.1:0",
            &["--heartbeat-timeout", "2.5"],
        );
        let mut client = jobs(&coord.addr, JOB_TOKEN);
        let mut agents = vec![worker(&scratch, &coord.addr, "w1"), worker(&scratch, &coord.addr, "w2")];
        let file = scratch.job_file("gang", 150, 10, "workers = 2\nmax_restarts = 2\n");
        let id = submit(&scratch, &coord.addr, &file);
        let at = watch_until(
            &mut client,
            &id,
            LIMIT,
            |e| matches!(e, Event::Checkpoint(c) if c.step >= 10),
        )
        .await;
        // The third worker joins now, idle: the restarted gang needs it.
        agents.push(worker(&scratch, &coord.addr, "w3"));
        let victim = &mut agents[0];
        let pid = victim.child.id();
        let ranks = live_children(pid);
        assert_eq!(ranks.len(), 1, "agent w1 runs its rank in one child process: {ranks:?}");
        let killed = std::time::Instant::now();
        victim.child.kill().unwrap();
        victim.child.wait().unwrap();
        let killed_at = at.checkpoint.unwrap().step;
        // The rank dies with its agent.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !gone(ranks[0]) {
            assert!(
                std::time::Instant::now() < deadline,
                "rank process {} outlived its agent",
                ranks[0]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let requeued = watch_until(
            &mut client,
            &id,
            LIMIT,
            |e| matches!(e, Event::Job(j) if j.state() == pb::JobState::Queued),
        )
        .await;
        let failed_after = killed.elapsed();
        assert!(failed_after < Duration::from_secs_f64(2.5 + 5.0), "{failed_after:?}");
        assert_eq!(requeued.attempts.len().max(2), 2);

        let job = watch_to_end(&mut client, &id, LIMIT).await;
        assert_eq!(
            job.state(),
            pb::JobState::Succeeded,
            "{}\n{}\n{}",
            job.reason,
            scratch.log("w2.log"),
            scratch.log("w3.log")
        );
        assert_eq!(job.attempts.len(), 2);
        println!(
            "gang: rank gone with its agent; gang failed {failed_after:.1?} after the kill: {}",
            job.attempts[0].reason
        );
        assert!(!job.attempts[0].reason.is_empty());
        assert_eq!(job.attempts[1].workers.len(), 2);
        assert_ne!(job.attempts[0].workers, job.attempts[1].workers);
        assert_resumed_once(&scratch, &job, "gang", 150, killed_at);
    });
}

#[test]
fn sigterm_to_an_agent_saves_its_gang_and_the_job_resumes_without_using_a_restart() {
    serial(async {
        let scratch = Scratch::new();
        let coord = coordinator(
            &scratch,
            scratch.path("state").to_str().unwrap(),
            "127.0.0.1:0",
            &["--heartbeat-timeout", "5"],
        );
        let mut client = jobs(&coord.addr, JOB_TOKEN);
        let mut agents = vec![worker(&scratch, &coord.addr, "p1"), worker(&scratch, &coord.addr, "p2")];
        // No checkpoint before the end but the one the preemption writes, and no restart allowed:
        // only a preemption that saves and does not count lets this job succeed.
        let steps = 120;
        let file = scratch.job_file("preempt", steps, 0, "workers = 2\nmax_restarts = 0\n");
        let id = submit(&scratch, &coord.addr, &file);
        watch_until(
            &mut client,
            &id,
            LIMIT,
            |e| matches!(e, Event::Metrics(m) if m.step >= 15),
        )
        .await;
        agents.push(worker(&scratch, &coord.addr, "p3"));
        let victim = &mut agents[1];
        let pid = victim.child.id();
        let ranks = live_children(pid);
        assert_eq!(ranks.len(), 1, "agent p2 runs its rank in one child process: {ranks:?}");
        ok(run_with(Command::new("kill").args(["-TERM", &pid.to_string()])));

        // The agent saves, reports and leaves on its own, well within its grace period.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = victim.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "agent p2 did not exit after SIGTERM:\n{}",
                scratch.log("p2.log")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            status.success(),
            "agent p2 after SIGTERM: {status}\n{}",
            scratch.log("p2.log")
        );
        assert!(gone(ranks[0]), "the rank process outlived its agent");

        let job = watch_to_end(&mut client, &id, LIMIT).await;
        assert_eq!(
            job.state(),
            pb::JobState::Succeeded,
            "{}\n{}\n{}",
            job.reason,
            scratch.log("p1.log"),
            scratch.log("p3.log")
        );
        assert_eq!(job.attempts.len(), 2);
        let first = &job.attempts[0];
        assert!(first.preempted, "{first:?}");
        assert!(first.reason.contains("preemption at step"), "{}", first.reason);
        let saved_at: u64 = first
            .reason
            .split("checkpoint at step ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no checkpoint step in {:?}", first.reason));
        assert!(saved_at >= 15 && saved_at < steps, "saved at {saved_at}");
        // The next gang started from exactly that checkpoint, the preempting worker no longer
        // in the pool, and each step is in the metrics once.
        assert_eq!(job.attempts[1].resumed_from, saved_at);
        let left: Vec<_> = first
            .workers
            .iter()
            .filter(|w| !job.attempts[1].workers.contains(w))
            .collect();
        assert_eq!(left.len(), 1, "{:?} then {:?}", first.workers, job.attempts[1].workers);
        assert!(!job.attempts[1].preempted);
        assert_resumed_once(&scratch, &job, "preempt", steps, saved_at);
        assert!(committed(&scratch.path("runs/preempt"), saved_at));
        println!(
            "preemption: agent exited {status} after SIGTERM; attempt 1: {}; attempt 2 resumed from step {saved_at}",
            first.reason
        );
    });
}

#[test]
fn a_killed_rank_process_is_reported_with_its_signal_and_its_agent_carries_on() {
    serial(async {
        let scratch = Scratch::new();
        let coord = coordinator(&scratch, scratch.path("state").to_str().unwrap(), "127.0.0.1:0", &[]);
        let mut client = jobs(&coord.addr, JOB_TOKEN);
        let mut agent = worker(&scratch, &coord.addr, "w1");
        let file = scratch.job_file("oom", 150, 10, "");
        let id = submit(&scratch, &coord.addr, &file);
        let at = watch_until(
            &mut client,
            &id,
            LIMIT,
            |e| matches!(e, Event::Checkpoint(c) if c.step >= 10),
        )
        .await;
        // What the out-of-memory killer does to a rank.
        let ranks = live_children(agent.child.id());
        assert_eq!(ranks.len(), 1, "{ranks:?}");
        ok(Command::new("kill")
            .args(["-9", &ranks[0].to_string()])
            .output()
            .unwrap());
        let job = watch_to_end(&mut client, &id, LIMIT).await;
        assert_eq!(
            job.state(),
            pb::JobState::Succeeded,
            "{}\n{}",
            job.reason,
            scratch.log("w1.log")
        );
        assert_resumed_once(&scratch, &job, "oom", 150, at.checkpoint.unwrap().step);
        let reason = &job.attempts[0].reason;
        assert!(
            reason.contains("the training process was killed by signal 9 (SIGKILL"),
            "{reason}"
        );
        // The same agent ran the restart: it outlived its rank.
        assert_eq!(job.attempts[0].workers, job.attempts[1].workers);
        assert!(
            agent.child.try_wait().unwrap().is_none(),
            "the agent died with its rank"
        );
        assert_eq!(metric_steps(&scratch, "oom"), (1..=150).collect::<Vec<_>>());
    });
}

#[test]
fn a_job_no_worker_can_hold_is_refused_at_submit_and_an_allocation_failure_fails_its_job() {
    serial(async {
        let scratch = Scratch::new();
        let coord = coordinator(&scratch, scratch.path("state").to_str().unwrap(), "127.0.0.1:0", &[]);
        let mut client = jobs(&coord.addr, JOB_TOKEN);
        // The agent and its ranks live under an address-space limit that leaves libtorch room to
        // load but not much more; it offers 3 GiB a rank.
        let log = std::fs::File::create(scratch.path("w1.log")).unwrap();
        let _agent = Process {
            child: Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "ulimit -v 3000000; exec '{}' serve --coordinator {} --device cpu --memory-limit 3GiB \
                     --token-file '{}' --advertise 127.0.0.1:{}",
                    bin("worker").display(),
                    coord.addr,
                    scratch.path("worker.token").display(),
                    free_port()
                ))
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        };
        // A small job proves the worker has registered (and that it trains under the limit).
        let first = submit(&scratch, &coord.addr, &scratch.job_file("small", 3, 0, ""));
        let job = watch_to_end(&mut client, &first, LIMIT).await;
        assert_eq!(
            job.state(),
            pb::JobState::Succeeded,
            "{}\n{}",
            job.reason,
            scratch.log("w1.log")
        );

        // Too large for every registered worker: refused at the door with the figures.
        let huge = scratch.job_file("huge", 3, 0, "");
        let spec = std::fs::read_to_string(&huge)
            .unwrap()
            .replace("width = 8", "width = 6000");
        std::fs::write(&huge, spec).unwrap();
        let refused = scratch.cli(&coord.addr, &["submit", huge.to_str().unwrap()]);
        let (_, stderr) = crate::util::text(&refused);
        assert!(!refused.status.success());
        assert!(
            stderr.contains("model.width 6000, model.image_size 32 and train.batch_size 8 (8 per rank) need about"),
            "{stderr}"
        );
        assert!(stderr.contains("per rank; the largest worker has 3.0 GiB"), "{stderr}");

        // Within the offered 3 GiB by the estimate (2.2 GiB) but not within the address space: the allocation fails, the job
        // FAILS with libtorch's figure at once (a restart would meet the same limit), and the
        // agent lives on to run the next job.
        let wide = scratch.job_file("wide", 3, 0, "");
        let spec = std::fs::read_to_string(&wide)
            .unwrap()
            .replace("width = 8", "width = 1024");
        std::fs::write(&wide, spec).unwrap();
        let id = submit(&scratch, &coord.addr, &wide);
        let job = watch_to_end(&mut client, &id, LIMIT).await;
        assert_eq!(job.state(), pb::JobState::Failed, "{}", job.reason);
        assert_eq!(job.attempts.len(), 1, "not retried: {}", job.reason);
        assert!(
            job.reason.contains(
                "building the model failed: DefaultCPUAllocator: can't allocate memory: you tried to allocate"
            ),
            "{}",
            job.reason
        );
        let next = submit(&scratch, &coord.addr, &scratch.job_file("next", 3, 0, ""));
        let job = watch_to_end(&mut client, &next, LIMIT).await;
        assert_eq!(
            job.state(),
            pb::JobState::Succeeded,
            "{}\n{}",
            job.reason,
            scratch.log("w1.log")
        );
    });
}

#[test]
fn cancel_a_queued_and_a_running_job() {
    serial(async {
        let scratch = Scratch::new();
        let coord = coordinator(&scratch, scratch.path("state").to_str().unwrap(), "127.0.0.1:0", &[]);
        let mut client = jobs(&coord.addr, JOB_TOKEN);
        let _worker = worker_with(&scratch, &coord.addr, "w1", &["--metrics-listen", "127.0.0.1:0"]);
        let long = scratch.job_file("long", 1_000_000, 0, "");
        let long = ok(scratch.cli(&coord.addr, &["submit", long.to_str().unwrap()]))
            .trim()
            .to_string();
        watch_until(
            &mut client,
            &long,
            LIMIT,
            |e| matches!(e, Event::Metrics(m) if m.step >= 2),
        )
        .await;
        let queued = scratch.job_file("queued", 5, 0, "");
        let queued = ok(scratch.cli(&coord.addr, &["submit", queued.to_str().unwrap()]))
            .trim()
            .to_string();
        assert_eq!(get(&mut client, &queued).await.state(), pb::JobState::Queued);

        let out = ok(scratch.cli(&coord.addr, &["cancel", &queued, "--reason", "changed my mind"]));
        assert!(out.contains("CANCELLED: cancelled: changed my mind"), "{out}");
        let out = ok(scratch.cli(&coord.addr, &["cancel", &long]));
        assert!(out.contains(&format!("{long} CANCELLED")), "{out}");
        let again = scratch.cli(&coord.addr, &["cancel", &long]);
        assert!(!again.status.success());
        assert!(text(&again).1.contains("is CANCELLED"), "{:?}", text(&again));

        // The worker stopped the cancelled run and is free for the next job.
        let next = scratch.job_file("next", 4, 0, "");
        let out = scratch.cli(&coord.addr, &["submit", next.to_str().unwrap(), "--wait"]);
        assert!(out.status.success(), "{:?}\n{}", text(&out), scratch.log("w1.log"));
        let long = get(&mut client, &long).await;
        let steps = long.metrics.map_or(0, |m| m.step);
        assert!(steps < 1_000_000 && long.attempts[0].ended_ms > 0);
        let worker = scrape(&worker_metrics_url(&scratch, "w1.log"), None);
        assert_eq!(worker.value("gantry_worker_stops_ordered_total", &[]), Some(1.0));
        assert_eq!(
            worker.value("gantry_worker_runs_total", &[("outcome", "stopped")]),
            Some(1.0)
        );
    });
}

#[test]
fn a_restarted_coordinator_keeps_its_queue_and_its_running_job() {
    serial(async {
        let scratch = Scratch::new();
        let state = scratch.path("state").display().to_string();
        let coord = coordinator(&scratch, &state, "127.0.0.1:0", &["--heartbeat-timeout", "3"]);
        let addr = coord.addr.clone();
        let mut ids = Vec::new();
        for (name, extra) in [("first", ""), ("second", "priority = 5\n"), ("third", "")] {
            let file = scratch.job_file(name, 60, 5, extra);
            ids.push(
                ok(scratch.cli(&addr, &["submit", file.to_str().unwrap()]))
                    .trim()
                    .to_string(),
            );
        }
        // SIGKILL: no chance to flush anything on the way out.
        drop(coord);
        let coord = coordinator(&scratch, &state, &addr, &["--heartbeat-timeout", "3"]);
        let list = ok(scratch.cli(&coord.addr, &["list"]));
        for id in &ids {
            assert!(list.contains(&format!("{id}   QUEUED")), "{list}");
        }

        // A worker takes the highest priority job; the coordinator dies mid-run and comes back on
        // the same address; the worker re-registers and the job finishes in its first attempt.
        let _worker = worker(&scratch, &coord.addr, "w1");
        let mut client = jobs(&coord.addr, JOB_TOKEN);
        watch_until(
            &mut client,
            &ids[1],
            LIMIT,
            |e| matches!(e, Event::Checkpoint(c) if c.step >= 5),
        )
        .await;
        drop(coord);
        let metrics = ["--heartbeat-timeout", "3", "--metrics-listen", "127.0.0.1:0"];
        let coord = coordinator(&scratch, &state, &addr, &metrics);
        let mut client = jobs(&coord.addr, JOB_TOKEN);
        let second = watch_to_end(&mut client, &ids[1], LIMIT).await;
        assert_eq!(second.state(), pb::JobState::Succeeded, "{}", second.reason);
        assert_eq!(second.attempts.len(), 1, "{:?}", second.attempts);
        let scraped = scrape(coord.metrics.as_deref().unwrap(), None);
        assert_eq!(scraped.value("gantry_workers_reattached_total", &[]), Some(1.0));
        for id in [&ids[0], &ids[2]] {
            let job = watch_to_end(&mut client, id, LIMIT).await;
            assert_eq!(job.state(), pb::JobState::Succeeded, "{}", job.reason);
        }
    });
}

#[test]
fn a_killed_worker_fails_its_gang_and_the_job_resumes_from_its_checkpoint() {
    serial(async {
        let scratch = Scratch::new();
        let coord = coordinator(
            &scratch,
            scratch.path("state").to_str().unwrap(),
            "127.0.0.1:0",
            &["--heartbeat-timeout", "2.5"],
        );
        let mut client = jobs(&coord.addr, JOB_TOKEN);
        let mut first = worker(&scratch, &coord.addr, "w1");
        let file = scratch.job_file("resumed", 80, 5, "");
        let id = submit(&scratch, &coord.addr, &file);
        let at = watch_until(
            &mut client,
            &id,
            LIMIT,
            |e| matches!(e, Event::Checkpoint(c) if c.step >= 5),
        )
        .await;
        first.child.kill().unwrap();
        first.child.wait().unwrap();
        let killed_at = at.checkpoint.unwrap().step;

        let requeued = watch_until(
            &mut client,
            &id,
            LIMIT,
            |e| matches!(e, Event::Job(j) if j.state() == pb::JobState::Queued),
        )
        .await;
        assert!(requeued.reason.contains("restart 1 of 2"), "{}", requeued.reason);
        assert!(requeued.reason.contains("missed heartbeats"), "{}", requeued.reason);

        let _second = worker(&scratch, &coord.addr, "w2");
        let job = watch_to_end(&mut client, &id, LIMIT).await;
        assert_eq!(
            job.state(),
            pb::JobState::Succeeded,
            "{}\n{}",
            job.reason,
            scratch.log("w2.log")
        );
        assert_eq!(job.attempts.len(), 2);
        assert!(
            job.attempts[0].reason.contains("missed heartbeats"),
            "{:?}",
            job.attempts[0]
        );
        assert_ne!(job.attempts[0].workers, job.attempts[1].workers);
        assert_resumed_once(&scratch, &job, "resumed", 80, killed_at);
    });
}

#[test]
fn wrong_tokens_and_bad_specs_are_rejected_and_change_nothing() {
    serial(async {
        let scratch = Scratch::new();
        let coord = coordinator(&scratch, scratch.path("state").to_str().unwrap(), "127.0.0.1:0", &[]);
        let good = scratch.job_file("good", 5, 0, "");
        let spec = pb::JobSpec::from(&gantry_job::JobConfig::from_file(&good).unwrap());
        let submit = |spec: pb::JobSpec| pb::SubmitJobRequest { spec: Some(spec) };

        for token in ["wrong", WORKER_TOKEN] {
            let mut client = jobs(&coord.addr, token);
            let status = client.submit_job(submit(spec.clone())).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
            let status = client.list_jobs(pb::ListJobsRequest::default()).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
        }
        let channel = gantry_proto::client::channel(&coord.addr, None).unwrap();
        let mut anonymous = pb::job_service_client::JobServiceClient::new(channel.clone());
        let status = anonymous.submit_job(submit(spec.clone())).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        // The worker API wants the worker token, not the job token.
        let job_token = gantry_proto::auth::Token::new(JOB_TOKEN, "test").unwrap();
        let mut as_worker =
            pb::worker_service_client::WorkerServiceClient::with_interceptor(channel.clone(), job_token);
        let status = as_worker.register(pb::RegisterRequest::default()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let out = run_with(
            Command::new(bin("coordinator"))
                .args(["list", "--coordinator", &coord.addr, "--token-file"])
                .arg(scratch.path("worker.token")),
        );
        assert!(!out.status.success());
        assert!(text(&out).1.contains("Unauthenticated") || text(&out).1.contains("wrong token"));

        // A worker with the job token is refused and exits, saying why.
        let out = run_with(
            Command::new(bin("worker"))
                .args(["serve", "--coordinator", &coord.addr, "--device", "cpu", "--token-file"])
                .arg(scratch.path("job.token")),
        );
        assert!(!out.status.success());
        assert!(text(&out).1.contains("refused the worker"), "{:?}", text(&out));

        // Every problem of a spec at once, each naming its field.
        let mut client = jobs(&coord.addr, JOB_TOKEN);
        let mut bad = spec.clone();
        bad.data.as_mut().unwrap().condition = Some("Blond".into());
        bad.model.as_mut().unwrap().image_size = Some(64);
        bad.train.as_mut().unwrap().batch_size = Some(9);
        bad.job.as_mut().unwrap().workers = Some(2);
        bad.train.as_mut().unwrap().lr = Some(-1.0);
        let status = client.submit_job(submit(bad)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        for needle in [
            "data.condition: ",
            "Blond",
            "model.image_size is 64 but the dataset",
            "train.batch_size is 9 but job.workers is 2",
            "train.lr is -1",
        ] {
            assert!(
                status.message().contains(needle),
                "{needle:?} missing from {}",
                status.message()
            );
        }
        let mut bad = spec.clone();
        bad.job.as_mut().unwrap().workers = Some(0);
        bad.data.as_mut().unwrap().url = scratch.path("nowhere").display().to_string();
        let status = client.submit_job(submit(bad)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        for needle in ["job.workers is 0", "data.url: cannot open the dataset", "nowhere"] {
            assert!(
                status.message().contains(needle),
                "{needle:?} missing from {}",
                status.message()
            );
        }
        let status = client
            .submit_job(pb::SubmitJobRequest { spec: None })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let status = client
            .get_job(pb::GetJobRequest { id: "job-999".into() })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);

        // Nothing was queued and nothing was written.
        let listed = client
            .list_jobs(pb::ListJobsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(listed.jobs.is_empty(), "{:?}", listed.jobs);
        assert!(
            !scratch.path("state/jobs").exists() || std::fs::read_dir(scratch.path("state/jobs")).unwrap().count() == 0
        );

        // Health and reflection answer without a token.
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let serving = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "gantry.v1.JobService".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            serving.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving
        );
        let services = reflected_services(channel).await;
        for name in [
            "gantry.v1.JobService",
            "gantry.v1.WorkerService",
            "grpc.health.v1.Health",
        ] {
            assert!(services.iter().any(|s| s == name), "{name} not in {services:?}");
        }

        // Two jobs on one output while the first has not ended: the second is refused, naming
        // the first (no worker here, so it stays queued).
        let first = client
            .submit_job(submit(spec.clone()))
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap();
        let mut again = spec.clone();
        again.output.as_mut().unwrap().url = format!("{}/", spec.output.as_ref().unwrap().url);
        let status = client.submit_job(submit(again.clone())).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
        assert!(
            status.message().contains(&first.id) && status.message().contains("QUEUED"),
            "{}",
            status.message()
        );
        // Once it has ended, the output is free again (a new job resumes its checkpoints).
        client
            .cancel_job(pb::CancelJobRequest {
                id: first.id.clone(),
                reason: String::new(),
            })
            .await
            .unwrap();
        client.submit_job(submit(again)).await.unwrap();

        // The coordinator keeps the datasets it has checked, by manifest version: repacked at
        // 64x64 in place, the dataset is read again and the 32x32 job refused.
        ok(run(
            "dataprep",
            &[
                "pack",
                "celeba",
                "--input",
                scratch.path("celeba").to_str().unwrap(),
                "--output",
                &scratch.data(),
                "--size",
                "64",
                "--force",
            ],
        ));
        let mut other = spec.clone();
        other.output.as_mut().unwrap().url = scratch.path("runs/after-repack").display().to_string();
        let status = client.submit_job(submit(other)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("model.image_size is 32 but the dataset"),
            "{}",
            status.message()
        );
    });
}

/// The services a server lists through gRPC reflection.
async fn reflected_services(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut client = ServerReflectionClient::new(channel);
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    match response.message_response.unwrap() {
        MessageResponse::ListServicesResponse(list) => list.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[test]
fn tls_with_the_coordinators_certificate() {
    serial(async {
        let scratch = Scratch::new();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        std::fs::write(scratch.path("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(scratch.path("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        let coord = coordinator(
            &scratch,
            scratch.path("state").to_str().unwrap(),
            "127.0.0.1:0",
            &[
                "--tls-cert",
                scratch.path("cert.pem").to_str().unwrap(),
                "--tls-key",
                scratch.path("key.pem").to_str().unwrap(),
            ],
        );
        let https = format!("https://{}", coord.addr);
        let ca = scratch.path("cert.pem");

        let plain = scratch.cli(&coord.addr, &["list"]);
        assert!(!plain.status.success(), "plain HTTP/2 reached a TLS server");
        let unknown_ca = scratch.cli(&https, &["list"]);
        assert!(
            !unknown_ca.status.success(),
            "a certificate from an unknown CA was accepted"
        );

        let log = std::fs::File::create(scratch.path("w1.log")).unwrap();
        let _worker = Process {
            child: Command::new(bin("worker"))
                .args(["serve", "--coordinator", &https, "--device", "cpu", "--tls-ca"])
                .arg(&ca)
                .arg("--token-file")
                .arg(scratch.path("worker.token"))
                .stderr(log)
                .spawn()
                .unwrap(),
        };
        let file = scratch.job_file("tls", 3, 0, "");
        let out = run_with(
            Command::new(bin("coordinator"))
                .args([
                    "submit",
                    file.to_str().unwrap(),
                    "--wait",
                    "--coordinator",
                    &https,
                    "--tls-ca",
                ])
                .arg(&ca)
                .arg("--token-file")
                .arg(scratch.path("job.token")),
        );
        assert!(out.status.success(), "{:?}\n{}", text(&out), scratch.log("w1.log"));
        assert!(text(&out).0.contains("SUCCEEDED"));
    });
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
