//! The job file: what to train on, the model, the optimiser, where results go, and how the job is
//! scheduled. The same job travels as TOML (`worker train --config`, `coordinator submit`) and as
//! the [`pb::JobSpec`] message; [`JobConfig::from_spec`] and `From<&JobConfig> for JobSpec`
//! convert between them. Unknown keys are errors; every problem is reported at once by
//! [`JobConfig::validate`] and, against the dataset, by [`JobConfig::check_dataset`].
//!
//! This crate sits between the wire contract (`gantry-proto`, which knows no other crate of
//! ours) and the data format (`gantry-dataprep`, whose conditions, splits and manifests a job
//! names and is checked against). The coordinator and the worker both read job files and both
//! already depend on the data format, so the job file costs neither a compile.
//!
//! The condition, the split and the device are parsed once, into typed fields, when a job file
//! or spec is read.

pub mod memory;

use std::str::FromStr;

use dataprep::{Condition, Split};
use gantry_proto::pb;
use serde::{Deserialize, Serialize};

/// A job file or spec that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The job is invalid; every problem is listed, each naming its key.
    #[error("invalid job config:\n  - {}", problems.join("\n  - "))]
    Invalid {
        /// One line per problem, naming the key (`train.batch_size is 0, ...`).
        problems: Vec<String>,
    },
    /// A job file could not be read.
    #[error("cannot read the job file {path}")]
    Read {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A job file is not valid TOML or has keys or values a job does not have.
    #[error("job file {path}")]
    Parse {
        /// The file (or where the text came from).
        path: String,
        /// The parser's error, naming the line and key.
        source: toml::de::Error,
    },
}

type Result<T, E = JobError> = std::result::Result<T, E>;

/// A training job, as written in a TOML job file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// The dataset.
    pub data: DataConfig,
    /// The networks.
    #[serde(default)]
    pub model: ModelConfig,
    /// The optimisation.
    #[serde(default)]
    pub train: TrainConfig,
    /// Where results go.
    pub output: OutputConfig,
    /// How the coordinator schedules it (ignored by `worker train`).
    #[serde(default)]
    pub job: ScheduleConfig,
}

/// `[data]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Dataset URL (a `dataprep pack` output).
    pub url: String,
    /// `label`, an attribute (`Blond_Hair`), or attributes joined by `,` (one class per combination).
    #[serde(default = "default_condition")]
    pub condition: Condition,
    /// Split to train on.
    #[serde(default = "default_split")]
    pub split: Split,
    /// Rows mixed by the loader's in-memory shuffle.
    #[serde(default = "default_shuffle_window")]
    pub shuffle_window: usize,
}

/// `[model]`: the seed's architecture, parameterised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Square image size: 32, 64 or 128 (must match the dataset).
    pub image_size: i64,
    /// Latent vector length.
    pub z_dim: i64,
    /// Base channel count (the book's 128); the critic's first layer and the generator's last
    /// hidden layer use half of it.
    pub width: i64,
    /// Critic dropout probability (the book's 0.3).
    pub dropout: f64,
}

/// The most rows a sample grid may have (each row is one latent rendered once per class).
pub const MAX_SAMPLE_ROWS: i64 = 256;
/// Most images per class an evaluation generates (`train.eval_samples`).
pub const MAX_EVAL_SAMPLES: u64 = 100_000;
/// The largest shuffle window, in rows (about 12 GiB of 64x64 images).
pub const MAX_SHUFFLE_WINDOW: usize = 1 << 20;
/// The most steps a job, or an interval between its checkpoints or samples, may have.
pub const MAX_STEPS: u64 = 100_000_000;

/// `[train]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Global batch size (divided among the ranks).
    pub batch_size: i64,
    /// Generator steps to train for (the run's total, across resumes).
    pub steps: u64,
    /// Critic updates per generator update.
    pub critic_steps: u64,
    /// Weight of the gradient penalty.
    pub gp_weight: f64,
    /// Adam learning rate of both networks.
    pub lr: f64,
    /// Adam beta1.
    pub beta1: f64,
    /// Adam beta2.
    pub beta2: f64,
    /// Adam epsilon (Keras's default, 1e-7).
    pub adam_eps: f64,
    /// Seed of initial weights, data order, latents and dropout.
    pub seed: u64,
    /// Write a checkpoint every this many steps (and at the end); 0: only at the end.
    pub checkpoint_every: u64,
    /// Write a sample grid every this many steps (and at the end); 0: only at the end.
    pub sample_every: u64,
    /// Latent vectors (rows) in each sample grid.
    pub sample_rows: i64,
    /// `auto` (CUDA if available), `cpu`, `cuda` or `cuda:N`.
    pub device: DeviceSpec,
    /// CPU threads for libtorch (0: all cores, divided among the ranks on one host).
    pub threads: i32,
    /// Seconds a rank waits for its peers (the rendezvous, each gradient exchange) before the
    /// gang fails.
    pub collective_timeout_s: f64,
    /// Evaluate the generator (conditional accuracy, label swap, Fréchet distance in a
    /// classifier's features) every this many steps and at the end; 0: never during training.
    pub eval_every: u64,
    /// Images generated per class for an evaluation.
    pub eval_samples: u64,
}

