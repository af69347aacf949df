//! Scenario tests of the agent's supervision, each over in-memory pipes where the test plays the
//! child process (or a real short-lived process where a real death matters): orders, the
//! events that end a run, a child that dies without saying how, and a pipe that cannot be read.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use gantry_proto::pb;
use gantry_proto::pb::worker_event::Event;
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

use super::pipe::{MAX_FRAME, Order, Reader, Writer};
use super::supervisor::{Child, Graces, Process, RunIds, Supervised, describe_exit, link};

/// Long enough for anything that must happen in these tests; a failure, not a wait.
const PATIENCE: Duration = Duration::from_secs(10);

fn assignment() -> pb::Assignment {
    pb::Assignment {
        job_id: "job-000007".into(),
        attempt: 2,
        rank: 0,
        world_size: 1,
        peers: vec!["127.0.0.1:29500".into()],
        secret: "s".into(),
        spec: None,
    }
}

fn graces(stop: Duration) -> Graces {
    Graces {
        stop,
        shutdown: PATIENCE * 2,
    }
}

fn event(event: Event) -> pb::WorkerEvent {
    pb::WorkerEvent { event: Some(event) }
}

fn exited(code: i32) -> ExitStatus {
    ExitStatus::from_raw(code << 8)
}

fn signalled(signal: i32) -> ExitStatus {
    ExitStatus::from_raw(signal)
}

/// A process played by the test: it ends when the test says so, or when it is killed (then
/// by SIGKILL, and the test hears of it).
struct PlayedProcess {
    exit: mpsc::UnboundedSender<ExitStatus>,
    exits: mpsc::UnboundedReceiver<ExitStatus>,
    killed: mpsc::UnboundedSender<()>,
}

impl Process for PlayedProcess {
    fn kill(&mut self) {
        let _ = self.exit.send(signalled(libc::SIGKILL));
        let _ = self.killed.send(());
    }

    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.exits
            .recv()
            .await
            .ok_or_else(|| std::io::Error::other("the played process vanished"))
    }
}

/// The child's side of the pipes and of its process, for the test to play.
struct Played {
    stdin: Reader<DuplexStream>,
    stdout: DuplexStream,
    stderr: DuplexStream,
    exit: mpsc::UnboundedSender<ExitStatus>,
    killed: mpsc::UnboundedReceiver<()>,
}

impl Played {
    /// Reads the assignment the supervisor sent first.
    async fn read_assignment(&mut self) -> pb::Assignment {
        self.stdin
            .frame::<pb::Assignment>()
            .await
            .expect("a readable assignment")
            .expect("an assignment before the end")
    }

    async fn send(&mut self, event: Event) {
        let event = pb::WorkerEvent { event: Some(event) };
        Writer::new(&mut self.stdout).frame(&event).await.unwrap();
    }

    /// Ends the process with `status`: its stdout and stderr close and it exits; what is left
    /// of its stdin stays readable.
    fn end(self, status: ExitStatus) -> Reader<DuplexStream> {
        let Played {
            stdin,
            stdout,
            stderr,
            exit,
            killed: _,
        } = self;
        drop((stdout, stderr));
        let _ = exit.send(status);
        stdin
    }
}

/// Supervises a child that the test plays.
fn supervise_played(graces: Graces) -> (Supervised, Played) {
    let (agent_stdin, child_stdin) = tokio::io::duplex(64 << 10);
    let (child_stdout, agent_stdout) = tokio::io::duplex(64 << 10);
    let (child_stderr, agent_stderr) = tokio::io::duplex(64 << 10);
    let (exit, exits) = mpsc::unbounded_channel();
    let (killed_tx, killed) = mpsc::unbounded_channel();
    let process = PlayedProcess {
        exit: exit.clone(),
        exits,
        killed: killed_tx,
    };
    let (supervisor, supervised) = link(RunIds::of(&assignment()), graces);
    let child = Child {
        process,
        stdin: agent_stdin,
        stdout: agent_stdout,
        stderr: agent_stderr,
    };
    tokio::spawn(async move { supervisor.run(child, &assignment()).await });
    let played = Played {
        stdin: Reader::new(child_stdin),
        stdout: child_stdout,
        stderr: child_stderr,
        exit,
        killed,
    };
    (supervised, played)
}

