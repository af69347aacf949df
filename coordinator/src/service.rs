//! The gRPC services over the [`Core`]: every call takes the core's lock (never across I/O),
//! changes it and stages the records it touched; then, with the lock released, waits until
//! those records are stored, publishes its events to the job's watchers, and answers. Reads
//! wait for the versions they show (at once, unless a write of them is in flight). Nothing thus
//! leaves the coordinator before it is stored, and a slow store slows the calls that change or
//! read records, not heartbeats. Watchers get a job's states in version order.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::Stream;
use gantry_job::{JobConfig, JobError};
use gantry_proto::pb;
use gantry_proto::pb::job_service_server::JobService;
use gantry_proto::pb::worker_service_server::WorkerService;
use tokio::sync::{broadcast, mpsc, watch};
use tonic::{Request, Response, Status};

use crate::core::{Core, Environment, Event, State, Timing};
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
    /// A channel per watched job.
    watchers: Mutex<HashMap<String, broadcast::Sender<Arc<Update>>>>,
    /// The core's scheduling generation, as last published: watchers of a queued job read
    /// its derived reason again when it moves.
    generation: watch::Sender<u64>,
    access: Access,
    datasets: DatasetCache,
    /// Every job's events once stored, for followers of all jobs (the dashboard).
    feed: broadcast::Sender<Arc<FeedEvent>>,
}

/// One event of any job, as published to [`Coordinator::feed`].
#[derive(Debug, Clone)]
pub struct FeedEvent {
    /// The job.
    pub job_id: String,
    /// What happened: a new state of its record, a step, a checkpoint.
    pub event: pb::job_event::Event,
}

/// Events buffered for each follower of the feed; one further behind is told it lagged.
const FEED_BUFFER: usize = 1024;

/// Datasets opened at submission, by URL, each with the version of its manifest (e-tag, time
/// and size): a job on a known dataset costs one `HEAD` of the manifest, not a read.
#[derive(Default)]
struct DatasetCache {
    entries: Mutex<HashMap<String, (ManifestVersion, dataprep::Dataset)>>,
}

type ManifestVersion = base::ObjectVersion;

/// Datasets remembered by [`DatasetCache`]; past that, it starts again empty.
const DATASET_CACHE: usize = 64;

impl DatasetCache {
    /// The dataset at `url`, from the cache while its manifest has not changed.
    async fn open(&self, url: &str) -> dataprep::Result<dataprep::Dataset> {
        let location = base::Location::parse(url)?;
        let version = match location.version(dataprep::manifest::MANIFEST).await {
            Ok(Some(version)) => version,
            // No manifest, or no answer: opening says which, in the dataset's own words.
            Ok(None) | Err(_) => return dataprep::Dataset::open_at(location).await,
        };
        if let Some((known, dataset)) = self.lock().get(url)
            && *known == version
        {
            return Ok(dataset.clone());
        }
        let dataset = dataprep::Dataset::open_at(location).await?;
        let mut entries = self.lock();
        if entries.len() >= DATASET_CACHE {
            entries.clear();
        }
        entries.insert(url.to_string(), (version, dataset.clone()));
        Ok(dataset)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (ManifestVersion, dataprep::Dataset)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The storage jobs may touch: `data.url` under `read` or `write` (no `read` list: anywhere),
/// `output.url` under `write` (no `write` list: anywhere), and never the coordinator's own job
/// records.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Prefixes jobs may read datasets from.
    pub read: base::access::Prefixes,
    /// Prefixes jobs may write runs into (and read from).
    pub write: base::access::Prefixes,
    /// The job store, normalised.
    pub state: Option<String>,
}

impl Access {
    /// Why `config` may not touch its storage, if it may not: the URL and the allowed prefixes.
    pub fn check(&self, config: &JobConfig) -> std::result::Result<(), String> {
        use base::access::{check_job, normalize, within};
        for (key, url) in [("data.url", &config.data.url), ("output.url", &config.output.url)] {
            let normal = normalize(url).map_err(|e| format!("{key}: {e}"))?;
            if let Some(state) = &self.state
                && (within(&normal, state) || within(state, &normal))
            {
                return Err(format!("{key} {url} overlaps the coordinator's job records"));
            }
        }
        check_job(&self.read, &self.write, &config.data.url, &config.output.url, false)
            .map_err(|r| r.message(base::access::Guard::Coordinator))
    }
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").field("store", &self.inner.store).finish()
    }
}