/// `[output]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Where checkpoints, samples, metrics and the resolved config go.
    pub url: String,
}

/// `[job]`: scheduling on the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// A name for people (not unique).
    pub name: String,
    /// Workers (ranks) the job runs on at once; they start together or not at all.
    pub workers: u32,
    /// Higher runs first; FIFO within a priority.
    pub priority: i32,
    /// Restarts from the latest checkpoint after a lost or failed worker, before the job fails.
    pub max_restarts: u32,
}

fn default_condition() -> Condition {
    Condition::Attributes(vec!["Blond_Hair".into()])
}

fn default_split() -> Split {
    Split::Train
}

fn default_shuffle_window() -> usize {
    4096
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            image_size: 64,
            z_dim: 32,
            width: 128,
            dropout: 0.3,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            batch_size: 128,
            steps: 10_000,
            critic_steps: 3,
            gp_weight: 10.0,
            lr: 5e-5,
            beta1: 0.5,
            beta2: 0.9,
            adam_eps: 1e-7,
            seed: 0,
            checkpoint_every: 1000,
            sample_every: 500,
            sample_rows: 8,
            device: DeviceSpec::Auto,
            threads: 0,
            collective_timeout_s: 60.0,
            eval_every: 0,
            eval_samples: 256,
        }
    }
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            workers: 1,
            priority: 0,
            max_restarts: 2,
        }
    }
}

/// A configured device, before it is looked up on a machine. Written `auto`, `cpu`, `cuda` or
/// `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// CUDA when available, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        match spec {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => match spec.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(Self::Cuda(i)),
                _ => Err(format!("{spec:?} is not auto, cpu, cuda or cuda:N")),
            },
        }
    }
}

