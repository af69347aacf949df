//! The job file: what to train on, the model, the optimiser, and where to write results.
//! Unknown keys are errors; every problem is reported at once by [`JobConfig::validate`].

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

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
}

/// `[data]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Dataset URL (a `dataprep pack` output).
    pub url: String,
    /// `label`, an attribute (`Blond_Hair`), or attributes joined by `,` (one class per combination).
    #[serde(default = "default_condition")]
    pub condition: String,
    /// Split to train on.
    #[serde(default = "default_split")]
    pub split: String,
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
    pub device: String,
    /// CPU threads for libtorch (0: all cores).
    pub threads: i32,
}

/// `[output]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Where checkpoints, samples, metrics and the resolved config go.
    pub url: String,
}

fn default_condition() -> String {
    "Blond_Hair".into()
}

fn default_split() -> String {
    "train".into()
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
            device: "auto".into(),
            threads: 0,
        }
    }
}

impl JobConfig {
    /// Parses a TOML job file's text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::JobFile {
            path: origin.to_string(),
            message: e.to_string(),
        })
    }

    /// Reads a TOML job file.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::JobFile {
            path: path.display().to_string(),
            message: e.to_string(),
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
        if let Err(e) = self.data.condition.parse::<dataprep::Condition>() {
            p.push(format!("data.condition: {e}"));
        }
        if let Err(e) = self.data.split.parse::<dataprep::Split>() {
            p.push(format!("data.split: {e}"));
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
        if t.steps < 1 {
            p.push("train.steps is 0".to_string());
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
        if t.sample_rows < 1 {
            p.push(format!("train.sample_rows is {}, expected at least 1", t.sample_rows));
        }
        if let Err(e) = crate::device::parse_device(&t.device) {
            p.push(format!("train.device: {e}"));
        }
        if self.output.url.trim().is_empty() {
            p.push("output.url is empty".to_string());
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(Error::Config { problems: p })
        }
    }

    /// The parsed condition (call after [`JobConfig::validate`]).
    pub fn condition(&self) -> dataprep::Condition {
        self.data.condition.parse().expect("validated condition")
    }

    /// The parsed split (call after [`JobConfig::validate`]).
    pub fn split(&self) -> dataprep::Split {
        self.data.split.parse().expect("validated split")
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
        assert_eq!(c.data.condition, "Blond_Hair");
        let again = JobConfig::from_toml(&c.to_toml(), "resolved").unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = JobConfig::from_toml(&format!("{MINIMAL}[train]\nstepz = 5\n"), "job.toml").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("job.toml") && message.contains("stepz"), "{message}");
    }

    #[test]
    fn every_problem_is_listed() {
        let text = format!("{MINIMAL}[model]\nimage_size = 48\n[train]\nbatch_size = 0\nlr = -1.0\ndevice = \"tpu\"\n");
        let message = JobConfig::from_toml(&text, "job.toml")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        for needle in [
            "model.image_size is 48",
            "train.batch_size is 0",
            "train.lr is -1",
            "train.device",
        ] {
            assert!(message.contains(needle), "{needle} missing from {message}");
        }
    }
}
