//! The simulated cluster: worker agents that register, heartbeat and run what they are given
//! ([`simulate_worker`]), and submissions ([`submit_one`]), with what they share ([`Shared`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gantry_proto::pb;
use gantry_proto::pb::worker_event::Event as WorkerEvent;

use super::report::Latencies;
use super::run::{BenchOptions, Jobs, Workers};

/// State shared by the simulated workers and submitters.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) stop: AtomicBool,
    /// Set when the coordinator is killed: failures after it are expected.
    pub(super) killed: AtomicBool,
    /// Set when the steady load begins.
    pub(super) steady: AtomicBool,
    pub(super) registered: AtomicU64,
    pub(super) heartbeat_errors: AtomicU64,
    pub(super) report_errors: AtomicU64,
    pub(super) register_again: AtomicU64,
    pub(super) runs_finished: AtomicU64,
    /// Submissions sent.
    pub(super) submissions: AtomicU64,
    /// Jobs whose submission was acknowledged.
    pub(super) submitted: Mutex<HashSet<String>>,
    /// Jobs with the ranks whose end was acknowledged.
    pub(super) ended: Mutex<HashMap<String, u32>>,
    /// First-error messages, for the report.
    pub(super) first_errors: Mutex<Vec<String>>,
}

impl Shared {
    pub(super) fn failed(&self, counter: &AtomicU64, what: &str, status: &tonic::Status) {
        if self.killed.load(Ordering::SeqCst) {
            return;
        }
        counter.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap_or_else(PoisonError::into_inner);
        if first.len() < 5 {
            first.push(format!("{what}: {}: {}", status.code(), status.message()));
        }
    }
}

/// What a simulated worker measured.
#[derive(Default)]
pub(super) struct WorkerSamples {
    pub(super) heartbeat: Latencies,
    pub(super) heartbeat_steady: Latencies,
    pub(super) report: Latencies,
}

struct Run {
    job_id: String,
    attempt: u32,
    rank: u32,
    world: u32,
    started: Instant,
    step: u64,
}

async fn report(
    client: &mut Workers,
    shared: &Shared,
    samples: &mut WorkerSamples,
    worker_id: &str,
    run: &Run,
    event: WorkerEvent,
) -> Option<bool> {
    let request = pb::ReportRequest {
        worker_id: worker_id.to_string(),
        job_id: run.job_id.clone(),
        attempt: run.attempt,
        rank: run.rank,
        events: vec![pb::WorkerEvent { event: Some(event) }],
    };
    let sent = Instant::now();
    match client.report(request).await {
        Ok(answer) => {
            samples.report.push(sent.elapsed());
            Some(answer.into_inner().stop)
        }
        Err(status) => {
            shared.failed(&shared.report_errors, "report", &status);
            None
        }
    }
}

