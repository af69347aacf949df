//! Helpers to run a coordinator and workers as real processes on loopback, and to talk to the
//! coordinator over gRPC.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use gantry_proto::auth::Token;
use gantry_proto::pb;
use gantry_proto::pb::job_service_client::JobServiceClient;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;

use crate::util::*;

pub(crate) const JOB_TOKEN: &str = "job-token-for-tests";
pub(crate) const WORKER_TOKEN: &str = "worker-token-for-tests";

/// Runs a cluster test on its own runtime, one at a time: they train on the CPU, and one at a
/// time keeps heartbeats on time on a small machine.
pub(crate) fn serial<F: std::future::Future>(test: F) -> F::Output {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test)
}

/// A scratch folder with token files, a small packed dataset and logs.
pub(crate) struct Scratch {
    pub(crate) dir: tempfile::TempDir,
}

impl Scratch {
    /// Tokens and a 32x32 synthetic CelebA of 96 images. With `GANTRY_KEEP_SCRATCH` set, the
    /// folder (logs, runs, state) outlives the test, for a look after a failure.
    pub(crate) fn new() -> Self {
        let keep = std::env::var_os("GANTRY_KEEP_SCRATCH").is_some();
        let dir = tempfile::Builder::new().disable_cleanup(keep).tempdir().unwrap();
        if keep {
            eprintln!("scratch: {}", dir.path().display());
        }
        std::fs::write(dir.path().join("job.token"), format!("{JOB_TOKEN}\n")).unwrap();
        std::fs::write(dir.path().join("worker.token"), WORKER_TOKEN).unwrap();
        let input = dir.path().join("celeba");
        ok(run(
            "dataprep",
            &[
                "synth",
                "celeba",
                "--output",
                input.to_str().unwrap(),
                "--count",
                "96",
                "--seed",
                "5",
            ],
        ));
        ok(run(
            "dataprep",
            &[
                "pack",
                "celeba",
                "--input",
                input.to_str().unwrap(),
                "--output",
                dir.path().join("data").to_str().unwrap(),
                "--size",
                "32",
            ],
        ));
        Self { dir }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The packed dataset.
    pub(crate) fn data(&self) -> String {
        self.path("data").display().to_string()
    }

    /// A small job on the dataset, written to `<name>.toml`; returns the file.
    pub(crate) fn job_file(&self, name: &str, steps: u64, checkpoint_every: u64, extra: &str) -> PathBuf {
        let text = format!(
            "[data]\nurl = \"{data}\"\n[model]\nimage_size = 32\nwidth = 8\n\
             [train]\nbatch_size = 8\nsteps = {steps}\ncheckpoint_every = {checkpoint_every}\nsample_every = 0\n\
             sample_rows = 2\ndevice = \"cpu\"\nthreads = 1\n\
             [output]\nurl = \"{out}\"\n[job]\nname = \"{name}\"\n{extra}",
            data = self.data(),
            out = self.path(&format!("runs/{name}")).display(),
        );
        let file = self.path(&format!("{name}.toml"));
        std::fs::write(&file, text).unwrap();
        file
    }
}

/// A child process killed when dropped.
pub(crate) struct Process {
    pub(crate) child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running coordinator.
pub(crate) struct Coordinator {
    /// Killed on drop.
    _process: Process,
    /// `127.0.0.1:PORT`.
    pub(crate) addr: String,
    /// With `--metrics-listen`: the URL of its `/metrics`.
    pub(crate) metrics: Option<String>,
}

/// Starts `coordinator serve` on `listen` (port 0: any) with the scratch tokens; waits for its
/// "listening on" line. `extra` adds flags.
pub(crate) fn coordinator(scratch: &Scratch, state: &str, listen: &str, extra: &[&str]) -> Coordinator {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(scratch.path("coordinator.log"))
        .unwrap();
    let mut child = serve_command(scratch, state, listen, extra)
        .stderr(log)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| {
            panic!(
                "coordinator did not start: {line:?}\n{}",
                scratch.log("coordinator.log")
            )
        })
        .to_string();
    // "metrics on URL" follows at once when it serves them.
    let metrics = extra.contains(&"--metrics-listen").then(|| {
        line.clear();
        stdout.read_line(&mut line).unwrap();
        line.trim()
            .strip_prefix("metrics on ")
            .unwrap_or_else(|| panic!("no metrics line: {line:?}"))
            .to_string()
    });
    Coordinator {
        _process: Process { child },
        addr,
        metrics,
    }
}

impl Coordinator {
    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self._process.child.id()
    }

