//! A training job in one process: data from a packed dataset, the WGAN-GP step, checkpoints,
//! sample grids and metrics in the job's output, and exact resume from the latest checkpoint.
//!
//! [`train`] takes a job through the phases of a `Run`: `setup` (the job's checks, its storage
//! and dataset, the device, the group of ranks, the networks), `resume` (the latest checkpoint,
//! if any), `start` (rank 0 claims the output; the loader starts), then `step` and `after_step`
//! until `train.steps`. After each step a [`Cadence`] says whether a sample grid, a checkpoint
//! or an evaluation is due, and rank 0 stores what the step produced in one pass (`Writes`).
//! The worker agent follows and stops a run through an [`Observer`].

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use base::{Location, layout};
use dataprep::{Batch, BatchStream, Classes, Dataset, LoaderOptions, Position};
use gantry_proto::pb;
use indicatif::{ProgressBar, ProgressStyle};
use tch::{Device, Tensor};
use tokio::runtime::Handle;

use crate::cadence::Cadence;
use crate::checkpoint::{self, TrainState};
use crate::collective::{self, Collective, GroupSpec, Single, Timed};
use crate::config::JobConfig;
use crate::eval::InTraining;
use crate::gan::{Gan, StepMetrics};
use crate::pixels::images_to_tensor;
use crate::samples;
use crate::tensorboard::{self, EventWriter};
use crate::torch_guard;
use crate::{Error, Result};

/// One line of `metrics.jsonl`, and what the coordinator is told of each step: the wire's
/// [`pb::StepMetrics`] (`step`, `epoch`, the four losses, `images_per_sec` since the (re)start).
pub type MetricsLine = pb::StepMetrics;

/// Where a step's wall time went, seconds.
#[derive(Debug, Clone, Copy, Default)]
struct StepTimes {
    step: f64,
    loader_wait: f64,
    collective: f64,
}

/// The metrics line of a step: its losses, where it is, the throughput so far and its timings.
fn metrics_line(step: u64, epoch: u64, losses: &StepMetrics, images_per_sec: f64, times: StepTimes) -> MetricsLine {
    MetricsLine {
        step,
        epoch,
        c_loss: losses.c_loss,
        c_wass_loss: losses.c_wass_loss,
        c_gp: losses.c_gp,
        g_loss: losses.g_loss,
        images_per_sec,
        step_seconds: times.step,
        loader_wait_seconds: times.loader_wait,
        collective_seconds: times.collective,
        evaluation: None,
    }
}

/// How long TensorBoard records wait in memory before they are stored, at most (they are also
/// stored with each checkpoint, sample grid and at the end).
const EVENTS_FLUSH: std::time::Duration = std::time::Duration::from_secs(30);

/// How a job ended.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Steps completed in total.
    pub steps: u64,
    /// The step this process resumed from (0 for a fresh run).
    pub resumed_from: u64,
    /// URL of the final checkpoint.
    pub checkpoint: String,
    /// Metrics of the last step.
    pub metrics: StepMetrics,
    /// Images per second over this process's steps.
    pub images_per_sec: f64,
    /// The device used.
    pub device: String,
}

/// Hooks into a running job: the worker agent's child process streams progress to the agent
/// through them and stops a job on its orders. Called on the thread that runs [`train`], between
/// steps; keep them quick.
pub trait Observer: Send + Sync {
    /// Training begins after step `step` (a resumed run's checkpoint step, else 0).
    fn started(&self, _step: u64) {}
    /// A step completed.
    fn step(&self, _line: &MetricsLine) {}
    /// A checkpoint was committed; rank 0 took `write_seconds` to write it (0 on other ranks).
    fn checkpoint(&self, _step: u64, _url: &str, _write_seconds: f64) {}
    /// Asked before every step: `true` ends the run with [`Error::Stopped`] (no checkpoint).
    fn should_stop(&self) -> bool {
        false
    }
    /// Asked at every step boundary: `true` on any rank (its worker is shutting down) stops
    /// every rank at the same step after rank 0 saves a checkpoint there; the run ends with
    /// [`Error::Preempted`].
    fn preempted(&self) -> bool {
        false
    }
}