/// One simulated agent: registers, heartbeats, runs what it is given.
pub(super) async fn simulate_worker(
    index: usize,
    mut client: Workers,
    shared: Arc<Shared>,
    options: Arc<BenchOptions>,
    finished: tokio::sync::mpsc::UnboundedSender<()>,
) -> WorkerSamples {
    let mut samples = WorkerSamples::default();
    let register = pb::RegisterRequest {
        worker_id: String::new(),
        address: format!("10.{}.{}.{}:29500", index / 65536, (index / 256) % 256, index % 256),
        device: "cpu".into(),
        hostname: format!("sim-{index}"),
        running: None,
        memory_bytes: 64 << 30,
    };
    let answer = loop {
        match client.register(register.clone()).await {
            Ok(answer) => break answer.into_inner(),
            Err(status) => {
                shared.failed(&shared.heartbeat_errors, "register", &status);
                if shared.stop.load(Ordering::SeqCst) {
                    return samples;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    shared.registered.fetch_add(1, Ordering::SeqCst);
    let worker_id = answer.worker_id;
    let interval = Duration::from_millis(answer.heartbeat_interval_ms.max(1));
    // Spread the first heartbeats over one interval, as agents started over time would be.
    let offset = interval.mul_f64(index as f64 / options.workers.max(1) as f64);
    let mut next = tokio::time::Instant::now() + offset;
    let mut run: Option<Run> = None;
    let run_for = Duration::from_secs_f64(options.run_seconds);
    while !shared.stop.load(Ordering::SeqCst) {
        tokio::time::sleep_until(next).await;
        next += interval;
        let now = tokio::time::Instant::now();
        if next < now {
            next = now + interval;
        }
        let request = pb::HeartbeatRequest {
            worker_id: worker_id.clone(),
            running: run.as_ref().map(|r| pb::RunningWork {
                job_id: r.job_id.clone(),
                attempt: r.attempt,
                rank: r.rank,
                step: r.step,
            }),
            leaving: false,
        };
        let sent = Instant::now();
        let answer = match client.heartbeat(request).await {
            Ok(answer) => answer.into_inner(),
            Err(status) => {
                shared.failed(&shared.heartbeat_errors, "heartbeat", &status);
                continue;
            }
        };
        let took = sent.elapsed();
        samples.heartbeat.push(took);
        if shared.steady.load(Ordering::Relaxed) {
            samples.heartbeat_steady.push(took);
        }
        if answer.register_again {
            if !shared.killed.load(Ordering::SeqCst) {
                shared.register_again.fetch_add(1, Ordering::Relaxed);
            }
            let mut again = register.clone();
            again.worker_id = worker_id.clone();
            let _ = client.register(again).await;
            run = None;
            continue;
        }
        if let Some(r) = &run
            && answer.stop_job_ids.contains(&r.job_id)
        {
            run = None;
        }
        if let Some(a) = answer.assignment {
            let started = Run {
                job_id: a.job_id,
                attempt: a.attempt,
                rank: a.rank,
                world: a.world_size,
                started: Instant::now(),
                step: 0,
            };
            let stop = report(
                &mut client,
                &shared,
                &mut samples,
                &worker_id,
                &started,
                WorkerEvent::Started(0),
            )
            .await;
            run = (stop != Some(true)).then_some(started);
            continue;
        }
        let Some(r) = run.as_mut() else { continue };
        r.step += 1;
        let event = if r.started.elapsed() >= run_for {
            WorkerEvent::Finished(pb::CheckpointInfo {
                step: r.step,
                url: format!("file:///bench/{}/checkpoints/step-{:07}", r.job_id, r.step),
                ..Default::default()
            })
        } else if r.rank == 0 && options.checkpoint_every > 0 && r.step % options.checkpoint_every == 0 {
            WorkerEvent::Checkpoint(pb::CheckpointInfo {
                step: r.step,
                url: format!("file:///bench/{}/checkpoints/step-{:07}", r.job_id, r.step),
                ..Default::default()
            })
        } else if r.rank == 0 {
            WorkerEvent::Metrics(pb::StepMetrics {
                step: r.step,
                images_per_sec: 100.0,
                ..Default::default()
            })
        } else {
            continue;
        };
        let finishing = matches!(event, WorkerEvent::Finished(_));
        let stop = report(&mut client, &shared, &mut samples, &worker_id, r, event).await;
        if finishing && stop.is_some() {
            let mut ended = shared.ended.lock().unwrap_or_else(PoisonError::into_inner);
            let ranks = ended.entry(r.job_id.clone()).or_default();
            *ranks += 1;
            if *ranks == r.world {
                shared.runs_finished.fetch_add(1, Ordering::Relaxed);
                let _ = finished.send(());
            }
        }
        if finishing || stop == Some(true) {
            run = None;
        }
    }
    samples
}

/// Submits one job; its id and how long it took.
pub(super) async fn submit_one(
    client: &mut Jobs,
    spec: &pb::JobSpec,
    shared: &Shared,
    latencies: &mut Latencies,
) -> bool {
    // One output per job, as the coordinator requires (nothing is ever written there).
    let mut spec = spec.clone();
    if let Some(output) = spec.output.as_mut() {
        let n = shared.submissions.fetch_add(1, Ordering::Relaxed);
        output.url = format!("{}/{n}", output.url);
    }
    let sent = Instant::now();
    match client.submit_job(pb::SubmitJobRequest { spec: Some(spec) }).await {
        Ok(answer) => {
            latencies.push(sent.elapsed());
            if let Some(job) = answer.into_inner().job {
                shared
                    .submitted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(job.id);
            }
            true
        }
        // After the kill, failures are expected.
        Err(_) if shared.killed.load(Ordering::SeqCst) => true,
        Err(status) => {
            shared.failed(&AtomicU64::new(0), "submit", &status);
            false
        }
    }
}