/// Every event of the run, until the supervisor is done.
async fn all_events(supervised: &mut Supervised) -> Vec<pb::WorkerEvent> {
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout(PATIENCE, supervised.events.recv()).await {
            Ok(Some(event)) => events.push(event),
            Ok(None) => return events,
            Err(_) => panic!("the supervisor did not finish; events so far: {events:?}"),
        }
    }
}

/// The next event of the run.
async fn next_event(supervised: &mut Supervised) -> pb::WorkerEvent {
    tokio::time::timeout(PATIENCE, supervised.events.recv())
        .await
        .expect("an event in time")
        .expect("an event before the end")
}

fn failure(events: &[pb::WorkerEvent]) -> &pb::Failure {
    match events.last().and_then(|e| e.event.as_ref()) {
        Some(Event::Failed(failure)) => failure,
        other => panic!("the run should end failed, ends with {other:?}; events {events:?}"),
    }
}

#[tokio::test]
async fn a_stop_order_reaches_the_child_as_its_byte_and_its_stopped_event_ends_the_run() {
    let (mut supervised, mut child) = supervise_played(graces(PATIENCE));
    assert_eq!(child.read_assignment().await, assignment());
    child.send(Event::Started(0)).await;
    child
        .send(Event::Metrics(pb::StepMetrics {
            step: 3,
            ..Default::default()
        }))
        .await;
    assert_eq!(next_event(&mut supervised).await, event(Event::Started(0)));
    next_event(&mut supervised).await;
    assert_eq!(supervised.step.load(std::sync::atomic::Ordering::Relaxed), 3);

    assert!(supervised.stop.order(), "the first stop order is sent");
    assert!(!supervised.stop.order(), "a second one is not");
    assert_eq!(child.stdin.order().await.unwrap(), Some(Order::Stop));
    child.send(Event::Stopped(3)).await;
    child.end(exited(0));

    let events = all_events(&mut supervised).await;
    assert_eq!(events, vec![event(Event::Stopped(3))]);
}