impl DeviceSpec {
    /// Whether a worker that reports `worker_device` (its registration's `device`: `cpu`,
    /// `cuda:0`, ...) can run a rank of a job asking for this device. The coordinator places
    /// ranks with this rule, and nowhere else decides it.
    ///
    /// A CUDA job (`cuda`, `cuda:N`) needs a CUDA worker: one whose device starts with `cuda`,
    /// whatever its index (a worker runs its ranks on the device it reports; the job's index
    /// names the device on a single machine, not across the pool). `auto` and `cpu` run
    /// anywhere: a CUDA worker can run a CPU job.
    pub fn runs_on(&self, worker_device: &str) -> bool {
        match self {
            Self::Cuda(_) => worker_device.starts_with("cuda"),
            Self::Auto | Self::Cpu => true,
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = String;

    fn try_from(spec: String) -> Result<Self, String> {
        spec.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(device: DeviceSpec) -> String {
        device.to_string()
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl JobConfig {
    /// Parses a TOML job file's text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text).map_err(|source| JobError::Parse {
            path: origin.to_string(),
            source,
        })
    }

    /// Reads a TOML job file.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| JobError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// The config as TOML (the resolved copy saved with the results).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// Checks every key that can be checked without the dataset; lists all problems.
    pub fn validate(&self) -> Result<()> {
        let mut p = Vec::new();
        if self.data.url.trim().is_empty() {
            p.push("data.url is empty".to_string());
        }
        if !(1..=MAX_SHUFFLE_WINDOW).contains(&self.data.shuffle_window) {
            p.push(format!(
                "data.shuffle_window is {}, expected 1 to {MAX_SHUFFLE_WINDOW} rows",
                self.data.shuffle_window
            ));
        }
        let m = &self.model;
        if ![32, 64, 128].contains(&m.image_size) {
            p.push(format!("model.image_size is {}, expected 32, 64 or 128", m.image_size));
        }
        if m.z_dim < 1 {
            p.push(format!("model.z_dim is {}, expected at least 1", m.z_dim));
        }
        if m.width < 2 || m.width % 2 != 0 {
            p.push(format!(
                "model.width is {}, expected an even number of at least 2",
                m.width
            ));
        }
        if !(0.0..1.0).contains(&m.dropout) {
            p.push(format!("model.dropout is {}, expected 0 <= dropout < 1", m.dropout));
        }
        let t = &self.train;
        if t.batch_size < 1 {
            p.push(format!("train.batch_size is {}, expected at least 1", t.batch_size));
        }
        if !(1..=MAX_STEPS).contains(&t.steps) {
            p.push(format!("train.steps is {}, expected 1 to {MAX_STEPS}", t.steps));
        }
        for (name, every) in [
            ("checkpoint_every", t.checkpoint_every),
            ("sample_every", t.sample_every),
            ("eval_every", t.eval_every),
        ] {
            if every > MAX_STEPS {
                p.push(format!(
                    "train.{name} is {every}, expected 0 (only at the end) to {MAX_STEPS}"
                ));
            }
        }
        if !(1..=MAX_EVAL_SAMPLES).contains(&t.eval_samples) {
            p.push(format!(
                "train.eval_samples is {}, expected 1 to {MAX_EVAL_SAMPLES}",
                t.eval_samples
            ));
        }
        if t.critic_steps < 1 {
            p.push("train.critic_steps is 0, expected at least 1".to_string());
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            p.push(format!("train.lr is {}, expected a positive number", t.lr));
        }
        for (name, beta) in [("beta1", t.beta1), ("beta2", t.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                p.push(format!("train.{name} is {beta}, expected 0 <= {name} < 1"));
            }
        }
        if t.adam_eps.is_nan() || t.adam_eps <= 0.0 {
            p.push(format!("train.adam_eps is {}, expected a positive number", t.adam_eps));
        }
        if !(t.gp_weight >= 0.0 && t.gp_weight.is_finite()) {
            p.push(format!(
                "train.gp_weight is {}, expected a non-negative number",
                t.gp_weight
            ));
        }
        if !(1..=MAX_SAMPLE_ROWS).contains(&t.sample_rows) {
            p.push(format!(
                "train.sample_rows is {}, expected 1 to {MAX_SAMPLE_ROWS}",
                t.sample_rows
            ));
        }
        if !(t.collective_timeout_s.is_finite() && t.collective_timeout_s > 0.0) {
            p.push(format!(
                "train.collective_timeout_s is {}, expected a positive number of seconds",
                t.collective_timeout_s
            ));
        }
        if t.threads < 0 {
            p.push(format!(
                "train.threads is {}, expected 0 (all cores) or more",
                t.threads
            ));
        }
        if self.output.url.trim().is_empty() {
            p.push("output.url is empty".to_string());
        }
        let j = &self.job;
        if j.workers < 1 {
            p.push("job.workers is 0, expected at least 1".to_string());
        } else if t.batch_size >= 1 && t.batch_size % i64::from(j.workers) != 0 {
            p.push(format!(
                "train.batch_size is {} but job.workers is {}: the global batch must divide evenly among the workers",
                t.batch_size, j.workers
            ));
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(JobError::Invalid { problems: p })
        }
    }

    /// Checks the job against its dataset (image size, condition, rows); lists every problem and
    /// returns the classes of the condition. Keys that [`JobConfig::validate`] rejects are
    /// skipped here, so the two lists together name each problem once.
    pub fn check_dataset(&self, dataset: &dataprep::Dataset) -> Result<dataprep::Classes> {
        let manifest = dataset.manifest();
        let mut problems = Vec::new();
        let image = &manifest.image;
        if image.height != image.width || i64::from(image.height) != self.model.image_size {
            problems.push(format!(
                "model.image_size is {} but the dataset at {} holds {}x{} images (repack it or change image_size)",
                self.model.image_size,
                dataset.location().url(),
                image.height,
                image.width
            ));
        }
        let classes = match self.data.condition.resolve(manifest) {
            Ok(classes) => Some(classes),
            Err(e) => {
                problems.push(format!("data.condition: {}", base::error_chain(&e)));
                None
            }
        };
        let rows = manifest.split_rows(self.data.split);
        if (rows as i64) < self.train.batch_size {
            problems.push(format!(
                "train.batch_size is {} but split {} of the dataset has {rows} rows",
                self.train.batch_size, self.data.split
            ));
        }
        match classes {
            Some(classes) if problems.is_empty() => Ok(classes),
            _ => Err(JobError::Invalid { problems }),
        }
    }

    /// The job a spec describes, checked: unset fields take the job file's defaults, and every
    /// problem (a value that does not parse, and all that [`JobConfig::validate`] finds) is
    /// listed at once.
    pub fn from_spec(spec: &pb::JobSpec) -> Result<Self> {
        let (config, mut problems) = Self::parse_spec(spec);
        if let Err(JobError::Invalid { problems: more }) = config.validate() {
            problems.extend(more);
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(JobError::Invalid { problems })
        }
    }

    /// The job a spec describes, unchecked, with the problems of the values that do not parse
    /// (those fields keep their defaults). Unset fields take the job file's defaults.
    /// [`JobConfig::from_spec`] is this plus [`JobConfig::validate`].
    pub fn parse_spec(spec: &pb::JobSpec) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let d = DataConfig {
            url: String::new(),
            condition: default_condition(),
            split: default_split(),
            shuffle_window: default_shuffle_window(),
        };
        let data = match &spec.data {
            Some(s) => DataConfig {
                url: s.url.clone(),
                condition: parse_or(&mut problems, "data.condition", s.condition.as_deref(), d.condition),
                split: parse_or(&mut problems, "data.split", s.split.as_deref(), d.split),
                shuffle_window: s
                    .shuffle_window
                    .map_or(d.shuffle_window, |w| usize::try_from(w).unwrap_or(usize::MAX)),
            },
            None => d,
        };
        let m = ModelConfig::default();
        let model = match &spec.model {
            Some(s) => ModelConfig {
                image_size: s.image_size.unwrap_or(m.image_size),
                z_dim: s.z_dim.unwrap_or(m.z_dim),
                width: s.width.unwrap_or(m.width),
                dropout: s.dropout.unwrap_or(m.dropout),
            },
            None => m,
        };
        let t = TrainConfig::default();
        let train = match &spec.train {
            Some(s) => TrainConfig {
                batch_size: s.batch_size.unwrap_or(t.batch_size),
                steps: s.steps.unwrap_or(t.steps),
                critic_steps: s.critic_steps.unwrap_or(t.critic_steps),
                gp_weight: s.gp_weight.unwrap_or(t.gp_weight),
                lr: s.lr.unwrap_or(t.lr),
                beta1: s.beta1.unwrap_or(t.beta1),
                beta2: s.beta2.unwrap_or(t.beta2),
                adam_eps: s.adam_eps.unwrap_or(t.adam_eps),
                seed: s.seed.unwrap_or(t.seed),
                checkpoint_every: s.checkpoint_every.unwrap_or(t.checkpoint_every),
                sample_every: s.sample_every.unwrap_or(t.sample_every),
                sample_rows: s.sample_rows.unwrap_or(t.sample_rows),
                device: parse_or(&mut problems, "train.device", s.device.as_deref(), t.device),
                threads: s.threads.unwrap_or(t.threads),
                collective_timeout_s: s.collective_timeout_s.unwrap_or(t.collective_timeout_s),
                eval_every: s.eval_every.unwrap_or(t.eval_every),
                eval_samples: s.eval_samples.unwrap_or(t.eval_samples),
            },
            None => t,
        };
        let j = ScheduleConfig::default();
        let job = match &spec.job {
            Some(s) => ScheduleConfig {
                name: s.name.clone().unwrap_or(j.name),
                workers: s.workers.unwrap_or(j.workers),
                priority: s.priority.unwrap_or(j.priority),
                max_restarts: s.max_restarts.unwrap_or(j.max_restarts),
            },
            None => j,
        };
        let output = OutputConfig {
            url: spec.output.as_ref().map(|o| o.url.clone()).unwrap_or_default(),
        };
        let config = Self {
            data,
            model,
            train,
            output,
            job,
        };
        (config, problems)
    }
}

/// `value` parsed, or `default` when it is unset or does not parse (then a problem naming `key`).
fn parse_or<T: FromStr>(problems: &mut Vec<String>, key: &str, value: Option<&str>, default: T) -> T
where
    T::Err: std::fmt::Display,
{
    match value.map(str::parse) {
        None => default,
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            problems.push(format!("{key}: {e}"));
            default
        }
    }
}

