//! The child side of a run, `worker attempt`: [`run_attempt`] reads its assignment from stdin,
//! trains it as its rank with a [`Forward`] observer that turns the trainer's hooks into
//! events, writes the events to stdout from a thread of its own ([`write_events`]) and takes
//! the agent's orders from stdin on another ([`listen`]). The event that ends the run says how
//! it ended ([`run_job`]).

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gantry_job::{DeviceSpec, JobConfig};
use gantry_proto::pb;
use gantry_proto::pb::worker_event::Event;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::pipe::{Order, PipeError, Reader, Writer};
use crate::Error;
use crate::collective::GroupSpec;
use crate::train::{MetricsLine, Observer, TrainOptions};

/// What the agent ordered, as the trainer asks it.
#[derive(Debug, Default)]
pub(crate) struct Orders {
    /// Stop at once (a stop order, or the agent gone).
    pub(crate) stop: AtomicBool,
    /// Save and stop at the next step boundary (a preemption order, or a signal).
    pub(crate) preempt: AtomicBool,
}

/// Forwards the trainer's hooks to the agent.
#[derive(Debug)]
pub(crate) struct Forward {
    events: mpsc::UnboundedSender<pb::WorkerEvent>,
    orders: Arc<Orders>,
}

impl Forward {
    fn send(&self, event: Event) {
        // The event writer outlives the run; a closed channel means it failed.
        let _ = self.events.send(pb::WorkerEvent { event: Some(event) });
    }
}

impl Observer for Forward {
    fn started(&self, step: u64) {
        self.send(Event::Started(step));
    }

    fn step(&self, line: &MetricsLine) {
        self.send(Event::Metrics(line.clone()));
    }

    fn checkpoint(&self, step: u64, url: &str, write_seconds: f64) {
        self.send(Event::Checkpoint(pb::CheckpointInfo {
            step,
            url: url.to_string(),
            write_seconds,
        }));
    }

    fn should_stop(&self) -> bool {
        self.orders.stop.load(Ordering::Relaxed)
    }

    fn preempted(&self) -> bool {
        self.orders.preempt.load(Ordering::Relaxed)
    }
}

/// Whether another attempt could succeed where this one failed: not for a job that is wrong in
/// itself (its spec, its dataset, a diverging run, a checkpoint of another job or one that does
/// not decode), nor after a panic of the data loader, which would meet the same rows again.
fn retryable(e: &Error) -> bool {
    !matches!(
        e,
        Error::Job(_)
            | Error::NonFinite { .. }
            | Error::Checkpoint { .. }
            | Error::CheckpointFile { .. }
            | Error::Data(dataprep::Error::Panicked { .. })
            | Error::TooLarge { .. }
            | Error::Denied { .. }
            | Error::Storage(base::Error::Foreign { .. })
            | Error::Data(dataprep::Error::Storage(base::Error::Foreign { .. }))
            | Error::Allocation { .. }
    )
}

/// The failure an error of the trainer is.
fn failed(e: &Error) -> Event {
    Event::Failed(pb::Failure {
        message: base::error_chain(e),
        retryable: retryable(e),
    })
}

/// The job an assignment describes, on this worker's device.
fn job_of(assignment: &pb::Assignment, device: DeviceSpec) -> Result<JobConfig, String> {
    let spec = assignment.spec.as_ref().ok_or("the assignment carries no job spec")?;
    let mut config = JobConfig::from_spec(spec).map_err(|e| base::error_chain(&e))?;
    config.train.device = crate::device::for_job(config.train.device, device);
    Ok(config)
}