#[tokio::test]
async fn a_preemption_reaches_the_child_and_the_checkpoint_it_saved_is_reported() {
    let (mut supervised, mut child) = supervise_played(graces(PATIENCE));
    child.read_assignment().await;
    supervised.stop.preempt();
    assert_eq!(child.stdin.order().await.unwrap(), Some(Order::Preempt));
    let saved = pb::CheckpointInfo {
        step: 40,
        url: "file:///out/checkpoints/step-40".into(),
        write_seconds: 0.5,
    };
    child.send(Event::Checkpoint(saved.clone())).await;
    child
        .send(Event::Preempted(pb::CheckpointInfo {
            write_seconds: 0.0,
            ..saved.clone()
        }))
        .await;
    child.end(exited(0));

    let events = all_events(&mut supervised).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0], event(Event::Checkpoint(saved)));
    assert!(
        matches!(&events[1].event, Some(Event::Preempted(p)) if p.step == 40),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_preemption_after_a_stop_order_is_not_passed_on() {
    let (mut supervised, mut child) = supervise_played(graces(PATIENCE));
    child.read_assignment().await;
    supervised.stop.order();
    supervised.stop.preempt();
    assert_eq!(child.stdin.order().await.unwrap(), Some(Order::Stop));
    child.send(Event::Stopped(0)).await;
    let mut stdin = child.end(exited(0));
    assert_eq!(all_events(&mut supervised).await, vec![event(Event::Stopped(0))]);
    // The supervisor has closed the child's stdin: no other order came before.
    assert_eq!(stdin.order().await.unwrap(), None);
}

#[tokio::test]
async fn a_child_that_ends_without_reporting_is_reported_failed_with_its_status_and_last_error() {
    let (mut supervised, mut child) = supervise_played(graces(PATIENCE));
    child.read_assignment().await;
    child.send(Event::Started(0)).await;
    let lines = concat!(
        r#"{"level":"INFO","fields":{"message":"loading the dataset"}}"#,
        "\n",
        r#"{"level":"ERROR","fields":{"message":"CUDA out of memory","step":12}}"#,
        "\n",
        "free text that is not JSON counts as an error too\n",
        r#"{"level":"WARN","fields":{"message":"slow bucket"}}"#,
        "\n",
    );
    child.stderr.write_all(lines.as_bytes()).await.unwrap();
    child.end(exited(3));

    let events = all_events(&mut supervised).await;
    assert_eq!(events[0], event(Event::Started(0)));
    let failure = failure(&events);
    assert_eq!(
        failure.message,
        "the training process exited with status 3; its last error: free text that is not JSON counts as an error too"
    );
    assert!(failure.retryable);
}

#[tokio::test]
async fn a_malformed_event_frame_is_skipped_and_the_events_after_it_still_arrive() {
    let (mut supervised, mut child) = supervise_played(graces(PATIENCE));
    child.read_assignment().await;
    // A whole frame of three bytes that are no event (a field tag cut short).
    let mut frame = Vec::new();
    prost::encode_length_delimiter(3, &mut frame).unwrap();
    frame.extend_from_slice(&[0xff; 3]);
    child.stdout.write_all(&frame).await.unwrap();
    child.send(Event::Started(5)).await;
    child
        .send(Event::Finished(pb::CheckpointInfo {
            step: 6,
            ..Default::default()
        }))
        .await;
    child.end(exited(0));

    let events = all_events(&mut supervised).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0], event(Event::Started(5)));
    assert!(events[1].is_terminal());
}