    /// Waits for it to exit by itself, up to `limit` (a deadline, not a pause).
    pub(crate) fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self._process.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `coordinator serve` on `listen` with the scratch tokens and `extra` flags, its stdout piped.
pub(crate) fn serve_command(scratch: &Scratch, state: &str, listen: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(bin("coordinator"));
    command
        .args(["serve", "--listen", listen, "--state", state])
        .arg("--token-file")
        .arg(scratch.path("job.token"))
        .arg("--worker-token-file")
        .arg(scratch.path("worker.token"))
        .args(extra)
        .stdout(Stdio::piped());
    command
}

/// A loopback TCP port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The children of process `pid` (from `/proc`), excluding zombies.
pub(crate) fn live_children(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so read after its closing parenthesis.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        if fields.len() > 1 && fields[0] != "Z" && fields[1] == pid.to_string() {
            children.push(child);
        }
    }
    children
}

/// Whether process `pid` is gone (or a zombie nobody reaped).
pub(crate) fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Starts `worker serve` against a coordinator; its log goes to `<name>.log`.
pub(crate) fn worker(scratch: &Scratch, coordinator: &str, name: &str) -> Process {
    worker_with(scratch, coordinator, name, &[])
}

/// [`worker`] with more flags for `worker serve`.
pub(crate) fn worker_with(scratch: &Scratch, coordinator: &str, name: &str, extra: &[&str]) -> Process {
    let log = std::fs::File::create(scratch.path(&format!("{name}.log"))).unwrap();
    let child = Command::new(bin("worker"))
        .args(["serve", "--coordinator", coordinator, "--device", "cpu"])
        .arg("--token-file")
        .arg(scratch.path("worker.token"))
        // No port: the agent reserves one (rank 0 hosts its gang's rendezvous there).
        .args(["--advertise", "127.0.0.1"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Process { child }
}

impl Scratch {
    /// A log file's text, for failure messages.
    pub(crate) fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// Runs `coordinator <args> --coordinator ADDR --token-file job.token`.
    pub(crate) fn cli(&self, addr: &str, args: &[&str]) -> std::process::Output {
        run_with(
            Command::new(bin("coordinator"))
                .args(args)
                .args(["--coordinator", addr, "--token-file"])
                .arg(self.path("job.token")),
        )
    }
}

/// A job-service client.
pub(crate) type Jobs = JobServiceClient<InterceptedService<Channel, Token>>;

/// A job-service client with `token`.
pub(crate) fn jobs(addr: &str, token: &str) -> Jobs {
    let channel = gantry_proto::client::channel(addr, None).unwrap();
    JobServiceClient::with_interceptor(channel, Token::new(token, "test").unwrap())
}

/// A job by id.
pub(crate) async fn get(client: &mut Jobs, id: &str) -> pb::Job {
    client
        .get_job(pb::GetJobRequest { id: id.to_string() })
        .await
        .unwrap()
        .into_inner()
}

/// Follows a job until `until` holds for an event; returns the job's last known record.
/// Fails when the job ends first or `limit` passes (a deadline, not a pause).
pub(crate) async fn watch_until(
    client: &mut Jobs,
    id: &str,
    limit: Duration,
    mut until: impl FnMut(&pb::job_event::Event) -> bool,
) -> pb::Job {
    let mut stream = client
        .watch_job(pb::WatchJobRequest { id: id.to_string() })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    let found = tokio::time::timeout(limit, async {
        while let Some(event) = stream.message().await.unwrap() {
            let event = event.event.unwrap();
            if let pb::job_event::Event::Job(job) = &event {
                last = Some(job.clone());
            }
            if until(&event) {
                return true;
            }
        }
        false
    })
    .await;
    let last = last.expect("the first event is the job");
    assert!(
        found == Ok(true),
        "job {id} never got there (timed out: {}); last seen {} {:?}",
        found.is_err(),
        last.state().label(),
        last.reason
    );
    get(client, id).await
}

/// Follows a job to its end.
pub(crate) async fn watch_to_end(client: &mut Jobs, id: &str, limit: Duration) -> pb::Job {
    watch_until(
        client,
        id,
        limit,
        |e| matches!(e, pb::job_event::Event::Job(job) if job.state().is_final()),
    )
    .await
}

/// Whether a checkpoint folder in a local output was committed (has its manifest).
pub(crate) fn committed(output: &Path, step: u64) -> bool {
    output
        .join(format!("checkpoints/step-{step:07}/manifest.json"))
        .is_file()
}