/// Options of [`train`] that are not part of the job.
#[derive(Clone, Default)]
pub struct TrainOptions {
    /// Show a progress bar (otherwise progress is logged).
    pub progress: bool,
    /// Progress hooks and the stop signal.
    pub observer: Option<Arc<dyn Observer>>,
    /// This process's place in a data-parallel group, complete: on the job's device (resolved)
    /// with `train.collective_timeout_s`; None: the only rank.
    pub group: Option<GroupSpec>,
    /// Ranks of the group on this host (they share its cores when `train.threads` is 0).
    pub ranks_on_host: usize,
    /// Memory this rank may use, bytes; None: what the host has available (on the CPU).
    pub memory_limit: Option<u64>,
    /// Storage prefixes this worker lets jobs read (datasets) and write (runs, which may also
    /// be read); an empty list leaves that kind of access unrestricted.
    pub allow: Allow,
}

/// The storage a worker lets its jobs touch, checked after resolving local paths' symlinks,
/// before the job's storage is opened: a misdirected coordinator cannot send it elsewhere.
#[derive(Debug, Clone, Default)]
pub struct Allow {
    /// Prefixes datasets may be read from.
    pub read: base::access::Prefixes,
    /// Prefixes runs may be written into.
    pub write: base::access::Prefixes,
}

impl Allow {
    /// Refuses a job whose `data.url` or `output.url` falls outside the lists.
    pub fn check(&self, config: &JobConfig) -> Result<()> {
        base::access::check_job(&self.read, &self.write, &config.data.url, &config.output.url, true).map_err(|r| {
            Error::Denied {
                message: r.message(base::access::Guard::Worker),
            }
        })
    }
}

impl std::fmt::Debug for TrainOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainOptions")
            .field("progress", &self.progress)
            .field("observer", &self.observer.is_some())
            .field("group", &self.group)
            .field("ranks_on_host", &self.ranks_on_host)
            .field("memory_limit", &self.memory_limit)
            .field("allow", &self.allow)
            .finish()
    }
}

impl TrainOptions {
    /// A bar when stderr is a terminal.
    pub fn from_terminal() -> Self {
        Self {
            progress: std::io::stderr().is_terminal(),
            ..Self::default()
        }
    }
}

/// The observer that sees nothing and never stops.
struct Unobserved;

impl Observer for Unobserved {}

/// Checks that a checkpoint was made by a run this config can continue.
fn check_resumable(config: &JobConfig, state: &TrainState, url: &str) -> Result<()> {
    let (a, b) = (&config.model, &state.config.model);
    let mut differences = Vec::new();
    if a != b {
        differences.push(format!("[model] {b:?} -> {a:?}"));
    }
    if config.data.url != state.config.data.url || config.data.condition != state.config.data.condition {
        differences.push("[data] url or condition".to_string());
    }
    if config.train.batch_size != state.config.train.batch_size || config.train.seed != state.config.train.seed {
        differences.push("train.batch_size or train.seed".to_string());
    }
    if differences.is_empty() {
        Ok(())
    } else {
        Err(Error::Checkpoint {
            url: url.to_string(),
            message: format!(
                "made by a different job ({}); resume with the same settings or use a new output.url",
                differences.join("; ")
            ),
        })
    }
}

/// The per-step random seed of a rank: everything random in step `step` on rank `rank`
/// (latents, interpolation weights, dropout) depends on (seed, step, rank) only, so a resumed
/// run draws exactly what an uninterrupted one would.
pub fn step_seed(seed: u64, step: u64, rank: usize) -> i64 {
    base::seed::mix(&[seed, step, base::seed::tag::STEP, rank as u64]) as i64
}

/// Refuses a job whose estimated memory ([`gantry_job::memory`]) exceeds `limit`, or on the
/// CPU without a limit, the memory the host has available, before anything is allocated.
fn check_memory(config: &JobConfig, channels: i64, classes: i64, device: Device, limit: Option<u64>) -> Result<()> {
    let estimate = config.memory_estimate(channels as u64, classes as u64);
    let (available, whose) = match (limit, device) {
        (Some(limit), _) => (limit, "this worker's --memory-limit is"),
        (None, Device::Cpu) => match crate::device::available_memory() {
            Some(bytes) => (bytes, "this host has available"),
            None => return Ok(()),
        },
        // Without a limit a CUDA device's size is not known here; the allocator reports a
        // failure as an error (below).
        (None, _) => return Ok(()),
    };
    match config.memory_problem(&estimate, available, whose) {
        Some(message) => Err(Error::TooLarge { message }),
        None => Ok(()),
    }
}

