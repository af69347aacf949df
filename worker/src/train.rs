//! A training job in one process: data from a packed dataset, the WGAN-GP step, checkpoints,
//! sample grids and metrics in the job's output, and exact resume from the latest checkpoint.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use dataprep::{Dataset, LoaderOptions, Location, Position};
use gantry_proto::pb;
use indicatif::{ProgressBar, ProgressStyle};
use tch::{Device, Kind, Tensor};
use tokio::runtime::Handle;

use crate::adam::AdamConfig;
use crate::checkpoint::{self, TrainState};
use crate::collective::{self, Collective, GroupSpec, Single, Timed};
use crate::config::JobConfig;
use crate::gan::{Gan, StepConfig, StepMetrics};
use crate::model::ModelSpec;
use crate::samples;
use crate::tensorboard::{self, EventWriter};
use crate::{Error, Result};

/// File of the resolved config in a job output.
pub const CONFIG_FILE: &str = "config.toml";
/// File of the per-step metrics (JSON lines) in a job output.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Builds the networks a config describes, for a dataset with `channels` and `classes`.
pub fn build_gan(config: &JobConfig, channels: i64, classes: i64, device: Device) -> Gan {
    let m = &config.model;
    let t = &config.train;
    let spec = ModelSpec {
        image_size: m.image_size,
        channels,
        classes,
        z_dim: m.z_dim,
        width: m.width,
        dropout: m.dropout,
    };
    let adam = AdamConfig {
        lr: t.lr,
        beta1: t.beta1,
        beta2: t.beta2,
        eps: t.adam_eps,
    };
    let step = StepConfig {
        critic_steps: t.critic_steps,
        gp_weight: t.gp_weight,
    };
    Gan::new(spec, device, adam, step, t.seed)
}

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

/// Hooks into a running job: the worker agent streams progress to the coordinator through them
/// and stops a job on its orders. Called on the training thread; keep them quick.
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
    pub read: dataprep::access::Prefixes,
    /// Prefixes runs may be written into.
    pub write: dataprep::access::Prefixes,
}