impl From<&JobConfig> for pb::JobSpec {
    fn from(c: &JobConfig) -> Self {
        let (d, m, t, j) = (&c.data, &c.model, &c.train, &c.job);
        pb::JobSpec {
            data: Some(pb::DataSpec {
                url: d.url.clone(),
                condition: Some(d.condition.to_string()),
                split: Some(d.split.to_string()),
                shuffle_window: Some(d.shuffle_window as u64),
            }),
            model: Some(pb::ModelSpec {
                image_size: Some(m.image_size),
                z_dim: Some(m.z_dim),
                width: Some(m.width),
                dropout: Some(m.dropout),
            }),
            train: Some(pb::TrainSpec {
                batch_size: Some(t.batch_size),
                steps: Some(t.steps),
                critic_steps: Some(t.critic_steps),
                gp_weight: Some(t.gp_weight),
                lr: Some(t.lr),
                beta1: Some(t.beta1),
                beta2: Some(t.beta2),
                adam_eps: Some(t.adam_eps),
                seed: Some(t.seed),
                checkpoint_every: Some(t.checkpoint_every),
                sample_every: Some(t.sample_every),
                sample_rows: Some(t.sample_rows),
                device: Some(t.device.to_string()),
                threads: Some(t.threads),
                collective_timeout_s: Some(t.collective_timeout_s),
                eval_every: Some(t.eval_every),
                eval_samples: Some(t.eval_samples),
            }),
            output: Some(pb::OutputSpec {
                url: c.output.url.clone(),
            }),
            job: Some(pb::ScheduleSpec {
                name: Some(j.name.clone()),
                workers: Some(j.workers),
                priority: Some(j.priority),
                max_restarts: Some(j.max_restarts),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[data]\nurl = \"memory://d\"\n[output]\nurl = \"memory://o\"\n";

    #[test]
    fn defaults_are_the_books() {
        let c = JobConfig::from_toml(MINIMAL, "job.toml").unwrap();
        c.validate().unwrap();
        assert_eq!((c.model.image_size, c.model.z_dim, c.model.width), (64, 32, 128));
        assert_eq!(
            (c.train.batch_size, c.train.critic_steps, c.train.gp_weight),
            (128, 3, 10.0)
        );
        assert_eq!((c.train.lr, c.train.beta1, c.train.beta2), (5e-5, 0.5, 0.9));
        assert_eq!(c.data.condition.to_string(), "Blond_Hair");
        assert_eq!((c.data.split, c.train.device), (Split::Train, DeviceSpec::Auto));
        assert_eq!((c.job.workers, c.job.max_restarts), (1, 2));
        let again = JobConfig::from_toml(&c.to_toml(), "resolved").unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = JobConfig::from_toml(&format!("{MINIMAL}[train]\nstepz = 5\n"), "job.toml").unwrap_err();
        let message = base::error_chain(&err);
        assert!(message.contains("job.toml") && message.contains("stepz"), "{message}");
    }

    #[test]
    fn every_problem_is_listed() {
        let text =
            format!("{MINIMAL}[model]\nimage_size = 48\n[train]\nbatch_size = 0\nlr = -1.0\n[job]\nworkers = 0\n");
        let message = JobConfig::from_toml(&text, "job.toml")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        for needle in [
            "model.image_size is 48",
            "train.batch_size is 0",
            "train.lr is -1",
            "job.workers is 0",
        ] {
            assert!(message.contains(needle), "{needle} missing from {message}");
        }
    }

    #[test]
    fn mistyped_sizes_hit_limits_that_say_the_limit() {
        let mut c = JobConfig::from_toml(MINIMAL, "test").unwrap();
        c.data.shuffle_window = 100_000_000;
        c.train.sample_rows = 100_000;
        c.train.steps = 1_000_000_000;
        c.train.sample_every = 1_000_000_000;
        let Err(JobError::Invalid { problems }) = c.validate() else {
            panic!("accepted")
        };
        assert_eq!(
            problems,
            vec![
                "data.shuffle_window is 100000000, expected 1 to 1048576 rows",
                "train.steps is 1000000000, expected 1 to 100000000",
                "train.sample_every is 1000000000, expected 0 (only at the end) to 100000000",
                "train.sample_rows is 100000, expected 1 to 256",
            ]
        );
    }

    #[test]
    fn the_batch_divides_among_the_workers() {
        let text = format!("{MINIMAL}[train]\nbatch_size = 10\n[job]\nworkers = 3\n");
        let message = JobConfig::from_toml(&text, "job.toml")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("train.batch_size is 10 but job.workers is 3"),
            "{message}"
        );
    }

    #[test]
    fn spec_round_trip_keeps_every_key() {
        let text = format!(
            "{MINIMAL}[model]\nimage_size = 32\nwidth = 16\ndropout = 0.1\n[train]\nbatch_size = 12\nsteps = 7\nlr = 1e-3\nseed = 9\nthreads = 2\ndevice = \"cpu\"\n[job]\nname = \"n\"\nworkers = 3\npriority = -4\nmax_restarts = 5\n"
        );
        let config = JobConfig::from_toml(&text, "job.toml").unwrap();
        let spec = pb::JobSpec::from(&config);
        assert_eq!(JobConfig::from_spec(&spec).unwrap(), config);
    }

    #[test]
    fn unset_spec_fields_take_the_defaults() {
        let spec = pb::JobSpec {
            data: Some(pb::DataSpec {
                url: "memory://d".into(),
                ..Default::default()
            }),
            output: Some(pb::OutputSpec {
                url: "memory://o".into(),
            }),
            ..Default::default()
        };
        let from_toml = JobConfig::from_toml(MINIMAL, "job.toml").unwrap();
        assert_eq!(JobConfig::from_spec(&spec).unwrap(), from_toml);
        let empty = JobConfig::from_spec(&pb::JobSpec::default()).unwrap_err();
        let message = empty.to_string();
        assert!(
            message.contains("data.url is empty") && message.contains("output.url is empty"),
            "{message}"
        );
    }

    #[test]
    fn a_value_that_does_not_parse_names_its_key_and_line() {
        let text = format!("{MINIMAL}[train]\ndevice = \"tpu\"\n");
        let err = JobConfig::from_toml(&text, "job.toml").unwrap_err();
        let message = base::error_chain(&err);
        assert!(
            message.contains("job.toml") && message.contains("line 6") && message.contains("\"tpu\" is not auto"),
            "{message}"
        );
        assert!(
            std::error::Error::source(&err).is_some(),
            "the parser's error is kept as the source"
        );
        let text = "[data]\nurl = \"memory://d\"\nsplit = \"holdout\"\n[output]\nurl = \"memory://o\"\n";
        let message = base::error_chain(&JobConfig::from_toml(text, "job.toml").unwrap_err());
        assert!(message.contains("line 3") && message.contains("holdout"), "{message}");
    }

    #[test]
    fn spec_values_that_do_not_parse_are_listed_with_the_rest() {
        let spec = pb::JobSpec {
            data: Some(pb::DataSpec {
                url: "memory://d".into(),
                condition: Some(" , ".into()),
                split: Some("holdout".into()),
                ..Default::default()
            }),
            train: Some(pb::TrainSpec {
                device: Some("cuda:x".into()),
                batch_size: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        };
        let message = JobConfig::from_spec(&spec).unwrap_err().to_string();
        for needle in [
            "data.condition: ",
            "data.split: ",
            "holdout",
            "train.device: \"cuda:x\" is not auto, cpu, cuda or cuda:N",
            "train.batch_size is 0",
            "output.url is empty",
        ] {
            assert!(message.contains(needle), "{needle} missing from {message}");
        }
    }

    #[test]
    fn devices_read_and_write_the_same() {
        for (text, device) in [
            ("auto", DeviceSpec::Auto),
            ("cpu", DeviceSpec::Cpu),
            ("cuda:3", DeviceSpec::Cuda(3)),
        ] {
            assert_eq!(text.parse::<DeviceSpec>().unwrap(), device);
            assert_eq!(device.to_string(), text);
        }
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
    }

    #[test]
    fn a_cuda_job_runs_only_on_cuda_workers_and_others_run_anywhere() {
        for spec in ["cuda", "cuda:0", "cuda:3"] {
            let device: DeviceSpec = spec.parse().unwrap();
            assert!(device.runs_on("cuda:0"), "{spec} on cuda:0");
            assert!(device.runs_on("cuda:7"), "{spec} on cuda:7");
            assert!(device.runs_on("cuda"), "{spec} on cuda");
            assert!(!device.runs_on("cpu"), "{spec} on cpu");
            assert!(!device.runs_on(""), "{spec} on a worker that said nothing");
        }
        for device in [DeviceSpec::Auto, DeviceSpec::Cpu] {
            for worker in ["cpu", "cuda:0", ""] {
                assert!(device.runs_on(worker), "{device} on {worker:?}");
            }
        }
    }
}
