//! The gRPC services over the [`Core`]: every call takes the core's lock, changes it, then
//! persists the job records it touched and broadcasts its events before the lock is released,
//! so the store and the watchers see changes in the order they happened.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use gantry_job::{JobConfig, JobError};
use gantry_proto::pb;
use gantry_proto::pb::job_service_server::JobService;
use gantry_proto::pb::worker_service_server::WorkerService;
use tokio::sync::{Mutex, broadcast, mpsc};
use tonic::{Request, Response, Status};

use crate::core::{Core, Event, State, Timing};
use crate::store::JobStore;
use crate::{Error, Result};

/// How long submission waits for a dataset's manifest before calling the URL unreachable.
const DATASET_TIMEOUT: Duration = Duration::from_secs(20);

/// The coordinator: both services share it.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

struct Inner {
    core: Mutex<Core>,
    store: JobStore,
    events: broadcast::Sender<(String, pb::JobEvent)>,
    access: Access,
}

/// The storage jobs may touch: `data.url` under `read` or `write` (no `read` list: anywhere),
/// `output.url` under `write` (no `write` list: anywhere), and never the coordinator's own job
/// records.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Prefixes jobs may read datasets from.
    pub read: dataprep::access::Prefixes,
    /// Prefixes jobs may write runs into (and read from).
    pub write: dataprep::access::Prefixes,
    /// The job store, normalised.
    pub state: Option<String>,
}

impl Access {
    /// Why `config` may not touch its storage, if it may not: the URL and the allowed prefixes.
    pub fn check(&self, config: &JobConfig) -> std::result::Result<(), String> {
        use dataprep::access::{check_job, normalize, within};
        for (key, url) in [("data.url", &config.data.url), ("output.url", &config.output.url)] {
            let normal = normalize(url).map_err(|e| format!("{key}: {e}"))?;
            if let Some(state) = &self.state
                && (within(&normal, state) || within(state, &normal))
            {
                return Err(format!("{key} {url} overlaps the coordinator's job records"));
            }
        }
        check_job(&self.read, &self.write, &config.data.url, &config.output.url, false).map_err(|r| {
            format!(
                "{} {} is outside the prefixes jobs may {}: {}",
                r.key, r.url, r.verb, r.allowed
            )
        })
    }
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").field("store", &self.inner.store).finish()
    }
}

impl Coordinator {
    /// A coordinator over a job store, with the jobs it already holds.
    pub async fn recover(store: JobStore, timing: Timing) -> Result<Self> {
        Self::recover_with(store, timing, Access::default()).await
    }

    /// [`Coordinator::recover`], admitting only jobs whose storage `access` allows.
    pub async fn recover_with(store: JobStore, timing: Timing, mut access: Access) -> Result<Self> {
        access.state = dataprep::access::normalize(&store.url()).ok();
        let records = store.load_all().await?;
        let queued = records.iter().filter(|r| r.state == State::Queued).count();
        let running = records.iter().filter(|r| r.state == State::Running).count();
        tracing::info!(store = %store.url(), jobs = records.len(), queued, running, "job store loaded");
        let (events, _) = broadcast::channel(4096);
        let coordinator = Self {
            inner: Arc::new(Inner {
                core: Mutex::new(Core::recover(timing, records, Instant::now())),
                store,
                events,
                access,
            }),
        };
        let mut core = coordinator.inner.core.lock().await;
        coordinator.commit(&mut core).await?;
        drop(core);
        Ok(coordinator)
    }