impl Allow {
    /// Refuses a job whose `data.url` or `output.url` falls outside the lists.
    pub fn check(&self, config: &JobConfig) -> Result<()> {
        dataprep::access::check_job(&self.read, &self.write, &config.data.url, &config.output.url, true).map_err(|r| {
            Error::Denied {
                message: format!(
                    "{} {} is outside the prefixes this worker lets jobs {}: {}",
                    r.key, r.url, r.verb, r.allowed
                ),
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

/// Images u8 NHWC -> float NCHW in [-1, 1] on `device`, as `(x - 127.5) / 127.5`.
pub fn images_to_tensor(pixels: &[u8], batch: i64, size: i64, channels: i64, device: Device) -> Tensor {
    let x = Tensor::from_slice(pixels)
        .view([batch, size, size, channels])
        .to_device(device);
    (x.permute([0, 3, 1, 2]).to_kind(Kind::Float) - 127.5) / 127.5
}

/// The per-step random seed of a rank: everything random in step `step` on rank `rank`
/// (latents, interpolation weights, dropout) depends on (seed, step, rank) only, so a resumed
/// run draws exactly what an uninterrupted one would.
pub fn step_seed(seed: u64, step: u64, rank: usize) -> i64 {
    dataprep::reader::mix(&[seed, step, 0x57E9, rank as u64]) as i64
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

/// Runs `f`, turning a libtorch panic (tch's infallible calls panic on errors, allocation
/// failures included) into [`Error::Allocation`] naming `during` and libtorch's message.
fn catch_allocation<T>(during: &str, f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| Error::Allocation {
        during: during.to_string(),
        message: libtorch_message(
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic without a message"),
        ),
    })
}

/// The first line of a libtorch error out of a tch panic's text (`called Result::unwrap() on
/// an Err value: Torch("[enforce fail ...] DefaultCPUAllocator: can't allocate memory: you tried
/// to allocate 33554432 bytes. ...\nframe #0: ...")`), without the C++ stack.
pub fn libtorch_message(panic: &str) -> String {
    let text = panic.split_once("Torch(\"").map_or(panic, |(_, inner)| inner);
    let first = text.split("\\n").next().unwrap_or(text);
    let first = first.lines().next().unwrap_or(first);
    // `[enforce fail at alloc_cpu.cpp:127] err == 0. ` is libtorch's location, not the news.
    let first = match first.find("] ") {
        Some(i) if first.starts_with('[') => first[i + 2..].trim_start_matches("err == 0. "),
        _ => first,
    };
    first.strip_suffix("\")").unwrap_or(first).to_string()
}

/// How long ranks wait at the barrier after work only rank 0 does (checkpoints, samples): a
/// slow bucket must not fail a healthy gang.
pub const RANK0_WORK_WAIT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Runs a job to `train.steps`, resuming from the latest checkpoint in the output if there is one.
/// Blocks the calling thread, which must not be one of `runtime`'s: storage I/O and the data
/// loader run on `runtime`, the step on this thread.
pub fn train(config: &JobConfig, options: &TrainOptions, runtime: &Handle) -> Result<TrainSummary> {
    config.validate()?;
    options.allow.check(config)?;
    let output = Location::parse(&config.output.url)?;
    let dataset = runtime.block_on(Dataset::open(&config.data.url))?;
    let classes = config.check_dataset(&dataset)?;
    // Rank 0 evaluates every train.eval_every steps (its classifier kept between evaluations).
    let mut evaluation = crate::eval::InTraining::new(config, &dataset)?;
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
    let mut ranks = Timed::new(match &options.group {
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
    let rank_batch = config.train.batch_size / world_size as i64;
    let channels = i64::from(dataset.manifest().image.channels);
    check_memory(config, channels, classes.len() as i64, device, options.memory_limit)?;
    let mut gan = catch_allocation("building the model", || {
        build_gan(config, channels, classes.len() as i64, device)
    })?;

    let mut step = 0u64;
    let mut position = Position::default();
    let mut last_checkpoint: Option<String> = None;
    // The step of `last_checkpoint`.
    let mut saved_at = None;
    let mut metrics = None;
    let mut lines: Vec<String> = Vec::new();
    if let Some(folder) = runtime.block_on(checkpoint::latest(&output))? {
        let ckpt = runtime.block_on(checkpoint::load(&folder))?;
        check_resumable(config, &ckpt.state, &ckpt.url)?;
        let bad = |message: String| Error::Checkpoint {
            url: ckpt.url.clone(),
            message,
        };
        if ckpt.state.world_size != world_size as u64 {
            // Each rank's data position and randomness depend on the world size.
            return Err(bad(format!(
                "written by a run of {} rank(s), and this run has {world_size}; resume with job.workers = {} or use a new output.url",
                ckpt.state.world_size, ckpt.state.world_size
            )));
        }
        gan.load_generator(&ckpt.generator).map_err(bad)?;
        gan.load_critic(&ckpt.critic).map_err(bad)?;
        gan.load_optimizers(&ckpt.optimizer).map_err(bad)?;
        step = ckpt.state.step;
        position = ckpt.state.position;
        metrics = ckpt.state.metrics;
        if let Some(previous) = runtime.block_on(output.get_opt(METRICS_FILE))? {
            lines = String::from_utf8_lossy(&previous)
                .lines()
                .filter(|l| serde_json::from_str::<MetricsLine>(l).is_ok_and(|m| m.step <= step))
                .map(str::to_string)
                .collect();
        }
        tracing::info!(checkpoint = %ckpt.url, step, "resuming");
        last_checkpoint = Some(ckpt.url);
        saved_at = Some(step);
    }
    let resumed_from = step;
    gan.broadcast_from_rank0(&mut ranks)?;
    let observer: Arc<dyn Observer> = options.observer.clone().unwrap_or_else(|| Arc::new(Unobserved));
    // Rank 0 alone writes the job's output.
    let writer = rank == 0;
    if writer {
        // Only into an empty prefix or a run of ours (the marker goes first, so an interrupted
        // run resumes); runs from before the marker are known by their checkpoints.
        let legacy = |name: &str| name == checkpoint::CHECKPOINTS;
        runtime.block_on(dataprep::access::claim(
            &output,
            dataprep::access::RUN_MARKER,
            legacy,
            false,
        ))?;
        runtime.block_on(output.put(CONFIG_FILE, config.to_toml().into_bytes()))?;
    }
    let mut events = writer.then(|| EventWriter::new(&output, EVENTS_FLUSH));

    let loader = dataset.loader(LoaderOptions {
        split: Some(config.data.split),
        batch_size: rank_batch as usize,
        seed: config.train.seed,
        shuffle: true,
        shuffle_window: config.data.shuffle_window,
        rank,
        world_size,
        prefetch: 4,
        condition: Some(config.data.condition.clone()),
    })?;
    let mut batches = {
        let _guard = runtime.enter();
        loader.stream(position)
    };
    let latents = samples::fixed_latents(config.train.seed, config.train.sample_rows, config.model.z_dim);
    let total = config.train.steps;
    let bar = progress_bar(options.progress, total, step);
    let started = Instant::now();
    let mut last_log = Instant::now();
    let size = config.model.image_size;
    let save = |gan: &Gan, step: u64, position: Position, metrics: Option<StepMetrics>| -> Result<String> {
        let state = TrainState {
            step,
            position,
            seed: config.train.seed,
            channels,
            classes: classes.names.clone(),
            metrics,
            config: config.clone(),
            world_size: world_size as u64,
        };
        let files = vec![
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
        ];
        runtime.block_on(checkpoint::save(&output, files, &state))
    };

    observer.started(step);
    while step < total {
        if observer.should_stop() {
            bar.abandon();
            tracing::info!(step, "stopped on request");
            return Err(Error::Stopped { step });
        }
        let step_started = Instant::now();
        ranks.take_spent();
        if any_rank(&mut ranks, world_size, observer.preempted(), device)? {
            bar.abandon();
            let checkpoint = match &last_checkpoint {
                Some(url) if saved_at == Some(step) => Some(url.clone()),
                _ if step == 0 => None,
                _ if writer => {
                    runtime.block_on(output.put(METRICS_FILE, (lines.join("\n") + "\n").into_bytes()))?;
                    if let Some(events) = events.as_mut() {
                        runtime.block_on(events.flush())?;
                    }
                    Some(save(&gan, step, position, metrics)?)
                }
                _ => Some(checkpoint::folder_url(&output, step)),
            };
            if let Some(url) = checkpoint.as_deref().filter(|_| saved_at != Some(step)) {
                observer.checkpoint(step, url, 0.0);
            }
            if world_size > 1 {
                // No rank reports the end before rank 0's checkpoint is committed.
                ranks.barrier(RANK0_WORK_WAIT)?;
            }
            tracing::info!(step, checkpoint = ?checkpoint, "preempted: stopped after saving");
            return Err(Error::Preempted { step, checkpoint });
        }
        let waiting = Instant::now();
        let batch = match batches.blocking_next() {
            Some(batch) => batch?,
            // The stream ends only when its runtime shuts down.
            None => return Err(dataprep::Error::Interrupted.into()),
        };
        let loader_wait = waiting.elapsed().as_secs_f64();
        let real = images_to_tensor(&batch.pixels, batch.len as i64, size, channels, device);
        let labels = Tensor::from_slice(&batch.classes).to_device(device);
        tch::manual_seed(step_seed(config.train.seed, step + 1, rank));
        let m = catch_allocation(&format!("step {}", step + 1), || {
            gan.step(&real, &labels, &mut ranks).map(|t| Gan::read_metrics(&t))
        })??;
        step += 1;
        position = batch.next;
        if let Some((metric, value)) = m.non_finite() {
            bar.abandon();
            let last_good = match &last_checkpoint {
                Some(url) => format!("the last good checkpoint is {url}"),
                None => "no checkpoint was written yet".to_string(),
            };
            return Err(Error::NonFinite {
                metric,
                value,
                step,
                last_good,
            });
        }
        metrics = Some(m);
        let images_per_sec = ((step - resumed_from) as f64 * (batch.len * world_size) as f64)
            / started.elapsed().as_secs_f64().max(1e-9);
        let times = StepTimes {
            step: step_started.elapsed().as_secs_f64(),
            loader_wait,
            collective: ranks.take_spent().as_secs_f64(),
        };
        let mut line = metrics_line(step, batch.epoch, &m, images_per_sec, times);
        let evaluate = crate::eval::due(&config.train, step);
        if writer && evaluate {
            line.evaluation = Some(evaluation.run(config, &dataset, &output, &gan, step, runtime)?);
        }
        lines.push(serde_json::to_string(&line).expect("metrics serialise"));
        observer.step(&line);
        if let Some(events) = events.as_mut() {
            events.scalars(step, &tensorboard::step_scalars(&line));
        }
        bar.set_position(step);
        bar.set_message(format!(
            "{images_per_sec:.1} img/s  c_loss {:.3}  c_wass {:.3}  c_gp {:.3}  g_loss {:.3}",
            m.c_loss, m.c_wass_loss, m.c_gp, m.g_loss
        ));
        if bar.is_hidden() && last_log.elapsed().as_secs() >= 10 {
            last_log = Instant::now();
            tracing::info!(
                step,
                total,
                images_per_sec,
                c_loss = m.c_loss,
                c_wass_loss = m.c_wass_loss,
                c_gp = m.c_gp,
                g_loss = m.g_loss,
                "training"
            );
        }
        let every = |n: u64| n > 0 && step.is_multiple_of(n);
        let last = step == total;
        let sample = every(config.train.sample_every) || last;
        let keep = every(config.train.checkpoint_every) || last;
        if writer && sample {
            let png = samples::label_swap_grid(&gan, &latents, &classes.names);
            if let Some(events) = events.as_mut() {
                events.png(step, "samples", &png)?;
            }
            let name = format!("samples/{}.png", checkpoint::folder_name(step));
            runtime.block_on(output.put(&name, png))?;
        }
        if keep {
            let writing = Instant::now();
            let url = if writer {
                runtime.block_on(output.put(METRICS_FILE, (lines.join("\n") + "\n").into_bytes()))?;
                let url = save(&gan, step, position, metrics)?;
                tracing::info!(step, checkpoint = %url, "checkpoint written");
                url
            } else {
                checkpoint::folder_url(&output, step)
            };
            let write_seconds = if writer { writing.elapsed().as_secs_f64() } else { 0.0 };
            observer.checkpoint(step, &url, write_seconds);
            last_checkpoint = Some(url);
            saved_at = Some(step);
        }
        if let Some(events) = events.as_mut().filter(|e| sample || keep || evaluate || e.flush_due()) {
            runtime.block_on(events.flush())?;
        }
        if world_size > 1 && (sample || keep || evaluate) {
            // The others wait here, not in the next exchange, while rank 0 writes.
            ranks.barrier(RANK0_WORK_WAIT)?;
        }
    }
    bar.finish_and_clear();
    let images_per_sec =
        ((step - resumed_from) as f64 * config.train.batch_size as f64) / started.elapsed().as_secs_f64().max(1e-9);
    let checkpoint = match last_checkpoint {
        Some(url) => url,
        // A run resumed at its last step: its checkpoint is there already.
        None if !writer => checkpoint::folder_url(&output, step),
        None => save(&gan, step, position, metrics)?,
    };
    let nan = StepMetrics {
        c_loss: f64::NAN,
        c_wass_loss: f64::NAN,
        c_gp: f64::NAN,
        g_loss: f64::NAN,
    };
    let metrics = metrics.unwrap_or(nan);
    Ok(TrainSummary {
        steps: step,
        resumed_from,
        checkpoint,
        metrics,
        images_per_sec,
        device: crate::device::device_name(device),
    })
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

fn progress_bar(show: bool, total: u64, at: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total).with_position(at);
    bar.set_style(ProgressStyle::with_template("step {pos}/{len} {bar:30} eta {eta}  {msg}").expect("valid template"));
    bar
}

#[cfg(test)]
mod tests {
    use super::libtorch_message;

    #[test]
    fn a_libtorch_panic_reads_as_its_first_line() {
        let panic = r#"called `Result::unwrap()` on an `Err` value: Torch("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to allocate 33554432 bytes. Error code 12 (Cannot allocate memory)\nframe #0: c10::ThrowEnforceNotMet(char const*, int)\n")"#;
        assert_eq!(
            libtorch_message(panic),
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate 33554432 bytes. Error code 12 (Cannot allocate memory)"
        );
        assert_eq!(
            libtorch_message(r#"x: Torch("could not create a primitive")"#),
            "could not create a primitive"
        );
        assert_eq!(libtorch_message("plain panic\nsecond line"), "plain panic");
    }
}
