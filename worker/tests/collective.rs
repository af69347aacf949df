//! The gradient exchange between real processes on loopback: ranks are `worker collective-check`
//! processes (and, where a test inspects the error values, this test process itself as rank 0).
//! Every test starts rank 0 on port 0 and reads the port it bound before starting the others.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tch::{Device, Kind, Tensor};
use worker::collective::{Collective, Error, GroupSpec, Rendezvous};

/// Longest any step of a test may take before the test fails (a rank stuck for good).
const PATIENCE: Duration = Duration::from_secs(30);

/// A `worker collective-check` process.
struct Rank {
    name: String,
    pid: i32,
    lines: Receiver<String>,
    exit: Receiver<ExitStatus>,
    status: Option<ExitStatus>,
    stderr: Arc<Mutex<String>>,
}

impl Rank {
    /// Starts `worker collective-check` with `args`.
    fn start(name: &str, args: &[&str]) -> Rank {
        let mut child = Command::new(env!("CARGO_BIN_EXE_worker"))
            .arg("collective-check")
            .args(["--bind-host", "127.0.0.1"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start worker collective-check");
        let pid = child.id() as i32;
        let (line_tx, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        let (exit_tx, exit) = channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            *sink.lock().unwrap() = text;
            let _ = exit_tx.send(child.wait().expect("wait for rank"));
        });
        Rank {
            name: name.to_string(),
            pid,
            lines,
            exit,
            status: None,
            stderr,
        }
    }

    /// The next JSON event named `event` (earlier lines are skipped).
    fn event(&self, event: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
                    if value["event"] == event {
                        return value;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!("{}: no {event:?} event within {PATIENCE:?}", self.name),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.exit.recv_timeout(PATIENCE).ok();
                    panic!(
                        "{}: ended ({status:?}) before a {event:?} event; stderr: {}",
                        self.name,
                        self.stderr.lock().unwrap()
                    )
                }
            }
        }
    }

    /// Waits for the process to end; returns its status and stderr.
    fn finish(&mut self) -> (ExitStatus, String) {
        let status = match self.status {
            Some(status) => status,
            None => {
                let status = self
                    .exit
                    .recv_timeout(PATIENCE)
                    .unwrap_or_else(|_| panic!("{} still runs after {PATIENCE:?}", self.name));
                self.status = Some(status);
                status
            }
        };
        (status, self.stderr.lock().unwrap().clone())
    }

    /// Waits for a successful end and returns the `done` event.
    fn done(&mut self) -> Value {
        let done = self.event("done");
        let (status, stderr) = self.finish();
        assert!(status.success(), "{}: {status}; stderr: {stderr}", self.name);
        done
    }

    /// Waits for a failed end; returns stderr.
    fn failure(&mut self) -> String {
        let (status, stderr) = self.finish();
        assert!(!status.success(), "{} succeeded; stderr: {stderr}", self.name);
        stderr
    }

    fn kill(&mut self) {
        if self.status.is_none() {
            // SAFETY: plain syscall; the process is our child and not yet reaped (its waiting
            // thread has not reported), so the pid is still its own.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            }
            self.finish();
        }
    }
}

impl Drop for Rank {
    fn drop(&mut self) {
        if self.status.is_none() && self.exit.try_recv().is_err() {
            // SAFETY: as in `kill`.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            }
        }
    }
}

