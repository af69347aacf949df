//! The control plane under load and on a shared state: a small run of `coordinator bench`
//! (no live worker lost, no call failed, no acknowledged job missing after a `kill -9`), and two
//! coordinators started on one state prefix (one writer, the other waits; a stale one's late
//! writes are refused).

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::Duration;

use crate::cluster::*;
use crate::util::*;

#[test]
fn a_small_bench_run_loses_no_worker_and_no_record() {
    serial(async {
        let scratch = Scratch::new();
        let out = run(
            "coordinator",
            &[
                "bench",
                "--data",
                &scratch.data(),
                "--dir",
                scratch.path("bench").to_str().unwrap(),
                "--workers",
                "50",
                "--jobs",
                "200",
                "--seconds",
                "8",
                "--run-seconds",
                "2",
                // Heartbeats every 2.5 s, a worker lost after 10 s of silence: a margin that
                // holds while other tests load both cores.
                "--heartbeat-timeout",
                "10",
            ],
        );
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "{stdout}\n{stderr}\n{}",
            scratch.log("bench/coordinator.log")
        );
        for needle in [
            "submit:    200 jobs in",
            "errors:    heartbeats 0, reports 0, submissions 0",
            "false losses: 0 ",
            "0 acknowledged jobs missing or wrong",
        ] {
            assert!(stdout.contains(needle), "{needle:?} missing from\n{stdout}");
        }
        // Runs started and ended, and the restarted coordinator found every record.
        let ended: u64 = stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix("steady:")?
                    .split(", ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no steady line in\n{stdout}"));
        assert!(ended > 0, "{stdout}");
        let records: usize = stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix("restart after SIGKILL: ")?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no restart line in\n{stdout}"));
        assert!(records >= 200, "{stdout}");
    });
}

/// Starts `coordinator serve` on `state` with its log in `<name>.log`, not waiting for it.
fn spawn_coordinator(scratch: &Scratch, state: &str, name: &str, extra: &[&str]) -> Process {
    let log = std::fs::File::create(scratch.path(&format!("{name}.log"))).unwrap();
    let child = serve_command(scratch, state, "127.0.0.1:0", extra)
        .stderr(log)
        .spawn()
        .unwrap();
    Process { child }
}

/// Waits until `file` holds `needle`, up to `limit` (a deadline, not a pause).
fn wait_for_log(scratch: &Scratch, file: &str, needle: &str, limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    while !scratch.log(file).contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "{needle:?} never appeared in {file}:\n{}",
            scratch.log(file)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, signal: &str) {
    ok(Command::new("kill").args([signal, &pid.to_string()]).output().unwrap());
}

#[test]
fn two_coordinators_on_one_state_never_both_write() {
    serial(async {
        let scratch = Scratch::new();
        let state = scratch.path("state").display().to_string();
        let lease = ["--lease-ttl", "3"];
        let mut first = coordinator(&scratch, &state, "127.0.0.1:0", &lease);
        // One output per job: each submission gets a job file of its own.
        let submit = |addr: &str, name: &str| {
            let job = scratch.job_file(name, 3, 0, "");
            scratch.cli(addr, &["submit", job.to_str().unwrap()])
        };
        assert_eq!(ok(submit(&first.addr, "one")).trim(), "job-000001");

        // The second waits, saying who holds the lease; the first keeps serving and writing.
        let mut second = spawn_coordinator(&scratch, &state, "second", &lease);
        wait_for_log(
            &scratch,
            "second.log",
            "another coordinator holds this state's lease",
            Duration::from_secs(60),
        );
        assert!(scratch.log("second.log").contains(&format!("serving {}", first.addr)));
        assert_eq!(ok(submit(&first.addr, "two")).trim(), "job-000002");

        // The first stops answering (paused, as a hung process or a partitioned node would):
        // the second takes the lease once it sat still for its time to live, and serves.
        signal(first.pid(), "-STOP");
        let mut line = String::new();
        BufReader::new(second.child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let second_addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{line:?}\n{}", scratch.log("second.log")))
            .to_string();
        assert!(
            scratch.log("second.log").contains("lease taken"),
            "{}",
            scratch.log("second.log")
        );
        let listed = ok(scratch.cli(&second_addr, &["list"]));
        assert!(
            listed.contains("job-000001") && listed.contains("job-000002"),
            "{listed}"
        );

        // The first wakes up with a late write: refused, and it stops, saying why.
        signal(first.pid(), "-CONT");
        let late = submit(&first.addr, "late");
        assert!(
            !late.status.success(),
            "a stale coordinator accepted a job: {:?}",
            text(&late)
        );
        let status = first
            .exit_within(Duration::from_secs(60))
            .expect("the stale coordinator kept running");
        assert!(!status.success());
        let log = scratch.log("coordinator.log");
        assert!(log.contains("lost the lease on the job store (epoch 1)"), "{log}");
        // Only the jobs the holders accepted are stored; the new holder still writes.
        let mut stored: Vec<String> = std::fs::read_dir(scratch.path("state/jobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        stored.sort();
        assert_eq!(stored, vec!["job-000001.json", "job-000002.json"]);
        assert_eq!(ok(submit(&second_addr, "after")).trim(), "job-000003");
    });
}
