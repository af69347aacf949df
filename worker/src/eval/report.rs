//! Evaluation reports: [`Report`] (`<output>/eval/step-NNNNNNN.json`), its figures for the wire
//! ([`Report::to_pb`], unmeasurable ones as [`NOT_MEASURED`]) and for people
//! ([`Report::summary`]), [`write_report`], and [`report_generator`], which scores a generator
//! and fills a report in.

use std::time::Instant;

use base::Location;
use gantry_proto::pb;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use super::classifier::{Classifier, ClassifierInfo, Provenance};
use super::score::{Evaluated, Rendered, evaluate};
use crate::Result;
use crate::gan::Gan;

/// Value of an unmeasurable figure in [`pb::Evaluation`].
pub const NOT_MEASURED: f64 = -1.0;

/// What every report says about its Fréchet distance.
pub const FRECHET_NOTE: &str = "frechet is the Fréchet distance between real held-out and generated images in the \
     features of this run's own classifier (its penultimate layer), not in Inception-v3's: it is NOT comparable with \
     Inception FID, nor between different classifiers; compare it only across evaluations made with the same \
     classifier (see classifier.trained_on). With few images per class it is biased upwards.";

/// `<output>/eval/step-NNNNNNN.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The generator's step.
    pub step: u64,
    /// The checkpoint evaluated (`worker eval`); None during training.
    pub checkpoint: Option<String>,
    /// What the Fréchet distance is and is not ([`FRECHET_NOTE`]).
    pub note: String,
    /// The figures.
    #[serde(flatten)]
    pub figures: Evaluated,
    /// Images generated per class.
    pub samples_per_class: u64,
    /// Seconds the evaluation took, the classifier's preparation included.
    pub seconds: f64,
    /// Seconds spent training or loading the classifier for this evaluation (0 from memory).
    pub classifier_seconds: f64,
    /// Where the classifier came from.
    pub classifier_provenance: Provenance,
    /// The device.
    pub device: String,
    /// The classifier: what it was trained on, how, and its held-out accuracy.
    pub classifier: ClassifierInfo,
}

impl Report {
    /// The figures for the wire: unmeasurable ones are [`NOT_MEASURED`].
    pub fn to_pb(&self, url: &str) -> pb::Evaluation {
        let f = &self.figures;
        let or = |v: Option<f64>| v.unwrap_or(NOT_MEASURED);
        pb::Evaluation {
            step: self.step,
            classifier_accuracy: f.classifier_accuracy,
            accuracy: f.accuracy,
            label_swap: or(f.label_swap),
            frechet: or(f.frechet),
            classes: f
                .classes
                .iter()
                .map(|c| pb::ClassEvaluation {
                    name: c.name.clone(),
                    accuracy: or(c.accuracy),
                    frechet: or(c.frechet),
                    classifier_accuracy: or(c.classifier_accuracy),
                })
                .collect(),
            samples_per_class: self.samples_per_class,
            url: url.to_string(),
        }
    }

    /// A readable summary: overall figures and a table per class.
    pub fn summary(&self, url: &str) -> String {
        let f = &self.figures;
        let c = &self.classifier;
        let num = |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        let mut out = format!(
            "evaluation at step {} ({} images per class{}); report {url}\n",
            self.step,
            self.samples_per_class,
            self.checkpoint
                .as_deref()
                .map_or(String::new(), |ckpt| format!(", checkpoint {ckpt}"))
        );
        out += &format!(
            "classifier: {}, trained on {} train images ({} steps, {:.0} s on {}), ceiling {:.3} on {} {} images\n",
            match self.classifier_provenance {
                Provenance::Trained => "trained now",
                Provenance::Cache => "from the run's cache",
                Provenance::Memory => "kept in memory",
            },
            c.training.train_rows,
            c.training.steps,
            c.training.seconds,
            c.training.device,
            c.held_out.accuracy,
            c.held_out.images,
            c.held_out.split
        );
        let width = f
            .classes
            .iter()
            .map(|k| k.name.chars().count())
            .max()
            .unwrap_or(5)
            .max(7);
        out += &format!(
            "{:width$}  {:>8}  {:>8}  {:>9}  {:>6}\n",
            "class", "accuracy", "ceiling", "frechet*", "real"
        );
        for k in &f.classes {
            out += &format!(
                "{:width$}  {:>8}  {:>8}  {:>9}  {:>6}\n",
                k.name,
                num(k.accuracy, 3),
                num(k.classifier_accuracy, 3),
                num(k.frechet, 3),
                k.real_images
            );
        }
        out += &format!(
            "{:width$}  {:>8}  {:>8}  {:>9}  {:>6}\n",
            "overall",
            format!("{:.3}", f.accuracy),
            format!("{:.3}", f.classifier_accuracy),
            num(f.frechet, 3),
            c.held_out.images
        );
        out += &format!(
            "label swap (same latent, every class recognised): {}\n",
            num(f.label_swap, 3)
        );
        out += "* Fréchet distance in the classifier's features: not comparable with Inception FID\n";
        out
    }
}

/// Writes `report` to `<output>/eval/step-NNNNNNN.json`; returns its URL.
pub fn write_report(output: &Location, report: &Report, runtime: &Handle) -> Result<String> {
    let name = base::layout::eval_report(report.step);
    let folder = output.join(base::layout::EVAL);
    let json = serde_json::to_vec_pretty(report).expect("report serialises");
    runtime.block_on(folder.put(&name, json))?;
    Ok(folder.url_of(&name))
}

/// Evaluates a generator's renderings of `samples` latents per class (drawn from `seed`) and
/// builds the report (not yet written); `started` is when the evaluation began.
pub(super) fn report_generator(
    classifier: &Classifier,
    gan: &Gan,
    samples: u64,
    seed: u64,
    step: u64,
    checkpoint: Option<String>,
    started: Instant,
) -> Result<Report> {
    let mut images = Rendered::new(gan, samples, seed);
    let figures = evaluate(classifier, &mut images)?;
    Ok(Report {
        step,
        checkpoint,
        note: FRECHET_NOTE.to_string(),
        figures,
        samples_per_class: samples,
        seconds: started.elapsed().as_secs_f64(),
        classifier_seconds: classifier.seconds,
        classifier_provenance: classifier.provenance,
        device: crate::device::device_name(gan.device),
        classifier: classifier.info.clone(),
    })
}

/// Logs a report's figures and where it is.
pub(super) fn log_report(report: &Report, url: &str) {
    let f = &report.figures;
    tracing::info!(
        step = report.step,
        accuracy = f.accuracy,
        ceiling = f.classifier_accuracy,
        label_swap = f.label_swap,
        frechet = f.frechet,
        per_class_accuracy = ?f.classes.iter().map(|c| c.accuracy).collect::<Vec<_>>(),
        seconds = report.seconds,
        report = %url,
        "evaluation"
    );
}