/// Arguments of rank `rank` of `world` at `address`.
fn rank_args(address: &str, rank: usize, world: usize, secret: &str, timeout_s: f64) -> Vec<String> {
    [
        "--address",
        address,
        "--rank",
        &rank.to_string(),
        "--world-size",
        &world.to_string(),
        "--secret",
        secret,
        "--timeout-s",
        &timeout_s.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn start_rank(rank: usize, args: &[String], extra: &[&str]) -> Rank {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    Rank::start(&format!("rank {rank}"), &all)
}

/// Starts rank 0 on a free port; returns it and the store's address.
fn start_rank_zero(world: usize, secret: &str, timeout_s: f64, extra: &[&str]) -> (Rank, String) {
    let rank0 = start_rank(0, &rank_args("127.0.0.1:0", 0, world, secret, timeout_s), extra);
    let port = rank0.event("store")["port"].as_u64().expect("port");
    (rank0, format!("127.0.0.1:{port}"))
}

/// A whole gang of `world` check processes; `faults[rank]` adds arguments to that rank.
fn gang(world: usize, timeout_s: f64, faults: &[(usize, &[&str])]) -> Vec<Rank> {
    let secret = "gang secret";
    let extra = |rank: usize| faults.iter().find(|(r, _)| *r == rank).map_or(&[][..], |(_, a)| *a);
    let (rank0, address) = start_rank_zero(world, secret, timeout_s, extra(0));
    let mut ranks = vec![rank0];
    for rank in 1..world {
        ranks.push(start_rank(
            rank,
            &rank_args(&address, rank, world, secret, timeout_s),
            extra(rank),
        ));
    }
    ranks
}

/// Every rank of a fault-free gang verifies its means and broadcasts exactly and ends with the
/// same tensors.
fn exact_exchange(world: usize) {
    let mut ranks = gang(world, 20.0, &[]);
    let done: Vec<Value> = ranks.iter_mut().map(Rank::done).collect();
    for (rank, event) in done.iter().enumerate() {
        assert_eq!(event["rank"], rank);
        assert_eq!(event["world_size"], world);
        assert_eq!(event["tensors_checked"], 13);
        assert_eq!(
            event["digest"], done[0]["digest"],
            "rank {rank} ends with other tensors than rank 0"
        );
    }
}

#[test]
fn two_ranks_average_and_broadcast_exactly() {
    exact_exchange(2);
}

#[test]
fn three_ranks_average_and_broadcast_exactly() {
    exact_exchange(3);
}

#[test]
fn processes_without_the_secret_or_of_another_attempt_cannot_join() {
    let secret = "attempt 4's secret";
    let (mut rank0, address) = start_rank_zero(2, secret, 20.0, &["--attempt", "4"]);
    let started = Instant::now();
    let intruders = [
        (
            "wrong secret",
            rank_args(&address, 1, 2, "a guess", 20.0),
            vec!["--attempt", "4"],
        ),
        (
            "earlier attempt",
            rank_args(&address, 1, 2, secret, 20.0),
            vec!["--attempt", "3"],
        ),
        (
            "second rank 0",
            rank_args(&address, 0, 2, secret, 20.0),
            vec!["--attempt", "4"],
        ),
    ];
    for (what, args, extra) in &intruders {
        let mut intruder = start_rank(1, args, extra);
        let stderr = intruder.failure();
        let expected = match *what {
            "wrong secret" => "rank 1 of attempt 4 of job \"collective-check\": its secret does not match the gang's",
            "earlier attempt" => "rank 1 of attempt 3 of job \"collective-check\": the rendezvous store at",
            _ => "rank 0: hosting the rendezvous store at",
        };
        assert!(stderr.contains(expected), "{what}: {stderr}");
    }
    // Refused at once, not after the 20 s timeout.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "intruders took {:?}",
        started.elapsed()
    );
    // The gang forms and exchanges as if nothing happened.
    let mut rank1 = start_rank(1, &rank_args(&address, 1, 2, secret, 20.0), &["--attempt", "4"]);
    let (a, b) = (rank0.done(), rank1.done());
    assert_eq!(a["digest"], b["digest"]);
}

#[test]
fn a_killed_peer_fails_the_other_rank_at_once_naming_its_address() {
    // Rank 0 is this process, to see the error values; rank 1 joins, then stops taking part.
    let mut spec = GroupSpec::new("127.0.0.1:0", 0, 2, "killed-peer", 0, "s", Device::Cpu);
    spec.bind_host = Some("127.0.0.1".into());
    spec.timeout = Duration::from_secs(30);
    let rendezvous = Rendezvous::new(&spec).unwrap();
    let address = format!("127.0.0.1:{}", rendezvous.port());
    let mut rank1 = Rank::start(
        "rank 1",
        &[
            "--address",
            &address,
            "--rank",
            "1",
            "--world-size",
            "2",
            "--job",
            "killed-peer",
            "--secret",
            "s",
            "--timeout-s",
            "30",
            "--fault",
            "hang-before-all-reduce",
        ],
    );
    let mut group = rendezvous.into_group().unwrap();
    assert_eq!((group.rank(), group.world_size(), group.backend()), (0, 2, "gloo"));
    rank1.event("hanging");
    rank1.kill();
    let killed = Instant::now();
    let grads = Tensor::ones([1000], (Kind::Float, Device::Cpu));
    let err = group.all_reduce_mean(&[&grads]).unwrap_err();
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "noticed after {:?}",
        killed.elapsed()
    );
    let Error::Collective {
        op,
        seq,
        backend,
        ref source,
        ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!((op, seq, backend), ("all-reduce", 0, "gloo"));
    assert!(source.0.contains("Connection closed by peer [127.0.0.1]:"), "{source}");
    // The group is unusable from now on, and says why.
    let again = group.all_reduce_mean(&[&grads]).unwrap_err();
    let text = again.to_string();
    assert!(matches!(again, Error::Broken { .. }), "{again:?}");
    assert!(
        text.contains("first failure: rank 0 of 2: all-reduce #0 over gloo failed"),
        "{text}"
    );
}

#[test]
fn a_hung_peer_fails_the_others_within_the_timeout() {
    let mut ranks = gang(3, 3.0, &[(2, &["--fault", "hang-before-all-reduce"])]);
    ranks[2].event("hanging");
    let hung = Instant::now();
    for rank in &mut ranks[..2] {
        let stderr = rank.failure();
        assert!(stderr.contains("all-reduce #0 over gloo failed"), "{stderr}");
        assert!(stderr.contains("Timed out waiting 3000ms"), "{stderr}");
    }
    assert!(
        hung.elapsed() < Duration::from_secs(3 + 8),
        "failed after {:?}",
        hung.elapsed()
    );
    ranks[2].kill();
}

#[test]
fn the_store_barrier_names_the_rank_that_did_not_arrive() {
    let mut ranks = gang(3, 2.0, &[(1, &["--fault", "hang-before-barrier"])]);
    ranks[1].event("hanging");
    for rank in [0, 2] {
        let stderr = ranks[rank].failure();
        assert!(
            stderr.contains(&format!("rank {rank}: rank(s) 1 did not reach barrier #0 within")),
            "rank {rank}: {stderr}"
        );
    }
    ranks[1].kill();
}

#[test]
fn nccl_without_a_cuda_device_is_a_clear_error() {
    let count = tch::Cuda::device_count();
    let device = count as usize; // one past the last device this process sees
    let spec = GroupSpec::new("127.0.0.1:0", 0, 1, "nccl", 0, "s", Device::Cuda(device));
    let err = Rendezvous::new(&spec)
        .unwrap()
        .into_group()
        .err()
        .expect("no group without a device");
    assert!(matches!(err, Error::NoCudaDevice { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("no CUDA device cuda:{device} for an NCCL group: libtorch sees {count} CUDA device(s)")
    );
}

#[test]
fn a_group_of_one_keeps_its_values_and_checks_its_inputs() {
    let mut spec = GroupSpec::new("127.0.0.1:0", 0, 1, "one", 0, "s", Device::Cpu);
    spec.bind_host = Some("127.0.0.1".into());
    let mut group = Rendezvous::new(&spec).unwrap().into_group().unwrap();
    let a = Tensor::from_slice(&[1.5f32, -2.0, 3.25]).view([3, 1]);
    let b = Tensor::from_slice(&[4.0f64, 5.0]);
    group.all_reduce_mean(&[&a, &b]).unwrap();
    group.broadcast(&[&a, &b], 0).unwrap();
    group.barrier(Duration::from_secs(5)).unwrap();
    assert_eq!(Vec::<f32>::try_from(a.view([-1])).unwrap(), [1.5, -2.0, 3.25]);
    assert_eq!(Vec::<f64>::try_from(&b).unwrap(), [4.0, 5.0]);
    let ints = Tensor::from_slice(&[1i64]);
    let err = group.all_reduce_mean(&[&ints]).unwrap_err();
    assert!(err.to_string().contains("a mean needs a floating kind"), "{err}");
    let err = group.broadcast(&[&a], 1).unwrap_err();
    assert!(err.to_string().contains("root 1 is outside a world of 1"), "{err}");
    // Refused inputs exchange nothing and leave the group usable.
    group.all_reduce_mean(&[&a]).unwrap();
}