/// How long ranks wait at the barrier after work only rank 0 does (checkpoints, samples): a
/// slow bucket must not fail a healthy gang.
pub const RANK0_WORK_WAIT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Runs a job to `train.steps`, resuming from the latest checkpoint in the output if there is one.
/// Blocks the calling thread, which must not be one of `runtime`'s: storage I/O and the data
/// loader run on `runtime`, the step on this thread.
pub fn train(config: &JobConfig, options: &TrainOptions, runtime: &Handle) -> Result<TrainSummary> {
    let mut run = Run::setup(config, options, runtime)?;
    run.resume()?;
    let mut batches = run.start(options.progress)?;
    while run.step < config.train.steps {
        run.stop_if_asked()?;
        let step_started = Instant::now();
        run.ranks.take_spent();
        run.preempt_if_asked()?;
        let waiting = Instant::now();
        let batch = match batches.blocking_next() {
            Some(batch) => batch?,
            // The stream ends only when its runtime shuts down.
            None => return Err(dataprep::Error::Interrupted.into()),
        };
        let loader_wait = waiting.elapsed().as_secs_f64();
        let line = run.step(&batch, step_started, loader_wait)?;
        run.after_step(line)?;
    }
    run.finish()
}

/// A job in this process: what [`train`] sets up once and carries from step to step.
struct Run<'a> {
    config: &'a JobConfig,
    runtime: &'a Handle,
    observer: Arc<dyn Observer>,
    output: Location,
    dataset: Dataset,
    classes: Classes,
    channels: i64,
    device: Device,
    ranks: Timed,
    rank: usize,
    world_size: usize,
    gan: Gan,
    cadence: Cadence,
    /// Rank 0's evaluations (its classifier kept between them).
    evaluation: InTraining,
    /// Rank 0's TensorBoard records; None on the other ranks.
    events: Option<EventWriter>,
    /// The latent vectors of the sample grids.
    latents: Tensor,
    progress: Progress,
    /// Steps completed.
    step: u64,
    /// The data position after the last step.
    position: Position,
    /// Metrics of the last step.
    metrics: Option<StepMetrics>,
    /// The lines of `metrics.jsonl` so far.
    lines: Vec<String>,
    /// The newest checkpoint: its step and URL.
    saved: Option<(u64, String)>,
    /// The step this process started from (a resumed run's checkpoint step, else 0).
    resumed_from: u64,
    /// When the steps began.
    started: Instant,
}

/// What rank 0 stores in one pass, in this order: the step's sample grid, `metrics.jsonl`, a
/// checkpoint of the step, the TensorBoard records waiting in memory.
#[derive(Debug, Default)]
struct Writes {
    /// The sample grid, PNG.
    sample: Option<Vec<u8>>,
    /// Rewrite `metrics.jsonl`.
    metrics: bool,
    /// Commit a checkpoint.
    checkpoint: bool,
    /// Store the TensorBoard records.
    events: bool,
}