#[tokio::test]
async fn an_oversized_frame_gets_the_child_killed_and_reported_naming_the_size_and_the_limit() {
    let (mut supervised, mut child) = supervise_played(graces(PATIENCE));
    child.read_assignment().await;
    let mut prefix = Vec::new();
    prost::encode_length_delimiter(1 << 30, &mut prefix).unwrap();
    child.stdout.write_all(&prefix).await.unwrap();
    // The child lives on until the supervisor kills it; its pipes close as it dies.
    tokio::time::timeout(PATIENCE, child.killed.recv())
        .await
        .expect("the child killed in time");
    child.end(signalled(libc::SIGKILL));

    let events = all_events(&mut supervised).await;
    let failure = failure(&events);
    assert!(
        failure
            .message
            .starts_with("the training process was killed by signal 9 (SIGKILL"),
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains(&format!(
            "a frame of 1073741824 bytes is over the limit of {MAX_FRAME} bytes"
        )),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn a_corrupt_length_prefix_gets_the_child_killed_and_reported() {
    let (mut supervised, mut child) = supervise_played(graces(PATIENCE));
    child.read_assignment().await;
    child.send(Event::Started(0)).await;
    child.stdout.write_all(&[0xff; 10]).await.unwrap();
    tokio::time::timeout(PATIENCE, child.killed.recv())
        .await
        .expect("the child killed in time");
    child.end(signalled(libc::SIGKILL));

    let events = all_events(&mut supervised).await;
    assert_eq!(events[0], event(Event::Started(0)));
    let failure = failure(&events);
    assert!(
        failure
            .message
            .contains("its events could not be read (a frame's length prefix is not a varint)"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn a_child_whose_events_end_inside_a_frame_is_reported_with_its_exit() {
    let (mut supervised, mut child) = supervise_played(graces(PATIENCE));
    child.read_assignment().await;
    let frame = super::pipe::encode(&event(Event::Started(0))).unwrap();
    child.stdout.write_all(&frame[..frame.len() - 1]).await.unwrap();
    child.end(signalled(libc::SIGSEGV));

    let events = all_events(&mut supervised).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let failure = failure(&events);
    assert!(
        failure
            .message
            .starts_with("the training process was killed by signal 11 (SIGSEGV: invalid memory access); its events could not be read (the pipe ended inside a frame"),
        "{}",
        failure.message
    );
}

/// Spawns `sleep 30` with the three pipes, as the agent spawns an attempt.
fn sleeping_child()
-> Child<tokio::process::Child, tokio::process::ChildStdin, tokio::process::ChildStdout, tokio::process::ChildStderr> {
    let mut process = tokio::process::Command::new("sleep")
        .arg("30")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sleep runs");
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (process.stdin.take(), process.stdout.take(), process.stderr.take())
    else {
        unreachable!("all three pipes were requested");
    };
    Child {
        process,
        stdin,
        stdout,
        stderr,
    }
}

#[tokio::test]
async fn a_child_killed_by_a_signal_is_reported_as_failed_naming_the_signal() {
    let child = sleeping_child();
    let pid = child.process.id().expect("running") as libc::pid_t;
    let (supervisor, mut supervised) = link(RunIds::of(&assignment()), graces(PATIENCE));
    let running = tokio::spawn(async move { supervisor.run(child, &assignment()).await });
    // The out-of-memory killer, say.
    // SAFETY: kill only sends a signal, to the child this test started and has not waited for.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);

    let events = all_events(&mut supervised).await;
    running.await.unwrap();
    let failure = failure(&events);
    assert_eq!(
        failure.message,
        "the training process was killed by signal 9 (SIGKILL: killed, for instance by the out-of-memory killer)"
    );
    assert!(failure.retryable);
}

#[tokio::test]
async fn a_child_that_ignores_its_stop_order_is_killed_after_the_grace() {
    let child = sleeping_child();
    let (supervisor, mut supervised) = link(RunIds::of(&assignment()), graces(Duration::from_millis(50)));
    let running = tokio::spawn(async move { supervisor.run(child, &assignment()).await });
    supervised.stop.order();

    let events = all_events(&mut supervised).await;
    running.await.unwrap();
    assert!(
        failure(&events)
            .message
            .starts_with("the training process was killed by signal 9 (SIGKILL"),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_child_that_cannot_be_started_is_reported_as_a_retryable_failure() {
    let mut options = super::AgentOptions {
        coordinator: "http://127.0.0.1:1".into(),
        token: gantry_proto::auth::Token::new("t0ken", "test").unwrap(),
        tls_ca: None,
        advertise: "127.0.0.1:29500".into(),
        port_hold: None,
        ifname: None,
        shutdown_grace: PATIENCE,
        device: gantry_job::DeviceSpec::Cpu,
        hostname: "test".into(),
        program: "/nonexistent/worker".into(),
        memory_limit: None,
        allow_read: Vec::new(),
        allow_write: Vec::new(),
        metrics_listen: None,
    };
    let mut supervised = super::supervisor::start(&assignment(), &mut options);
    let events = all_events(&mut supervised).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let failure = failure(&events);
    assert!(
        failure.message.starts_with("starting the training process failed: "),
        "{}",
        failure.message
    );
    assert!(failure.retryable);
}

#[test]
fn an_exit_is_described_by_its_status_or_by_its_signal_and_what_the_signal_means() {
    assert_eq!(describe_exit(exited(0)), "exited with status 0");
    assert_eq!(describe_exit(exited(101)), "exited with status 101");
    assert_eq!(
        describe_exit(signalled(libc::SIGABRT)),
        "was killed by signal 6 (SIGABRT: aborted)"
    );
    assert_eq!(
        describe_exit(signalled(libc::SIGTERM)),
        "was killed by signal 15 (SIGTERM)"
    );
    assert_eq!(
        describe_exit(signalled(libc::SIGBUS)),
        "was killed by signal 7 (SIGBUS)"
    );
    assert_eq!(describe_exit(signalled(libc::SIGUSR1)), "was killed by signal 10");
}
