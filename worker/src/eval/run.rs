//! The two ways an evaluation runs: [`InTraining`], rank 0's evaluations during a run (the
//! classifier prepared once and kept in memory), and [`evaluate_checkpoint`], `worker eval` on a
//! checkpoint (the report written into the checkpoint's run output).

use std::time::Instant;

use base::{Location, layout};
use dataprep::Dataset;
use gantry_proto::pb;
use tokio::runtime::Handle;

use super::cache::prepare_classifier;
use super::classifier::{Classifier, ClassifierSettings, Provenance};
use super::report::{Report, log_report, report_generator, write_report};
use super::split::{held_out_split, invalid};
use crate::Result;
use crate::checkpoint;
use crate::config::{DeviceSpec, JobConfig};
use crate::gan::Gan;
use crate::torch_guard;

/// Evaluation inside a training process: the classifier is prepared at the first evaluation
/// (trained, or loaded from the run's cache) and kept in memory.
#[derive(Debug, Default)]
pub struct InTraining {
    classifier: Option<Classifier>,
}

impl InTraining {
    /// Checks, when the job evaluates, that its dataset has held-out images (before any step).
    pub fn new(config: &JobConfig, dataset: &Dataset) -> Result<Self> {
        if config.train.eval_every > 0 {
            held_out_split(dataset)?;
        }
        Ok(Self::default())
    }

    /// Evaluates the generator after `step`, writes the report into the job output and returns
    /// the figures for the step's metrics line. Draws from libtorch's global generator (the
    /// next training step seeds it again). A libtorch failure is an
    /// [`Error::Allocation`](crate::Error::Allocation).
    pub fn run(
        &mut self,
        config: &JobConfig,
        dataset: &Dataset,
        output: &Location,
        gan: &Gan,
        step: u64,
        runtime: &Handle,
    ) -> Result<pb::Evaluation> {
        let started = Instant::now();
        let report = torch_guard::catch(&format!("evaluation at step {step}"), || -> Result<_> {
            match &mut self.classifier {
                Some(classifier) => {
                    classifier.provenance = Provenance::Memory;
                    classifier.seconds = 0.0;
                }
                None => {
                    let classifier = prepare_classifier(
                        dataset,
                        &config.data.condition,
                        config.model.image_size,
                        output,
                        &ClassifierSettings::default(),
                        gan.device,
                        runtime,
                    )?;
                    self.classifier = Some(classifier);
                }
            }
            let classifier = self.classifier.as_ref().expect("prepared");
            report_generator(
                classifier,
                gan,
                config.train.eval_samples,
                config.train.seed,
                step,
                None,
                started,
            )
        })??;
        let url = write_report(output, &report, runtime)?;
        log_report(&report, &url);
        Ok(report.to_pb(&url))
    }
}

/// Options of [`evaluate_checkpoint`] (`worker eval`).
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// A checkpoint folder, or a job output (its latest checkpoint).
    pub checkpoint: String,
    /// Images per class; None: the job's `train.eval_samples`.
    pub samples: Option<u64>,
    /// Device.
    pub device: DeviceSpec,
    /// Dataset URL; None: the job's `data.url`.
    pub data: Option<String>,
    /// How the classifier is trained (the default is what training runs use, so their cache is
    /// shared).
    pub settings: ClassifierSettings,
}

/// What [`evaluate_checkpoint`] did.
#[derive(Debug, Clone)]
pub struct CheckpointEvaluation {
    /// The report.
    pub report: Report,
    /// Where it was written.
    pub url: String,
    /// The figures as on the wire.
    pub evaluation: pb::Evaluation,
}

/// `worker eval`: evaluates a checkpoint's generator at its step and writes the report into the
/// run's output (the classifier is cached there, shared with the run's own evaluations). Blocks
/// the calling thread, which must not be one of `runtime`'s.
pub fn evaluate_checkpoint(options: &EvalOptions, runtime: &Handle) -> Result<CheckpointEvaluation> {
    let started = Instant::now();
    let (ckpt, gan) = runtime.block_on(checkpoint::open_generator(&options.checkpoint, options.device))?;
    let output = layout::run_output_of_checkpoint(&ckpt.url).ok_or_else(|| {
        ckpt.error(format!(
            "not inside a run's output (expected <output>/{}/step-N)",
            layout::CHECKPOINTS
        ))
    })?;
    let output = Location::parse(output)?;
    let config = &ckpt.state.config;
    let samples = options.samples.unwrap_or(config.train.eval_samples);
    if !(1..=gantry_job::MAX_EVAL_SAMPLES).contains(&samples) {
        return Err(invalid(format!(
            "--samples is {samples}, expected 1 to {}",
            gantry_job::MAX_EVAL_SAMPLES
        )));
    }
    let data = options.data.as_deref().unwrap_or(&config.data.url);
    let dataset = runtime.block_on(Dataset::open(data))?;
    let classes = config.data.condition.resolve(dataset.manifest())?;
    if classes.names != ckpt.state.classes {
        return Err(ckpt.error(format!(
            "its classes ({}) are not the dataset's under {} ({}): the dataset at {data} has changed",
            ckpt.state.classes.join(", "),
            config.data.condition,
            classes.names.join(", ")
        )));
    }
    let classifier = prepare_classifier(
        &dataset,
        &config.data.condition,
        config.model.image_size,
        &output,
        &options.settings,
        gan.device,
        runtime,
    )?;
    let report = report_generator(
        &classifier,
        &gan,
        samples,
        config.train.seed,
        ckpt.state.step,
        Some(ckpt.url.clone()),
        started,
    )?;
    let url = write_report(&output, &report, runtime)?;
    log_report(&report, &url);
    Ok(CheckpointEvaluation {
        evaluation: report.to_pb(&url),
        report,
        url,
    })
}