impl<'a> Run<'a> {
    /// Checks the job (its settings, the storage this worker allows, its dataset, the memory it
    /// needs), opens its dataset, joins its group of ranks and builds the networks.
    fn setup(config: &'a JobConfig, options: &TrainOptions, runtime: &'a Handle) -> Result<Self> {
        config.validate()?;
        options.allow.check(config)?;
        let output = Location::parse(&config.output.url)?;
        let dataset = runtime.block_on(Dataset::open(&config.data.url))?;
        let classes = config.check_dataset(&dataset)?;
        // Rank 0 evaluates every train.eval_every steps (its classifier kept between evaluations).
        let evaluation = InTraining::new(config, &dataset)?;
        let device = crate::device::resolve(config.train.device)?;
        let threads = match config.train.threads {
            0 if options.ranks_on_host > 1 => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                (cores / options.ranks_on_host).max(1) as i32
            }
            n => n,
        };
        if threads > 0 {
            tch::set_num_threads(threads);
        }
        let ranks = Timed::new(match &options.group {
            Some(spec) => collective::connect(spec)?,
            None => Box::new(Single),
        });
        let (rank, world_size) = (ranks.rank(), ranks.world_size());
        if world_size != config.job.workers as usize {
            return Err(gantry_job::JobError::Invalid {
                problems: vec![format!(
                    "job.workers is {} but {world_size} rank(s) run it",
                    config.job.workers
                )],
            }
            .into());
        }
        let channels = i64::from(dataset.manifest().image.channels);
        check_memory(config, channels, classes.len() as i64, device, options.memory_limit)?;
        let gan = torch_guard::catch("building the model", || {
            Gan::for_job(config, channels, classes.len() as i64, device)
        })?;
        let latents = samples::fixed_latents(config.train.seed, config.train.sample_rows, config.model.z_dim);
        Ok(Self {
            config,
            runtime,
            observer: options.observer.clone().unwrap_or_else(|| Arc::new(Unobserved)),
            output,
            dataset,
            classes,
            channels,
            device,
            ranks,
            rank,
            world_size,
            gan,
            cadence: Cadence::new(&config.train),
            evaluation,
            events: None,
            latents,
            progress: Progress::new(false, config.train.steps, 0),
            step: 0,
            position: Position::default(),
            metrics: None,
            lines: Vec::new(),
            saved: None,
            resumed_from: 0,
            started: Instant::now(),
        })
    }

    /// Rank 0 alone writes the job's output.
    fn writer(&self) -> bool {
        self.rank == 0
    }

    /// Continues from the newest checkpoint in the output, if there is one: its networks and
    /// optimisers, step, data position and metrics lines. A checkpoint of another job, or of a
    /// group of another size, is refused.
    fn resume(&mut self) -> Result<()> {
        let output = &self.output;
        let found = self.runtime.block_on(async {
            let Some(folder) = checkpoint::latest(output).await? else {
                return Ok::<_, Error>(None);
            };
            let ckpt = checkpoint::load(&folder).await?;
            let metrics_file = output.get_opt(layout::METRICS_FILE).await?;
            Ok(Some((ckpt, metrics_file)))
        })?;
        let Some((ckpt, metrics_file)) = found else {
            return Ok(());
        };
        check_resumable(self.config, &ckpt.state, &ckpt.url)?;
        let world_size = self.world_size;
        if ckpt.state.world_size != world_size as u64 {
            // Each rank's data position and randomness depend on the world size.
            return Err(ckpt.error(format!(
                "written by a run of {} rank(s), and this run has {world_size}; resume with job.workers = {} or use a new output.url",
                ckpt.state.world_size, ckpt.state.world_size
            )));
        }
        ckpt.restore(&mut self.gan)?;
        let step = ckpt.state.step;
        self.step = step;
        self.position = ckpt.state.position;
        self.metrics = ckpt.state.metrics;
        if let Some(previous) = metrics_file {
            self.lines = String::from_utf8_lossy(&previous)
                .lines()
                .filter(|l| serde_json::from_str::<MetricsLine>(l).is_ok_and(|m| m.step <= step))
                .map(str::to_string)
                .collect();
        }
        tracing::info!(checkpoint = %ckpt.url, step, "resuming");
        self.saved = Some((step, ckpt.url));
        Ok(())
    }

    /// Makes every rank's networks rank 0's, lets rank 0 claim the output and record the
    /// resolved config, and starts the data loader at the run's position.
    fn start(&mut self, show_progress: bool) -> Result<BatchStream> {
        let config = self.config;
        self.resumed_from = self.step;
        self.gan.broadcast_from_rank0(&mut self.ranks)?;
        if self.writer() {
            let output = &self.output;
            self.runtime.block_on(async {
                // Only into an empty prefix or a run of ours (the marker goes first, so an
                // interrupted run resumes); runs from before the marker are known by their
                // checkpoints.
                let legacy = |name: &str| name == layout::CHECKPOINTS;
                base::access::claim(output, base::access::RUN_MARKER, legacy, false).await?;
                output.put(layout::CONFIG_FILE, config.to_toml().into_bytes()).await
            })?;
            self.events = Some(EventWriter::new(&self.output, EVENTS_FLUSH));
        }
        let loader = self.dataset.loader(LoaderOptions {
            split: Some(config.data.split),
            batch_size: (config.train.batch_size / self.world_size as i64) as usize,
            seed: config.train.seed,
            shuffle: true,
            shuffle_window: config.data.shuffle_window,
            rank: self.rank,
            world_size: self.world_size,
            prefetch: 4,
            condition: Some(config.data.condition.clone()),
        })?;
        let batches = {
            let _guard = self.runtime.enter();
            loader.stream(self.position)
        };
        self.progress = Progress::new(show_progress, config.train.steps, self.step);
        self.started = Instant::now();
        self.observer.started(self.step);
        Ok(batches)
    }

    /// Ends the run here when it is asked to stop ([`Error::Stopped`], no checkpoint).
    fn stop_if_asked(&self) -> Result<()> {
        if self.observer.should_stop() {
            self.progress.abandon();
            tracing::info!(step = self.step, "stopped on request");
            return Err(Error::Stopped { step: self.step });
        }
        Ok(())
    }

    /// Ends the run at this step boundary when any rank is shutting down
    /// ([`Error::Preempted`]): rank 0 saves a checkpoint of the step unless it has one, and no
    /// rank reports the end before that checkpoint is committed.
    fn preempt_if_asked(&mut self) -> Result<()> {
        if !any_rank(&mut self.ranks, self.world_size, self.observer.preempted(), self.device)? {
            return Ok(());
        }
        self.progress.abandon();
        let step = self.step;
        let saved_here = self
            .saved
            .as_ref()
            .filter(|(at, _)| *at == step)
            .map(|(_, url)| url.clone());
        let already = saved_here.is_some();
        let checkpoint = match saved_here {
            Some(url) => Some(url),
            None if step == 0 => None,
            None => {
                let (url, _) = self.commit(Writes {
                    metrics: true,
                    checkpoint: true,
                    events: true,
                    ..Writes::default()
                })?;
                Some(url)
            }
        };
        if let Some(url) = checkpoint.as_deref().filter(|_| !already) {
            self.observer.checkpoint(step, url, 0.0);
        }
        if self.world_size > 1 {
            // No rank reports the end before rank 0's checkpoint is committed.
            self.ranks.barrier(RANK0_WORK_WAIT)?;
        }
        tracing::info!(step, checkpoint = ?checkpoint, "preempted: stopped after saving");
        Err(Error::Preempted { step, checkpoint })
    }

    /// Takes the next step on `batch`, this rank's share of the global batch, with everything
    /// random drawn from (seed, step, rank); returns its metrics line, timed from
    /// `step_started`. A loss that is NaN or infinite ends the run ([`Error::NonFinite`]).
    fn step(&mut self, batch: &Batch, step_started: Instant, loader_wait: f64) -> Result<MetricsLine> {
        let size = self.config.model.image_size;
        let real = images_to_tensor(&batch.pixels, batch.len as i64, size, self.channels, self.device);
        let labels = Tensor::from_slice(&batch.classes).to_device(self.device);
        tch::manual_seed(step_seed(self.config.train.seed, self.step + 1, self.rank));
        let (gan, ranks) = (&mut self.gan, &mut self.ranks);
        let m = torch_guard::catch(&format!("step {}", self.step + 1), || {
            gan.step(&real, &labels, ranks).map(|t| Gan::read_metrics(&t))
        })??;
        self.step += 1;
        self.position = batch.next;
        if let Some((metric, value)) = m.non_finite() {
            self.progress.abandon();
            let last_good = match &self.saved {
                Some((_, url)) => format!("the last good checkpoint is {url}"),
                None => "no checkpoint was written yet".to_string(),
            };
            return Err(Error::NonFinite {
                metric,
                value,
                step: self.step,
                last_good,
            });
        }
        self.metrics = Some(m);
        let images_per_sec = ((self.step - self.resumed_from) as f64 * (batch.len * self.world_size) as f64)
            / self.started.elapsed().as_secs_f64().max(1e-9);
        let times = StepTimes {
            step: step_started.elapsed().as_secs_f64(),
            loader_wait,
            collective: self.ranks.take_spent().as_secs_f64(),
        };
        Ok(metrics_line(self.step, batch.epoch, &m, images_per_sec, times))
    }

    /// What follows a step: rank 0's evaluation when one is due (its figures go into the
    /// step's line); the line kept, reported and recorded; the progress; then what the cadence
    /// asks for: rank 0 renders the sample grid and stores it, the metrics file and the
    /// checkpoint in one pass, while the other ranks wait at a barrier.
    fn after_step(&mut self, mut line: MetricsLine) -> Result<()> {
        let step = self.step;
        let due = self.cadence.at(step);
        let writer = self.writer();
        if writer && due.evaluate {
            line.evaluation =
                Some(
                    self.evaluation
                        .run(self.config, &self.dataset, &self.output, &self.gan, step, self.runtime)?,
                );
        }
        self.lines
            .push(serde_json::to_string(&line).expect("metrics serialise"));
        self.observer.step(&line);
        if let Some(events) = self.events.as_mut() {
            events.scalars(step, &tensorboard::step_scalars(&line));
        }
        self.progress.show(&line);
        let mut writes = Writes {
            sample: None,
            metrics: due.checkpoint,
            checkpoint: due.checkpoint,
            events: due.any() || self.events.as_ref().is_some_and(EventWriter::flush_due),
        };
        if writer && due.sample {
            let png = samples::label_swap_grid(&self.gan, &self.latents, &self.classes.names);
            if let Some(events) = self.events.as_mut() {
                events.png(step, "samples", &png)?;
            }
            writes.sample = Some(png);
        }
        if due.checkpoint {
            let (url, write_seconds) = self.commit(writes)?;
            if writer {
                tracing::info!(step, checkpoint = %url, "checkpoint written");
            }
            self.observer.checkpoint(step, &url, write_seconds);
            self.saved = Some((step, url));
        } else {
            self.store(writes)?;
        }
        if self.world_size > 1 && due.any() {
            // The others wait here, not in the next exchange, while rank 0 writes.
            self.ranks.barrier(RANK0_WORK_WAIT)?;
        }
        Ok(())
    }

    /// Stores `writes`, a checkpoint among them; returns the checkpoint's URL (on every rank:
    /// the others name the folder rank 0 writes) and the seconds rank 0 took to write it with
    /// the metrics file (0 on the other ranks).
    fn commit(&mut self, writes: Writes) -> Result<(String, f64)> {
        let written = self.store(writes)?;
        Ok(written.unwrap_or_else(|| (checkpoint::folder_url(&self.output, self.step), 0.0)))
    }

    /// Stores `writes` on rank 0 in one pass over storage (nothing on the other ranks); returns
    /// the URL of the checkpoint written, if any, and the seconds it took with the metrics file.
    fn store(&mut self, writes: Writes) -> Result<Option<(String, f64)>> {
        if !self.writer() {
            return Ok(None);
        }
        let step = self.step;
        let metrics = writes.metrics.then(|| (self.lines.join("\n") + "\n").into_bytes());
        let state = writes.checkpoint.then(|| self.state());
        let (output, gan, events) = (&self.output, &self.gan, self.events.as_mut());
        self.runtime.block_on(async move {
            if let Some(png) = writes.sample {
                let name = format!("{}/{}", layout::SAMPLES, layout::sample_file(step));
                output.put(&name, png).await?;
            }
            let writing = Instant::now();
            if let Some(metrics) = metrics {
                output.put(layout::METRICS_FILE, metrics).await?;
            }
            let mut written = None;
            if let Some(state) = state {
                let url = checkpoint::save(output, checkpoint_files(gan)?, &state).await?;
                written = Some((url, writing.elapsed().as_secs_f64()));
            }
            if let Some(events) = events.filter(|_| writes.events) {
                events.flush().await?;
            }
            Ok(written)
        })
    }

    /// The non-tensor state of a checkpoint of the current step.
    fn state(&self) -> TrainState {
        TrainState {
            step: self.step,
            position: self.position,
            seed: self.config.train.seed,
            channels: self.channels,
            classes: self.classes.names.clone(),
            metrics: self.metrics,
            config: self.config.clone(),
            world_size: self.world_size as u64,
        }
    }

    /// The summary of a run that reached `train.steps`.
    fn finish(mut self) -> Result<TrainSummary> {
        self.progress.finish();
        let step = self.step;
        let images_per_sec = ((step - self.resumed_from) as f64 * self.config.train.batch_size as f64)
            / self.started.elapsed().as_secs_f64().max(1e-9);
        let checkpoint = match self.saved.take() {
            Some((_, url)) => url,
            // Every step the run takes ends with a checkpoint at the last; this is a safety net.
            None => {
                self.commit(Writes {
                    checkpoint: true,
                    ..Writes::default()
                })?
                .0
            }
        };
        let nan = StepMetrics {
            c_loss: f64::NAN,
            c_wass_loss: f64::NAN,
            c_gp: f64::NAN,
            g_loss: f64::NAN,
        };
        Ok(TrainSummary {
            steps: step,
            resumed_from: self.resumed_from,
            checkpoint,
            metrics: self.metrics.unwrap_or(nan),
            images_per_sec,
            device: crate::device::device_name(self.device),
        })
    }
}