/// Trains a job to its end as this attempt's rank; the event that says how it ended.
fn run_job(
    config: &JobConfig,
    assignment: &pb::Assignment,
    base: TrainOptions,
    forward: Arc<Forward>,
    runtime: &Handle,
) -> Event {
    let mut options = TrainOptions {
        observer: Some(forward),
        ..base
    };
    if assignment.world_size > 1 {
        let device = match crate::device::resolve(config.train.device) {
            Ok(device) => device,
            Err(e) => return failed(&e),
        };
        let timeout = std::time::Duration::from_secs_f64(config.train.collective_timeout_s);
        match GroupSpec::from_assignment(assignment, device, timeout) {
            Ok(spec) => {
                options.ranks_on_host = ranks_on_host(assignment);
                options.group = Some(spec);
            }
            Err(e) => {
                return Event::Failed(pb::Failure {
                    message: base::error_chain(&e),
                    retryable: false,
                });
            }
        }
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::train::train(config, &options, runtime)
    }));
    match result {
        Ok(Ok(summary)) => Event::Finished(pb::CheckpointInfo {
            step: summary.steps,
            url: summary.checkpoint,
            ..Default::default()
        }),
        Ok(Err(Error::Stopped { step })) => Event::Stopped(step),
        Ok(Err(Error::Preempted { step, checkpoint })) => Event::Preempted(pb::CheckpointInfo {
            step,
            url: checkpoint.unwrap_or_default(),
            ..Default::default()
        }),
        Ok(Err(e)) => failed(&e),
        Err(panic) => Event::Failed(pb::Failure {
            message: dataprep::Error::panicked("the trainer", panic).to_string(),
            retryable: true,
        }),
    }
}

/// Ranks of the assignment whose address names the same host as this rank's.
fn ranks_on_host(assignment: &pb::Assignment) -> usize {
    let host = |address: &str| base::address::HostPort::host_of(address);
    let own = assignment.peers.get(assignment.rank as usize).map(|a| host(a));
    assignment.peers.iter().filter(|a| Some(host(a)) == own).count().max(1)
}

/// Takes the agent's orders until a stop order or the end of the pipe (the agent gone), which
/// both stop the run; a preemption order asks it to save and stop first.
pub(crate) fn listen(mut pipe: Reader<impl Read>, orders: &Orders) {
    while let Ok(Some(Order::Preempt)) = pipe.order_blocking() {
        orders.preempt.store(true, Ordering::Relaxed);
    }
    orders.stop.store(true, Ordering::Relaxed);
}

/// Writes the run's events as they come until the last sender is gone.
pub(crate) fn write_events(
    mut events: mpsc::UnboundedReceiver<pb::WorkerEvent>,
    mut pipe: Writer<impl Write>,
) -> Result<(), PipeError> {
    while let Some(event) = events.blocking_recv() {
        pipe.frame_blocking(&event)?;
    }
    Ok(())
}