/// What one call changed, taken from the core under its lock: the records to wait for (id,
/// version) and the events to publish once they are stored.
#[must_use]
struct Staged {
    writes: Vec<(String, u64)>,
    /// Each with its record's version for a job state (0 for metrics and checkpoints).
    events: Vec<(u64, Event)>,
    generation: u64,
}

/// One event of a job for its watchers, with the record's version when it was staged: a
/// watcher drops a state older than one it has sent.
#[derive(Debug)]
struct Update {
    version: u64,
    event: pb::job_event::Event,
}

/// Events of one job buffered for each watcher; a watcher further behind reads the record again.
const WATCH_BUFFER: usize = 128;

impl Coordinator {
    /// A coordinator over a job store, with the jobs it already holds.
    pub async fn recover(store: JobStore, timing: Timing) -> Result<Self> {
        Self::recover_with(store, timing, Access::default()).await
    }

    /// [`Coordinator::recover`], admitting only jobs whose storage `access` allows.
    pub async fn recover_with(store: JobStore, timing: Timing, mut access: Access) -> Result<Self> {
        access.state = base::access::normalize(&store.url()).ok();
        let records = store.load_all().await?;
        let queued = records.iter().filter(|r| r.state == State::Queued).count();
        let running = records.iter().filter(|r| r.state == State::Running).count();
        tracing::info!(store = %store.url(), jobs = records.len(), queued, running, "job store loaded");
        // The core counts into the store's telemetry: one set of metrics for both.
        let environment = Environment {
            telemetry: store.telemetry().clone(),
            ..Environment::default()
        };
        let core = Core::recover_with(timing, records, Instant::now(), environment);
        let (generation, _) = watch::channel(core.generation());
        let coordinator = Self {
            inner: Arc::new(Inner {
                core: Mutex::new(core),
                store,
                watchers: Mutex::default(),
                generation,
                access,
                datasets: DatasetCache::default(),
                feed: broadcast::channel(FEED_BUFFER).0,
            }),
        };
        let staged = coordinator.stage(&mut coordinator.lock(), None);
        coordinator.settle(staged).await?;
        Ok(coordinator)
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        self.inner.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The job store.
    pub fn store(&self) -> &JobStore {
        &self.inner.store
    }

    /// Reads the core under its lock (keep `read` quick: no I/O).
    pub fn read<T>(&self, read: impl FnOnce(&Core) -> T) -> T {
        read(&self.lock())
    }

    /// Every job's events, from now on, once their records are stored.
    pub fn feed(&self) -> broadcast::Receiver<Arc<FeedEvent>> {
        self.inner.feed.subscribe()
    }

    /// The core's scheduling generation: it moves when what queued jobs wait for may have changed.
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// Takes what the core left in its outbox (under its lock; no I/O): stages each touched
    /// record once, as it is now, and `reveals`, a job whose state an answer discloses, to
    /// be stored before the answer goes.
    fn stage(&self, core: &mut Core, reveals: Option<&str>) -> Staged {
        let drained = core.drain();
        let mut writes: Vec<(String, u64)> = Vec::new();
        // Each state of a record in the outbox raised its version by one: the last is the
        // record's version now.
        let mut states: HashMap<&str, u64> = HashMap::new();
        for event in &drained {
            if let Event::Job(id, _) = event {
                *states.entry(id).or_default() += 1;
            }
        }
        let mut events = Vec::with_capacity(drained.len());
        for event in &drained {
            let mut version = 0;
            if let Event::Job(id, _) = event
                && let Ok(record) = core.job(id)
            {
                let left = states.get_mut(id.as_str()).expect("counted");
                *left -= 1;
                version = record.version - *left;
                if !writes.iter().any(|(w, _)| w == id) {
                    writes.push((id.clone(), self.inner.store.stage(record)));
                }
            }
            events.push(version);
        }
        let events = events.into_iter().zip(drained).collect();
        if let Some(id) = reveals
            && !writes.iter().any(|(w, _)| w == id)
            && let Ok(record) = core.job(id)
        {
            writes.push((id.to_string(), record.version));
        }
        Staged {
            writes,
            events,
            generation: core.generation(),
        }
    }

    /// Stores what a call staged (outside the core's lock), then publishes its events to the
    /// watchers. Every record is attempted; the first failure is returned, after the events
    /// went out (the core changed either way).
    async fn settle(&self, staged: Staged) -> Result<()> {
        let mut first_error = None;
        for (id, version) in &staged.writes {
            if let Err(e) = self.inner.store.flush(id, *version).await {
                tracing::error!(job_id = %id, error = %e, "job record not saved");
                first_error.get_or_insert(e);
            }
        }
        if !staged.events.is_empty() {
            let watchers = self.inner.watchers.lock().unwrap_or_else(PoisonError::into_inner);
            for (version, event) in staged.events {
                let (id, event) = match event {
                    Event::Job(id, job) => (id, pb::job_event::Event::Job(*job)),
                    Event::Metrics(id, m) => (id, pb::job_event::Event::Metrics(m)),
                    Event::Checkpoint(id, c) => (id, pb::job_event::Event::Checkpoint(c)),
                };
                if self.inner.feed.receiver_count() > 0 {
                    let _ = self.inner.feed.send(Arc::new(FeedEvent {
                        job_id: id.clone(),
                        event: event.clone(),
                    }));
                }
                if let Some(sender) = watchers.get(&id) {
                    // No receivers is fine: the last watcher just left.
                    let _ = sender.send(Arc::new(Update { version, event }));
                }
            }
        }
        self.inner.generation.send_if_modified(|g| {
            let newer = *g < staged.generation;
            *g = (*g).max(staged.generation);
            newer
        });
        first_error.map_or(Ok(()), Err)
    }

    /// Runs `call` on the core under its lock, then stores and publishes what it changed.
    pub(crate) async fn apply<T>(&self, call: impl FnOnce(&mut Core) -> Result<T>) -> Result<T> {
        let (result, staged) = {
            let mut core = self.lock();
            let result = call(&mut core);
            (result, self.stage(&mut core, None))
        };
        self.settle(staged).await?;
        result
    }

    /// Periodic work (lost workers, restarts, scheduling).
    pub async fn tick(&self) -> Result<()> {
        self.apply(|core| {
            core.tick(Instant::now());
            Ok(())
        })
        .await
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
        if let Err(e) = base::Location::check(&config.output.url)
            && !config.output.url.trim().is_empty()
        {
            problems.push(format!("output.url: {}", base::error_chain(&e)));
        }
        if parsed && !config.data.url.trim().is_empty() {
            match tokio::time::timeout(DATASET_TIMEOUT, self.inner.datasets.open(&config.data.url)).await {
                Err(_) => problems.push(format!(
                    "data.url: the dataset at {} did not answer within {} s",
                    config.data.url,
                    DATASET_TIMEOUT.as_secs()
                )),
                Ok(Err(e)) => problems.push(format!("data.url: cannot open the dataset: {}", base::error_chain(&e))),
                Ok(Ok(dataset)) => match config.check_dataset(&dataset) {
                    Ok(classes) if problems.is_empty() => {
                        let channels = u64::from(dataset.manifest().image.channels);
                        let estimate = config.memory_estimate(channels, classes.len() as u64);
                        memory_bytes = estimate.bytes;
                        let largest = self.lock().largest_worker_memory();
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

/// Jobs in one answer of ListJobs when the request does not say, and at most.
const PAGE_SIZE: (u32, u32) = (100, 1000);
/// Jobs one ListJobs call looks at, at most: a rare filter answers short pages quickly.
const PAGE_SCAN: usize = 20_000;

impl Coordinator {
    /// One page of ListJobs.
    /// One page of ListJobs, with the versions of its records (to be stored before it goes).
    fn list_page(&self, request: &pb::ListJobsRequest) -> Result<(pb::ListJobsResponse, Vec<(String, u64)>)> {
        let mut states = Vec::new();
        for raw in &request.states {
            let state = pb::JobState::try_from(*raw)
                .ok()
                .and_then(|s| State::try_from(s).ok())
                .ok_or_else(|| Error::BadRequest(format!("states: {raw} is not a job state")))?;
            states.push(state);
        }
        let after = if request.page_token.is_empty() {
            0
        } else {
            request.page_token.parse::<u64>().map_err(|_| {
                Error::BadRequest(format!(
                    "page_token {:?} is not one this coordinator gave",
                    request.page_token
                ))
            })?
        };
        let size = match request.page_size {
            0 => PAGE_SIZE.0,
            n => n.min(PAGE_SIZE.1),
        } as usize;
        let core = self.lock();
        let (page, next) = core.page(after, size, PAGE_SCAN, |job| {
            (states.is_empty() || states.contains(&job.state))
                && (request.name.is_empty() || job.config.job.name == request.name)
        });
        let versions = page.iter().map(|j| (j.id.clone(), j.version)).collect();
        let response = pb::ListJobsResponse {
            jobs: core.views(&page),
            next_page_token: next.map(|seq| seq.to_string()).unwrap_or_default(),
        };
        Ok((response, versions))
    }

    /// Returns once these records are stored at these versions (at once, unless another call
    /// is still writing them): nothing leaves the coordinator before it is stored.
    async fn stored(&self, versions: &[(String, u64)]) -> Result<()> {
        for (id, version) in versions {
            self.inner.store.flush(id, *version).await?;
        }
        Ok(())
    }

    /// Follows job `id` for one watcher: its snapshot, then its events, skipping states older
    /// than one already sent; a queued job's derived reason is read again when scheduling moves.
    fn watch(&self, id: String) -> Result<mpsc::Receiver<Result<pb::JobEvent, Status>>> {
        let (mut events, snapshot, mut version) = {
            let core = self.lock();
            let snapshot = core.view(&id)?;
            let version = core.job(&id)?.version;
            // Subscribed under the core's lock: every change after the snapshot is published
            // to this receiver.
            let mut watchers = self.inner.watchers.lock().unwrap_or_else(PoisonError::into_inner);
            let sender = watchers
                .entry(id.clone())
                .or_insert_with(|| broadcast::channel(WATCH_BUFFER).0);
            (sender.subscribe(), snapshot, version)
        };
        let mut generation = self.inner.generation.subscribe();
        let (tx, rx) = mpsc::channel(256);
        let coordinator = self.clone();
        tokio::spawn(async move {
            let mut last = snapshot.clone();
            let mut done = last.state().is_final();
            let first = match coordinator.inner.store.flush(&id, version).await {
                Ok(()) => Ok(pb::JobEvent {
                    event: Some(pb::job_event::Event::Job(snapshot)),
                }),
                Err(e) => {
                    done = true;
                    Err(Status::from(e))
                }
            };
            if tx.send(first).await.is_err() {
                done = true;
            }
            while !done {
                let queued = last.state() == pb::JobState::Queued;
                let event = tokio::select! {
                    received = events.recv() => match received {
                        Ok(update) => {
                            if matches!(update.event, pb::job_event::Event::Job(_)) {
                                if update.version <= version {
                                    continue;
                                }
                                version = update.version;
                            }
                            update.event.clone()
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            // Too slow for every metric: resynchronise with the record.
                            let Some((job, now)) = coordinator.read_view(&id) else { break };
                            if coordinator.inner.store.flush(&id, now).await.is_err() {
                                // Not stored yet: the event that stores it follows.
                                continue;
                            }
                            version = now;
                            pb::job_event::Event::Job(job)
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    changed = generation.changed(), if queued => {
                        if changed.is_err() {
                            break;
                        }
                        // Only what it waits for can have changed; a new state comes as an event.
                        match coordinator.read_view(&id) {
                            Some((job, now)) if now == version && job.reason != last.reason => {
                                pb::job_event::Event::Job(job)
                            }
                            Some(_) => continue,
                            None => break,
                        }
                    }
                };
                if let pb::job_event::Event::Job(job) = &event {
                    done = job.state().is_final();
                    last = job.clone();
                }
                if tx.send(Ok(pb::JobEvent { event: Some(event) })).await.is_err() {
                    break;
                }
            }
            drop(events);
            let mut watchers = coordinator
                .inner
                .watchers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if watchers.get(&id).is_some_and(|s| s.receiver_count() == 0) {
                watchers.remove(&id);
            }
        });
        Ok(rx)
    }

    /// A job's view and record version, now.
    fn read_view(&self, id: &str) -> Option<(pb::Job, u64)> {
        let core = self.lock();
        Some((core.view(id).ok()?, core.job(id).ok()?.version))
    }
}

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
        let job = self
            .apply(|core| {
                if let Some(other) = core.output_in_use(&config.output.url) {
                    return Err(Error::OutputInUse {
                        url: config.output.url.clone(),
                        job: other.id.clone(),
                        state: other.state.label(),
                    });
                }
                let record = core.submit_estimated(config, memory_bytes);
                tracing::info!(job_id = %record.id, name = %record.config.job.name, workers = record.config.job.workers, "job submitted");
                core.view(&record.id)
            })
            .await?;
        Ok(Response::new(pb::SubmitJobResponse { job: Some(job) }))
    }

    async fn get_job(&self, request: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let id = &request.get_ref().id;
        let (job, version) = self
            .read_view(id)
            .ok_or_else(|| Error::JobNotFound { id: id.clone() })?;
        self.stored(&[(id.clone(), version)]).await?;
        Ok(Response::new(job))
    }

    async fn list_jobs(&self, request: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
        let (page, versions) = self.list_page(request.get_ref())?;
        self.stored(&versions).await?;
        Ok(Response::new(page))
    }

    #[tracing::instrument(skip_all, fields(job_id = %request.get_ref().id))]
    async fn cancel_job(&self, request: Request<pb::CancelJobRequest>) -> Result<Response<pb::Job>, Status> {
        let request = request.into_inner();
        let job = self
            .apply(|core| {
                core.cancel(&request.id, &request.reason)?;
                tracing::info!("job cancelled");
                core.view(&request.id)
            })
            .await?;
        Ok(Response::new(job))
    }

    type WatchJobStream = EventStream;

    async fn watch_job(&self, request: Request<pb::WatchJobRequest>) -> Result<Response<Self::WatchJobStream>, Status> {
        let rx = self.watch(request.into_inner().id)?;
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl WorkerService for Coordinator {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let (worker_id, interval) = self
            .apply(|core| Ok(core.register(request.get_ref(), Instant::now())))
            .await?;
        Ok(Response::new(pb::RegisterResponse {
            worker_id,
            heartbeat_interval_ms: interval.as_millis() as u64,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let (response, staged) = {
            let mut core = self.lock();
            let response = core.heartbeat(request.get_ref(), Instant::now());
            // An assignment goes out only once its attempt is stored, whichever call started it.
            let reveals = response.assignment.as_ref().map(|a| a.job_id.clone());
            let staged = self.stage(&mut core, reveals.as_deref());
            (response, staged)
        };
        self.settle(staged).await?;
        Ok(Response::new(response))
    }

    async fn report(&self, request: Request<pb::ReportRequest>) -> Result<Response<pb::ReportResponse>, Status> {
        let stop = self
            .apply(|core| Ok(core.report(request.get_ref(), Instant::now())))
            .await?;
        Ok(Response::new(pb::ReportResponse { stop }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str, workers: u32) -> JobConfig {
        let mut c =
            JobConfig::from_toml("[data]\nurl = \"memory://d\"\n[output]\nurl = \"memory://o\"\n", "test").unwrap();
        c.job.name = name.to_string();
        c.job.workers = workers;
        c
    }

    async fn coordinator(name: &str) -> Coordinator {
        let store = JobStore::open(&format!("memory://service-{name}/state")).unwrap();
        let timing = Timing {
            heartbeat_timeout: Duration::from_secs(30),
        };
        Coordinator::recover(store, timing).await.unwrap()
    }

    async fn submit(c: &Coordinator, name: &str, workers: u32) -> String {
        c.apply(|core| Ok(core.submit(config(name, workers)).id)).await.unwrap()
    }

    async fn list(c: &Coordinator, request: pb::ListJobsRequest) -> Result<pb::ListJobsResponse, Status> {
        c.list_jobs(Request::new(request)).await.map(Response::into_inner)
    }

    #[tokio::test]
    async fn list_jobs_pages_and_filters() {
        let c = coordinator("list").await;
        for i in 0..250 {
            submit(&c, if i % 5 == 0 { "sweep" } else { "other" }, 2).await;
        }
        let mut request = pb::ListJobsRequest {
            page_size: 100,
            ..Default::default()
        };
        let mut ids = Vec::new();
        let mut pages = 0;
        loop {
            let page = list(&c, request.clone()).await.unwrap();
            pages += 1;
            assert!(page.jobs.len() <= 100);
            ids.extend(page.jobs.into_iter().map(|j| j.id));
            if page.next_page_token.is_empty() {
                break;
            }
            request.page_token = page.next_page_token;
        }
        assert_eq!(pages, 3);
        assert_eq!(ids.len(), 250);
        assert_eq!(ids.first().unwrap(), "job-000001");
        assert_eq!(ids.last().unwrap(), "job-000250");
        // Without a size: the default page; by name and state.
        let page = list(&c, pb::ListJobsRequest::default()).await.unwrap();
        assert_eq!(page.jobs.len(), 100);
        let sweep = list(
            &c,
            pb::ListJobsRequest {
                name: "sweep".into(),
                states: vec![pb::JobState::Queued as i32],
                page_size: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(sweep.jobs.len(), 50);
        assert!(sweep.next_page_token.is_empty());
        assert!(
            sweep
                .jobs
                .iter()
                .all(|j| j.spec.as_ref().unwrap().job.as_ref().unwrap().name() == "sweep")
        );
        // Derived when read: what each waits for, and its place.
        assert_eq!(sweep.jobs[1].reason, "waiting: needs 2 workers, 0 registered");
        assert_eq!(sweep.jobs[1].queue_position, 6);
        let none = list(
            &c,
            pb::ListJobsRequest {
                states: vec![pb::JobState::Succeeded as i32],
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(none.jobs.is_empty() && none.next_page_token.is_empty());
        let bad = list(
            &c,
            pb::ListJobsRequest {
                page_token: "x".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        assert!(bad.message().contains("page_token \"x\""), "{}", bad.message());
    }

    #[tokio::test]
    async fn watchers_that_do_not_read_do_not_hold_up_reports() {
        let c = coordinator("watch").await;
        let id = submit(&c, "watched", 1).await;
        let registered = c
            .register(Request::new(pb::RegisterRequest {
                address: "a:1".into(),
                device: "cpu".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        let worker = registered.worker_id;
        let beat = c
            .heartbeat(Request::new(pb::HeartbeatRequest {
                worker_id: worker.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        let assignment = beat.assignment.expect("assigned");
        // The job's record is stored before the assignment went out.
        let stored = JobStore::open("memory://service-watch/state")
            .unwrap()
            .load_all()
            .await
            .unwrap();
        assert_eq!(stored[0].state, State::Running);
        // Many watchers, none reading.
        let mut watchers: Vec<_> = (0..200).map(|_| c.watch(id.clone()).unwrap()).collect();
        let report = |event: pb::worker_event::Event| pb::ReportRequest {
            worker_id: worker.clone(),
            job_id: id.clone(),
            attempt: assignment.attempt,
            rank: 0,
            events: vec![pb::WorkerEvent { event: Some(event) }],
        };
        for step in 1..=2000 {
            let m = pb::StepMetrics {
                step,
                ..Default::default()
            };
            let answer = c
                .report(Request::new(report(pb::worker_event::Event::Metrics(m))))
                .await
                .unwrap();
            assert!(!answer.into_inner().stop);
        }
        let finished = pb::CheckpointInfo {
            step: 2000,
            url: "memory://o/checkpoints/step-0002000".into(),
            ..Default::default()
        };
        c.report(Request::new(report(pb::worker_event::Event::Finished(finished))))
            .await
            .unwrap();
        // Each watcher, read now, saw the start, fell behind, caught up with the record, and
        // ends with the job's final state.
        for rx in watchers.iter_mut().take(3) {
            let mut last = None;
            while let Some(event) = rx.recv().await {
                if let Some(pb::job_event::Event::Job(job)) = event.unwrap().event {
                    last = Some(job);
                }
            }
            let last = last.expect("a job state");
            assert_eq!(last.state(), pb::JobState::Succeeded, "{}", last.reason);
        }
    }

    #[tokio::test]
    async fn a_watcher_of_a_queued_job_sees_what_it_waits_for_change() {
        let c = coordinator("waiting").await;
        let first = submit(&c, "a", 1).await;
        let second = submit(&c, "b", 1).await;
        let mut rx = c.watch(second.clone()).unwrap();
        let job = |event: Option<Result<pb::JobEvent, Status>>| match event.unwrap().unwrap().event {
            Some(pb::job_event::Event::Job(job)) => job,
            other => panic!("expected a job state, got {other:?}"),
        };
        let snapshot = job(rx.recv().await);
        assert_eq!(snapshot.reason, "waiting: needs 1 workers, 0 registered");
        // A worker joins and takes the first job: the second's record is not touched, but its
        // watcher hears what it waits for now.
        c.register(Request::new(pb::RegisterRequest {
            address: "a:1".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
        assert_eq!(c.lock().job(&first).unwrap().state, State::Running);
        let waiting = job(rx.recv().await);
        assert_eq!(waiting.state(), pb::JobState::Queued);
        assert_eq!(waiting.reason, "waiting for 1 idle workers (0 of 1 idle)");
        assert_eq!(waiting.queue_position, 1);
    }

    #[tokio::test]
    async fn a_stuck_write_holds_up_its_own_job_not_heartbeats() {
        let c = coordinator("stuck").await;
        let register = |name: &str| {
            c.register(Request::new(pb::RegisterRequest {
                address: format!("{name}:1"),
                ..Default::default()
            }))
        };
        // A worker too small for the pair: it stays idle.
        let small = pb::RegisterRequest {
            address: "idle:1".into(),
            memory_bytes: 1 << 20,
            ..Default::default()
        };
        let idle = c.register(Request::new(small)).await.unwrap().into_inner().worker_id;
        let other = submit(&c, "other", 5).await;
        let id = c
            .apply(|core| Ok(core.submit_estimated(config("pair", 2), 1 << 30).id))
            .await
            .unwrap();
        register("a").await.unwrap();
        // The job's store hangs (a slow bucket): the call that starts it waits for its write...
        let stuck = c.inner.store.hold_writes(&id).await;
        let mut starting = Box::pin(register("b"));
        assert!(futures::poll!(&mut starting).is_pending());
        assert_eq!(c.lock().job(&id).unwrap().state, State::Running);
        // ... while heartbeats and reads of other jobs go on, answered at their first poll.
        let beat = c.heartbeat(Request::new(pb::HeartbeatRequest {
            worker_id: idle.clone(),
            ..Default::default()
        }));
        let answer = futures::FutureExt::now_or_never(beat).expect("a heartbeat waited for the store");
        assert!(answer.unwrap().into_inner().assignment.is_none());
        let read = c.get_job(Request::new(pb::GetJobRequest { id: other.clone() }));
        let job = futures::FutureExt::now_or_never(read).expect("a read waited for another job's write");
        assert_eq!(job.unwrap().into_inner().state(), pb::JobState::Queued);
        // Nobody is told the job runs before its record says so.
        let mut reading = Box::pin(c.get_job(Request::new(pb::GetJobRequest { id: id.clone() })));
        assert!(futures::poll!(&mut reading).is_pending());
        drop(stuck);
        starting.await.unwrap();
        assert_eq!(reading.await.unwrap().into_inner().state(), pb::JobState::Running);
        let stored = JobStore::open("memory://service-stuck/state")
            .unwrap()
            .load_all()
            .await
            .unwrap();
        let record = stored.iter().find(|r| r.id == id).unwrap();
        assert_eq!(record.state, State::Running);
    }
}