/// The tensor files of a checkpoint: the generator, the critic and both optimisers.
fn checkpoint_files(gan: &Gan) -> Result<Vec<(&'static str, Vec<u8>)>> {
    Ok(vec![
        (
            checkpoint::GENERATOR,
            checkpoint::to_safetensors(gan.generator_tensors().iter())?,
        ),
        (
            checkpoint::CRITIC,
            checkpoint::to_safetensors(gan.critic_tensors().iter())?,
        ),
        (
            checkpoint::OPTIMIZER,
            checkpoint::to_safetensors(gan.optimizer_tensors().iter().map(|(n, t)| (n, t)))?,
        ),
    ])
}

/// How a run shows its progress: a bar on a terminal, else a log line at most every 10 seconds.
struct Progress {
    bar: ProgressBar,
    total: u64,
    last_log: Instant,
}

impl Progress {
    /// A bar at step `at` of `total` when `show`, else log lines.
    fn new(show: bool, total: u64, at: u64) -> Self {
        let bar = if show {
            let bar = ProgressBar::new(total).with_position(at);
            bar.set_style(
                ProgressStyle::with_template("step {pos}/{len} {bar:30} eta {eta}  {msg}").expect("valid template"),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        Self {
            bar,
            total,
            last_log: Instant::now(),
        }
    }

    /// Shows a step's metrics line.
    fn show(&mut self, line: &MetricsLine) {
        self.bar.set_position(line.step);
        self.bar.set_message(format!(
            "{:.1} img/s  c_loss {:.3}  c_wass {:.3}  c_gp {:.3}  g_loss {:.3}",
            line.images_per_sec, line.c_loss, line.c_wass_loss, line.c_gp, line.g_loss
        ));
        if self.bar.is_hidden() && self.last_log.elapsed().as_secs() >= 10 {
            self.last_log = Instant::now();
            tracing::info!(
                step = line.step,
                total = self.total,
                images_per_sec = line.images_per_sec,
                c_loss = line.c_loss,
                c_wass_loss = line.c_wass_loss,
                c_gp = line.c_gp,
                g_loss = line.g_loss,
                "training"
            );
        }
    }

    /// Leaves the bar where it is (the run ended early).
    fn abandon(&self) {
        self.bar.abandon();
    }

    /// Clears the bar (the run is done).
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Whether any rank of the group says yes; every rank gets the same answer at the same step
/// (one scalar all-reduce, nothing with a single rank).
fn any_rank(ranks: &mut dyn Collective, world_size: usize, mine: bool, device: Device) -> Result<bool> {
    if world_size == 1 {
        return Ok(mine);
    }
    let flag = Tensor::from_slice(&[if mine { 1f32 } else { 0f32 }]).to_device(device);
    ranks.all_reduce_mean(&[&flag])?;
    Ok(flag.double_value(&[0]) > 0.0)
}