/// `worker attempt`: runs one attempt in this process, the child of a `worker serve` agent
/// (see the [package documentation](super) for the pipes). Returns when the attempt has ended
/// and its last event is written.
pub fn run_attempt(device: DeviceSpec, base: TrainOptions) -> std::io::Result<()> {
    // Die with the agent, whatever kills it.
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_PDEATHSIG only sets this process's parent-death signal.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    let parent = std::os::unix::process::parent_id();
    if parent == 1 {
        // The agent died before the death signal was armed.
        return Err(std::io::Error::other("the agent that started this attempt is gone"));
    }
    let mut stdin = Reader::new(std::io::stdin());
    let assignment: pb::Assignment = stdin
        .frame_blocking()
        .map_err(std::io::Error::other)?
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the agent sent no assignment"))?;

    let (tx, rx) = mpsc::unbounded_channel::<pb::WorkerEvent>();
    let orders = Arc::new(Orders::default());
    let forward = Arc::new(Forward {
        events: tx,
        orders: orders.clone(),
    });
    let listened = orders.clone();
    std::thread::spawn(move || listen(stdin, &listened));
    let writer = std::thread::spawn(move || write_events(rx, Writer::new(std::io::stdout().lock())));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // A signal meant for the agent may reach its child too (Ctrl-C on a terminal signals the
    // whole process group, Slurm signals every process of a step): it saves and stops as well.
    let signalled = orders.clone();
    runtime.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("signalled: saving a checkpoint at the next step boundary, then stopping");
            signalled.preempt.store(true, Ordering::Relaxed);
        }
    });
    let end = match job_of(&assignment, device) {
        Err(message) => Event::Failed(pb::Failure {
            message,
            retryable: false,
        }),
        Ok(config) => run_job(&config, &assignment, base, forward.clone(), runtime.handle()),
    };
    if let Event::Failed(failure) = &end {
        tracing::error!(job_id = %assignment.job_id, "{}", failure.message);
    }
    forward.send(end);
    drop(forward);
    writer
        .join()
        .map_err(|_| std::io::Error::other("the event writer panicked"))?
        .map_err(std::io::Error::other)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn assignment() -> pb::Assignment {
        pb::Assignment {
            job_id: "job-000009".into(),
            attempt: 1,
            rank: 1,
            world_size: 3,
            peers: vec!["node-a:29500".into(), "node-b:29500".into(), "node-b:29501".into()],
            secret: "s".into(),
            spec: None,
        }
    }

    /// The child's stdin as the agent writes it: the assignment, then `orders`.
    fn stdin(orders: &[Order]) -> Reader<Cursor<Vec<u8>>> {
        let mut bytes = Vec::new();
        let mut writer = Writer::new(&mut bytes);
        writer.frame_blocking(&assignment()).unwrap();
        for order in orders {
            writer.order_blocking(*order).unwrap();
        }
        Reader::new(Cursor::new(bytes))
    }

    #[test]
    fn the_child_reads_its_assignment_then_its_orders_from_the_same_stdin() {
        let mut stdin = stdin(&[Order::Preempt, Order::Stop, Order::Preempt]);
        assert_eq!(stdin.frame_blocking::<pb::Assignment>().unwrap(), Some(assignment()));
        let orders = Orders::default();
        listen(stdin, &orders);
        assert!(orders.preempt.load(Ordering::Relaxed));
        assert!(orders.stop.load(Ordering::Relaxed));
    }

    #[test]
    fn the_agent_gone_stops_the_run_without_preempting_it() {
        let mut stdin = stdin(&[]);
        stdin.frame_blocking::<pb::Assignment>().unwrap();
        let orders = Orders::default();
        listen(stdin, &orders);
        assert!(orders.stop.load(Ordering::Relaxed));
        assert!(!orders.preempt.load(Ordering::Relaxed));
    }

    #[test]
    fn the_child_writes_each_event_as_a_frame_until_the_run_is_over() {
        let (tx, rx) = mpsc::unbounded_channel();
        let forward = Forward {
            events: tx,
            orders: Arc::default(),
        };
        forward.started(4);
        forward.checkpoint(5, "file:///out/checkpoints/step-5", 0.25);
        forward.send(Event::Stopped(5));
        drop(forward);
        let mut out = Vec::new();
        write_events(rx, Writer::new(&mut out)).unwrap();

        let mut reader = Reader::new(Cursor::new(out));
        let mut events = Vec::new();
        while let Some(event) = reader.frame_blocking::<pb::WorkerEvent>().unwrap() {
            events.push(event.event.unwrap());
        }
        assert_eq!(
            events,
            vec![
                Event::Started(4),
                Event::Checkpoint(pb::CheckpointInfo {
                    step: 5,
                    url: "file:///out/checkpoints/step-5".into(),
                    write_seconds: 0.25,
                }),
                Event::Stopped(5),
            ]
        );
    }

    #[test]
    fn the_trainer_sees_the_orders_the_listener_took() {
        let orders = Arc::new(Orders::default());
        let (tx, _rx) = mpsc::unbounded_channel();
        let forward = Forward {
            events: tx,
            orders: orders.clone(),
        };
        assert!(!forward.should_stop() && !forward.preempted());
        orders.preempt.store(true, Ordering::Relaxed);
        assert!(forward.preempted() && !forward.should_stop());
        orders.stop.store(true, Ordering::Relaxed);
        assert!(forward.should_stop());
    }

    #[test]
    fn an_assignment_without_a_job_spec_is_refused_naming_it() {
        assert_eq!(
            job_of(&assignment(), DeviceSpec::Cpu).unwrap_err(),
            "the assignment carries no job spec"
        );
    }

    #[test]
    fn ranks_on_host_counts_the_peers_on_this_rank_s_host() {
        assert_eq!(ranks_on_host(&assignment()), 2);
        let rank_0 = pb::Assignment {
            rank: 0,
            ..assignment()
        };
        assert_eq!(ranks_on_host(&rank_0), 1);
    }
}