    /// Persists and broadcasts what the core left in its outbox. Every record is attempted;
    /// the first failure is returned.
    async fn commit(&self, core: &mut Core) -> Result<()> {
        let events = core.drain();
        // Each touched record is saved once, as it is now; watchers get every state it went
        // through, in order, between the metrics and checkpoints.
        let mut touched: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                Event::Job(id, _) => Some(id.as_str()),
                _ => None,
            })
            .collect();
        touched.sort_unstable();
        touched.dedup();
        let mut first_error = None;
        for id in touched {
            if let Err(e) = self.inner.store.save(core.job(id)?).await {
                tracing::error!(job_id = %id, error = %e, "job record not saved");
                first_error.get_or_insert(e);
            }
        }
        for event in events {
            let (id, event) = match event {
                Event::Job(id, job) => (id, pb::job_event::Event::Job(*job)),
                Event::Metrics(id, m) => (id, pb::job_event::Event::Metrics(m)),
                Event::Checkpoint(id, c) => (id, pb::job_event::Event::Checkpoint(c)),
            };
            // No receivers is fine: nobody is watching.
            let _ = self.inner.events.send((id, pb::JobEvent { event: Some(event) }));
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Periodic work (lost workers, restarts, scheduling).
    pub async fn tick(&self) -> Result<()> {
        let mut core = self.inner.core.lock().await;
        core.tick(Instant::now());
        self.commit(&mut core).await
    }

    /// Validates a spec completely: the keys, then the dataset it names (reachable, image size,
    /// condition, rows) and the output URL. Every problem is listed.
    pub async fn validate(&self, spec: &pb::JobSpec) -> Result<(JobConfig, u64)> {
        let (config, mut problems) = JobConfig::parse_spec(spec);
        // Before anything is opened: a job outside its storage touches nothing.
        if !config.data.url.trim().is_empty() && !config.output.url.trim().is_empty() {
            self.inner.access.check(&config).map_err(Error::Denied)?;
        }
        let mut memory_bytes = 0;
        // The dataset is checked against the condition as written: not when it does not parse.
        let parsed = problems.is_empty();
        if let Err(JobError::Invalid { problems: more }) = config.validate() {
            problems.extend(more);
        }
        if let Err(e) = dataprep::Location::check(&config.output.url)
            && !config.output.url.trim().is_empty()
        {
            problems.push(format!("output.url: {}", dataprep::error_chain(&e)));
        }
        if parsed && !config.data.url.trim().is_empty() {
            match tokio::time::timeout(DATASET_TIMEOUT, dataprep::Dataset::open(&config.data.url)).await {
                Err(_) => problems.push(format!(
                    "data.url: the dataset at {} did not answer within {} s",
                    config.data.url,
                    DATASET_TIMEOUT.as_secs()
                )),
                Ok(Err(e)) => problems.push(format!(
                    "data.url: cannot open the dataset: {}",
                    dataprep::error_chain(&e)
                )),
                Ok(Ok(dataset)) => match config.check_dataset(&dataset) {
                    Ok(classes) if problems.is_empty() => {
                        let channels = u64::from(dataset.manifest().image.channels);
                        let estimate = config.memory_estimate(channels, classes.len() as u64);
                        memory_bytes = estimate.bytes;
                        let largest = self.inner.core.lock().await.largest_worker_memory();
                        if let Some(largest) = largest
                            && let Some(problem) = config.memory_problem(&estimate, largest, "the largest worker has")
                        {
                            problems.push(problem);
                        }
                    }
                    Ok(_) => {}
                    Err(JobError::Invalid { problems: more }) => problems.extend(more),
                    Err(e) => problems.push(e.to_string()),
                },
            }
        }
        if problems.is_empty() {
            Ok((config, memory_bytes))
        } else {
            Err(Error::InvalidSpec { problems })
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send>>;

#[tonic::async_trait]
impl JobService for Coordinator {
    #[tracing::instrument(skip_all)]
    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| Error::BadRequest("spec is missing".into()))?;
        let (config, memory_bytes) = self.validate(&spec).await?;
        let mut core = self.inner.core.lock().await;
        if let Some(other) = core.output_in_use(&config.output.url) {
            return Err(Error::OutputInUse {
                url: config.output.url.clone(),
                job: other.id.clone(),
                state: other.state.label(),
            }
            .into());
        }
        let record = core.submit_estimated(config, memory_bytes);
        tracing::info!(job_id = %record.id, name = %record.config.job.name, workers = record.config.job.workers, "job submitted");
        self.commit(&mut core).await?;
        let job = core.job(&record.id)?.to_pb();
        Ok(Response::new(pb::SubmitJobResponse { job: Some(job) }))
    }

    async fn get_job(&self, request: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let core = self.inner.core.lock().await;
        Ok(Response::new(core.job(&request.get_ref().id)?.to_pb()))
    }

    async fn list_jobs(&self, request: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
        let mut states = Vec::new();
        for raw in &request.get_ref().states {
            let state = pb::JobState::try_from(*raw)
                .ok()
                .and_then(|s| State::try_from(s).ok())
                .ok_or_else(|| Error::BadRequest(format!("states: {raw} is not a job state")))?;
            states.push(state);
        }
        let core = self.inner.core.lock().await;
        let jobs = core.list(&states).into_iter().map(|j| j.to_pb()).collect();
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    #[tracing::instrument(skip_all, fields(job_id = %request.get_ref().id))]
    async fn cancel_job(&self, request: Request<pb::CancelJobRequest>) -> Result<Response<pb::Job>, Status> {
        let request = request.into_inner();
        let mut core = self.inner.core.lock().await;
        let record = core.cancel(&request.id, &request.reason)?;
        tracing::info!("job cancelled");
        self.commit(&mut core).await?;
        Ok(Response::new(record.to_pb()))
    }

    type WatchJobStream = EventStream;

    async fn watch_job(&self, request: Request<pb::WatchJobRequest>) -> Result<Response<Self::WatchJobStream>, Status> {
        let id = request.into_inner().id;
        // Subscribe before the snapshot, so no change falls between them.
        let mut events = self.inner.events.subscribe();
        let snapshot = self.inner.core.lock().await.job(&id)?.to_pb();
        let (tx, rx) = mpsc::channel(256);
        let coordinator = self.clone();
        tokio::spawn(async move {
            let mut done = snapshot.state().is_final();
            let first = pb::JobEvent {
                event: Some(pb::job_event::Event::Job(snapshot)),
            };
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            while !done {
                let event = match events.recv().await {
                    Ok((job_id, event)) if job_id == id => event,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow for every metric: resynchronise with the record.
                        let Ok(job) = coordinator.inner.core.lock().await.job(&id).map(|j| j.to_pb()) else {
                            return;
                        };
                        pb::JobEvent {
                            event: Some(pb::job_event::Event::Job(job)),
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if let Some(pb::job_event::Event::Job(job)) = &event.event {
                    done = job.state().is_final();
                }
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl WorkerService for Coordinator {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let mut core = self.inner.core.lock().await;
        let (worker_id, interval) = core.register(request.get_ref(), Instant::now());
        self.commit(&mut core).await?;
        Ok(Response::new(pb::RegisterResponse {
            worker_id,
            heartbeat_interval_ms: interval.as_millis() as u64,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let mut core = self.inner.core.lock().await;
        let response = core.heartbeat(request.get_ref(), Instant::now());
        self.commit(&mut core).await?;
        Ok(Response::new(response))
    }

    async fn report(&self, request: Request<pb::ReportRequest>) -> Result<Response<pb::ReportResponse>, Status> {
        let mut core = self.inner.core.lock().await;
        let stop = core.report(request.get_ref(), Instant::now());
        self.commit(&mut core).await?;
        Ok(Response::new(pb::ReportResponse { stop }))
    }
}
