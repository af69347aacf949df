//! Evaluation of a generator's conditional control, built in: `worker eval --checkpoint URL`, and
//! every `train.eval_every` steps of a run (rank 0, while the other ranks wait at the barrier).
//!
//! - [`Classifier`]: a small CNN trained on the real packed train split for the job's condition
//!   at the job's image size (Adam, bounded work, deterministic given [`ClassifierSettings::seed`]
//!   on a given device and thread count), scored on the held-out split (valid, else test). Its
//!   accuracy there is the ceiling of what a generator can score. It is cached in
//!   `<output>/eval/classifier/`: the weights, the held-out images' feature statistics, and
//!   `classifier.json` (what it was trained on, how, and how well), written last. A run trains it
//!   once; a cache made for another dataset version, condition, image shape or settings is
//!   retrained. Datasets are only read.
//! - [`evaluate`]: scores any [`Images`] (what a generator rendered for each class, or real images
//!   standing in for them) with the classifier: accuracy per class and overall, the label swap,
//!   and the Fréchet distance to the held-out real images in the classifier's feature space.
//! - [`InTraining`]: the hook of [`crate::train`]; [`evaluate_checkpoint`]: `worker eval`.
//! - Reports go to `<output>/eval/step-NNNNNNN.json` ([`Report`]); the step's metrics line
//!   carries the figures as a [`pb::Evaluation`].
//!
//! Conventions:
//! - Accuracies are balanced: the mean over classes of the per-class accuracy (classes with images
//!   only). Generated images are the same number per class, so for them this is the plain
//!   fraction; for the classifier's ceiling on an imbalanced held-out split (CelebA: about 15%
//!   blond) it is the figure a balanced set of generated images can reach. The plain held-out
//!   accuracy is in the classifier's facts.
//! - The classifier weights its training loss by the inverse class frequencies seen so far
//!   (add-one smoothed), so it does not learn the majority class as a prior.
//! - The Fréchet distance `|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)` is
//!   computed in f64 with symmetric square roots by eigendecomposition (negative eigenvalues from
//!   rounding are clamped to 0), so it is finite for any covariances, singular ones included: a
//!   class with fewer images than feature dimensions has a rank-deficient covariance and still
//!   gets a finite (upward-biased) distance; one image gives a zero covariance. Per class it
//!   compares that class's real and generated images (covariances normalised by n - 1); overall
//!   it compares the class-balanced mixtures of both sides (the mean of the classes' means and
//!   second moments), over the classes present on both. It lives in the features of this run's
//!   classifier ([`FEATURES`] dimensions), not Inception-v3's: it is not comparable with
//!   Inception FID ([`FRECHET_NOTE`]).
//! - Figures that cannot be measured (a class without held-out images, a label swap of images
//!   that are not renderings of the same latents) are `null` in the report and `-1` in
//!   [`pb::Evaluation`] (whose metrics lines are JSON, where NaN cannot be written).

use std::collections::HashMap;
use std::time::Instant;

use base::Location;
use dataprep::{Condition, Dataset, LoaderOptions, Position, Split};
use gantry_proto::pb;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};
use tokio::runtime::Handle;

use crate::checkpoint;
use crate::config::{DeviceSpec, JobConfig, TrainConfig};
use crate::gan::Gan;
use crate::train::images_to_tensor;
use crate::{Error, Result};

/// Folder of evaluation reports inside a job output.
pub const EVAL: &str = "eval";
/// Folder of the cached classifier inside [`EVAL`].
pub const CLASSIFIER: &str = "classifier";
/// The classifier's description, written last: a cache without it does not exist.
pub const CLASSIFIER_INFO: &str = "classifier.json";
const WEIGHTS: &str = "weights.safetensors";
const REAL_FEATURES: &str = "real-features.safetensors";
const FORMAT: &str = "gantry-eval-classifier";
const FORMAT_VERSION: u32 = 1;
/// Images per forward pass of the generator and the classifier.
const CHUNK: usize = 256;
/// Value of an unmeasurable figure in [`pb::Evaluation`].
pub const NOT_MEASURED: f64 = -1.0;

/// What every report says about its Fréchet distance.
pub const FRECHET_NOTE: &str = "frechet is the Fréchet distance between real held-out and generated images in the \
     features of this run's own classifier (its penultimate layer), not in Inception-v3's: it is NOT comparable with \
     Inception FID, nor between different classifiers; compare it only across evaluations made with the same \
     classifier (see classifier.trained_on). With few images per class it is biased upwards.";

/// How the classifier is trained. Part of the cache key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierSettings {
    /// Images per step (at most the train split's rows).
    pub batch_size: usize,
    /// Passes over the train split, unless `max_steps` comes first.
    pub epochs: u64,
    /// Most optimiser steps.
    pub max_steps: u64,
    /// Adam learning rate.
    pub lr: f64,
    /// Seed of the initial weights and of the data order.
    pub seed: u64,
    /// Channels of the first convolution (then 2x, 4x, 4x); the features have 4x.
    pub width: i64,
}

impl Default for ClassifierSettings {
    fn default() -> Self {
        Self {
            batch_size: 64,
            epochs: 10,
            max_steps: 1000,
            lr: 1e-3,
            seed: 0,
            width: 32,
        }
    }
}

/// Feature dimensions of the default classifier (the Fréchet distance's space).
pub const FEATURES: i64 = 4 * 32;

impl ClassifierSettings {
    /// Optimiser steps for a train split of `rows` rows.
    pub fn steps(&self, rows: u64) -> u64 {
        let batch = (self.batch_size as u64).clamp(1, rows.max(1));
        (self.epochs * rows).div_ceil(batch).clamp(1, self.max_steps.max(1))
    }
}

/// What a classifier was trained on and how: a cache is used only when this matches exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainedOn {
    /// [`FORMAT`] and its version.
    pub format: String,
    /// Version of the format.
    pub version: u32,
    /// The dataset's URL.
    pub dataset: String,
    /// SHA-256 of its `manifest.json` (which lists every shard's checksum): the dataset's version.
    pub manifest_sha256: String,
    /// The condition.
    pub condition: String,
    /// Class names, by index.
    pub classes: Vec<String>,
    /// Square image size.
    pub image_size: i64,
    /// Image channels.
    pub channels: i64,
    /// The split scored for the ceiling and used as the real side of the Fréchet distance.
    pub held_out: Split,
    /// Training settings.
    pub settings: ClassifierSettings,
}

/// How the training went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingFacts {
    /// Rows of the train split.
    pub train_rows: u64,
    /// Optimiser steps taken.
    pub steps: u64,
    /// Images seen (steps x batch).
    pub images_seen: u64,
    /// Mean loss over the last 10% of the steps.
    pub final_loss: f64,
    /// Seconds it took.
    pub seconds: f64,
    /// The device.
    pub device: String,
}

/// The classifier on the held-out split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldOut {
    /// The split.
    pub split: Split,
    /// Its images.
    pub images: u64,
    /// Balanced accuracy (mean over classes with images): the ceiling.
    pub accuracy: f64,
    /// Fraction of all its images classified correctly.
    pub plain_accuracy: f64,
    /// Per class, by index.
    pub classes: Vec<HeldOutClass>,
}

/// One class of [`HeldOut`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldOutClass {
    /// Class name.
    pub name: String,
    /// Held-out images of the class.
    pub images: u64,
    /// Fraction classified as the class; None without images.
    pub accuracy: Option<f64>,
}

/// A file of the cache with its checksum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CachedFile {
    file: String,
    bytes: u64,
    sha256: String,
}

/// `classifier.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierInfo {
    /// The cache key.
    pub trained_on: TrainedOn,
    /// Feature dimensions.
    pub features: i64,
    /// How training went.
    pub training: TrainingFacts,
    /// The ceiling.
    pub held_out: HeldOut,
    files: Vec<CachedFile>,
}

/// Where a classifier in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provenance {
    /// Trained by this call.
    Trained,
    /// Loaded from the run's cache.
    Cache,
    /// Already in this process's memory (an earlier evaluation of the same run).
    Memory,
}

/// The network: stride-2 convolutions to 1/8 of the image size, one more convolution, an
/// average pool to 4x4, a fully connected layer of [`FEATURES`] (ReLU: the features), and the
/// class logits.
#[derive(Debug)]
struct Net {
    convs: Vec<nn::Conv2D>,
    fc: nn::Linear,
    head: nn::Linear,
}

impl Net {
    fn new(vs: &nn::Path<'_>, channels: i64, classes: i64, width: i64) -> Self {
        let down = nn::ConvConfig {
            stride: 2,
            padding: 1,
            ..Default::default()
        };
        let same = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        let convs = vec![
            nn::conv2d(vs / "conv0", channels, width, 4, down),
            nn::conv2d(vs / "conv1", width, 2 * width, 4, down),
            nn::conv2d(vs / "conv2", 2 * width, 4 * width, 4, down),
            nn::conv2d(vs / "conv3", 4 * width, 4 * width, 3, same),
        ];
        let fc = nn::linear(vs / "fc", 4 * width * 16, 4 * width, Default::default());
        let head = nn::linear(vs / "head", 4 * width, classes, Default::default());
        Self { convs, fc, head }
    }

    /// `(features, logits)` of images in [-1, 1].
    fn forward(&self, images: &Tensor) -> (Tensor, Tensor) {
        let mut h = images.shallow_clone();
        for conv in &self.convs {
            h = conv.forward(&h).relu();
        }
        let features = self.fc.forward(&h.adaptive_avg_pool2d([4, 4]).flatten(1, -1)).relu();
        let logits = self.head.forward(&features);
        (features, logits)
    }
}

/// Feature statistics of a set of images, accumulated in f64 on the CPU.
#[derive(Debug)]
pub struct Stats {
    count: u64,
    sum: Tensor,
    outer: Tensor,
}

impl Stats {
    fn new(dims: i64) -> Self {
        let options = (Kind::Double, Device::Cpu);
        Self {
            count: 0,
            sum: Tensor::zeros([dims], options),
            outer: Tensor::zeros([dims, dims], options),
        }
    }

    /// Adds features `[n, dims]`.
    fn add(&mut self, features: &Tensor) {
        let f = features.to_device(Device::Cpu).to_kind(Kind::Double);
        self.count += f.size()[0] as u64;
        self.sum += f.sum_dim_intlist([0i64].as_slice(), false, Kind::Double);
        self.outer += f.transpose(0, 1).matmul(&f);
    }

    /// Images counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The mean.
    pub fn mean(&self) -> Tensor {
        &self.sum / (self.count.max(1) as f64)
    }

    /// The covariance, normalised by n - 1 (zero for fewer than two images).
    pub fn covariance(&self) -> Tensor {
        if self.count < 2 {
            return self.outer.zeros_like();
        }
        let n = self.count as f64;
        let mean = self.mean();
        (&self.outer - mean.outer(&mean) * n) / (n - 1.0)
    }

    /// The mean second moment `E[x x^T]`.
    fn second_moment(&self) -> Tensor {
        &self.outer / (self.count.max(1) as f64)
    }
}

/// The Fréchet distance between two Gaussians (means `[d]`, covariances `[d, d]`), in f64:
/// `|mu1 - mu2|^2 + tr(s1) + tr(s2) - 2 tr((s1^1/2 s2 s1^1/2)^1/2)`, never negative.
pub fn frechet_distance(mu1: &Tensor, s1: &Tensor, mu2: &Tensor, s2: &Tensor) -> f64 {
    let d = |t: &Tensor| t.to_device(Device::Cpu).to_kind(Kind::Double);
    let (mu1, s1, mu2, s2) = (d(mu1), d(s1), d(mu2), d(s2));
    let root = psd_sqrt(&s1);
    let middle = root.matmul(&s2).matmul(&root);
    let (eigenvalues, _) = symmetric(&middle).linalg_eigh("L");
    let cross = eigenvalues.clamp_min(0.0).sqrt().sum(Kind::Double).double_value(&[]);
    let trace = |s: &Tensor| s.diagonal(0, 0, 1).sum(Kind::Double).double_value(&[]);
    let means = (&mu1 - &mu2).square().sum(Kind::Double).double_value(&[]);
    (means + trace(&s1) + trace(&s2) - 2.0 * cross).max(0.0)
}

fn symmetric(a: &Tensor) -> Tensor {
    (a + a.transpose(0, 1)) / 2.0
}

/// The symmetric square root of a positive semi-definite matrix; negative eigenvalues (rounding)
/// count as 0.
fn psd_sqrt(a: &Tensor) -> Tensor {
    let (eigenvalues, vectors) = symmetric(a).linalg_eigh("L");
    (&vectors * eigenvalues.clamp_min(0.0).sqrt().unsqueeze(0)).matmul(&vectors.transpose(0, 1))
}

/// The Fréchet distance between two sets' statistics; None when either is empty.
pub fn stats_distance(a: &Stats, b: &Stats) -> Option<f64> {
    (a.count > 0 && b.count > 0).then(|| frechet_distance(&a.mean(), &a.covariance(), &b.mean(), &b.covariance()))
}

/// The Fréchet distance between the class-balanced mixtures of `a` and `b`, over the classes
/// with images on both sides; None when there is none.
pub fn mixture_distance(a: &[Stats], b: &[Stats]) -> Option<f64> {
    let both: Vec<usize> = (0..a.len().min(b.len()))
        .filter(|&k| a[k].count > 0 && b[k].count > 0)
        .collect();
    if both.is_empty() {
        return None;
    }
    let mixture = |side: &[Stats]| {
        let n = both.len() as f64;
        let mean = both
            .iter()
            .map(|&k| side[k].mean())
            .fold(side[0].sum.zeros_like(), |acc, m| acc + m)
            / n;
        let moment = both
            .iter()
            .map(|&k| side[k].second_moment())
            .fold(side[0].outer.zeros_like(), |acc, m| acc + m)
            / n;
        let covariance = moment - mean.outer(&mean);
        (mean, covariance)
    };
    let ((ma, sa), (mb, sb)) = (mixture(a), mixture(b));
    Some(frechet_distance(&ma, &sa, &mb, &sb))
}

/// A trained classifier with the held-out images' feature statistics.
#[derive(Debug)]
pub struct Classifier {
    vs: nn::VarStore,
    net: Net,
    info: ClassifierInfo,
    real: Vec<Stats>,
    provenance: Provenance,
    /// Seconds its preparation took (0 when reused from memory).
    seconds: f64,
}

impl Classifier {
    /// What it was trained on, how, and its held-out accuracy.
    pub fn info(&self) -> &ClassifierInfo {
        &self.info
    }

    /// Whether this instance was trained, loaded from the cache, or is reused from memory.
    pub fn provenance(&self) -> Provenance {
        self.provenance
    }

    /// Class names.
    pub fn classes(&self) -> &[String] {
        &self.info.trained_on.classes
    }

    /// The device it runs on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The ceiling: balanced accuracy on the held-out split.
    pub fn ceiling(&self) -> f64 {
        self.info.held_out.accuracy
    }

    /// Feature statistics of the held-out images of each class.
    pub fn real(&self) -> &[Stats] {
        &self.real
    }

    /// `(features, logits)` of images in [-1, 1] (any device), without gradients.
    pub fn forward(&self, images: &Tensor) -> (Tensor, Tensor) {
        tch::no_grad(|| self.net.forward(&images.to_device(self.device()).to_kind(Kind::Float)))
    }

    /// Predicted classes of images in [-1, 1].
    pub fn predict(&self, images: &Tensor) -> Tensor {
        self.forward(images).1.argmax(1, false)
    }
}

/// The split scored for the ceiling: valid when the dataset has it, else test; an error naming
/// the dataset when it has neither.
pub fn held_out_split(dataset: &Dataset) -> Result<Split> {
    let manifest = dataset.manifest();
    [Split::Valid, Split::Test]
        .into_iter()
        .find(|&s| manifest.split_rows(s) > 0)
        .ok_or_else(|| {
            invalid(format!(
                "the dataset at {} has no held-out images (its valid and test splits are empty): evaluation scores its \
             classifier there and compares generated images with them; repack it with a partition, or set \
             train.eval_every = 0",
                dataset.location().url()
            ))
        })
}

fn invalid(problem: String) -> Error {
    gantry_job::JobError::Invalid {
        problems: vec![problem],
    }
    .into()
}

/// Calls `f` on the images of `split` in chunks (`[n, c, h, w]` in [-1, 1] on the CPU, and their
/// classes), in storage order.
fn scan_split(
    dataset: &Dataset,
    condition: &Condition,
    split: Split,
    runtime: &Handle,
    mut f: impl FnMut(&Tensor, &[i64]),
) -> Result<()> {
    let rows = dataset.manifest().split_rows(split) as usize;
    if rows == 0 {
        return Ok(());
    }
    let loader = dataset.loader(LoaderOptions {
        split: Some(split),
        batch_size: rows,
        shuffle: false,
        prefetch: 1,
        condition: Some(condition.clone()),
        ..LoaderOptions::default()
    })?;
    let mut stream = {
        let _guard = runtime.enter();
        loader.epoch(0, 0)
    };
    let image = &dataset.manifest().image;
    let (size, channels, bytes) = (i64::from(image.height), i64::from(image.channels), image.bytes());
    while let Some(batch) = stream.blocking_next() {
        let batch = batch?;
        for start in (0..batch.len).step_by(CHUNK) {
            let len = (batch.len - start).min(CHUNK);
            let pixels = &batch.pixels[start * bytes..(start + len) * bytes];
            let x = images_to_tensor(pixels, len as i64, size, channels, Device::Cpu);
            f(&x, &batch.classes[start..start + len]);
        }
    }
    Ok(())
}

/// All images of `split` (`[n, c, h, w]` in [-1, 1] on the CPU) with their classes under
/// `condition`, in storage order.
pub fn read_split(
    dataset: &Dataset,
    condition: &Condition,
    split: Split,
    runtime: &Handle,
) -> Result<(Tensor, Vec<i64>)> {
    let (mut images, mut classes) = (Vec::new(), Vec::new());
    scan_split(dataset, condition, split, runtime, |x, c| {
        images.push(x.shallow_clone());
        classes.extend_from_slice(c);
    })?;
    let image = &dataset.manifest().image;
    let images = if images.is_empty() {
        Tensor::zeros(
            [
                0,
                i64::from(image.channels),
                i64::from(image.height),
                i64::from(image.width),
            ],
            (Kind::Float, Device::Cpu),
        )
    } else {
        Tensor::cat(&images, 0)
    };
    Ok((images, classes))
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The cache key for a dataset, condition and settings; checks that the dataset can train and
/// score a classifier at `image_size`.
fn trained_on(
    dataset: &Dataset,
    condition: &Condition,
    image_size: i64,
    settings: &ClassifierSettings,
    runtime: &Handle,
) -> Result<TrainedOn> {
    let manifest = dataset.manifest();
    let url = dataset.location().url();
    let image = &manifest.image;
    if image.height != image.width || i64::from(image.height) != image_size {
        return Err(invalid(format!(
            "the dataset at {url} holds {}x{} images; the evaluation classifier works at the model's {image_size}x{image_size}",
            image.height, image.width
        )));
    }
    if manifest.split_rows(Split::Train) == 0 {
        return Err(invalid(format!(
            "the dataset at {url} has no train split: the evaluation classifier is trained on it"
        )));
    }
    let held_out = held_out_split(dataset)?;
    let classes = condition.resolve(manifest)?;
    let manifest_bytes = runtime.block_on(dataset.location().get(dataprep::manifest::MANIFEST))?;
    Ok(TrainedOn {
        format: FORMAT.to_string(),
        version: FORMAT_VERSION,
        dataset: url.to_string(),
        manifest_sha256: sha256(&manifest_bytes),
        condition: condition.to_string(),
        classes: classes.names,
        image_size,
        channels: i64::from(image.channels),
        held_out,
        settings: settings.clone(),
    })
}

/// The classifier for `dataset` under `condition`, from `<output>/eval/classifier/` when the
/// cache there matches, else trained on the train split and cached there (the dataset is only
/// read). `output` is the job output.
pub fn prepare_classifier(
    dataset: &Dataset,
    condition: &Condition,
    image_size: i64,
    output: &Location,
    settings: &ClassifierSettings,
    device: Device,
    runtime: &Handle,
) -> Result<Classifier> {
    let started = Instant::now();
    let wanted = trained_on(dataset, condition, image_size, settings, runtime)?;
    let cache = output.join(EVAL).join(CLASSIFIER);
    match load_cached(&cache, &wanted, device, runtime)? {
        Ok(mut classifier) => {
            classifier.seconds = started.elapsed().as_secs_f64();
            tracing::info!(
                cache = %cache.url(),
                ceiling = classifier.ceiling(),
                "evaluation classifier loaded from the run's cache"
            );
            return Ok(classifier);
        }
        Err(Some(reason)) => {
            tracing::info!(cache = %cache.url(), reason = %reason, "evaluation classifier cache does not match: retraining");
        }
        Err(None) => {}
    }
    let mut classifier = train_classifier(dataset, condition, wanted, device, runtime)?;
    save_cached(&cache, &mut classifier, runtime)?;
    classifier.seconds = started.elapsed().as_secs_f64();
    Ok(classifier)
}

/// The cached classifier; `Err(None)` when there is no cache, `Err(Some(reason))` when it does
/// not match or does not load.
fn load_cached(
    cache: &Location,
    wanted: &TrainedOn,
    device: Device,
    runtime: &Handle,
) -> Result<std::result::Result<Classifier, Option<String>>> {
    let Some(bytes) = runtime.block_on(cache.get_opt(CLASSIFIER_INFO))? else {
        return Ok(Err(None));
    };
    let info: ClassifierInfo = match serde_json::from_slice(&bytes) {
        Ok(info) => info,
        Err(e) => return Ok(Err(Some(format!("{CLASSIFIER_INFO} does not decode ({e})")))),
    };
    if info.trained_on != *wanted {
        return Ok(Err(Some(differences(&info.trained_on, wanted))));
    }
    let mut files = HashMap::new();
    for entry in &info.files {
        let Some(bytes) = runtime.block_on(cache.get_opt(&entry.file))? else {
            return Ok(Err(Some(format!("{} is missing", entry.file))));
        };
        if bytes.len() as u64 != entry.bytes || sha256(&bytes) != entry.sha256 {
            return Ok(Err(Some(format!("{} does not match its checksum", entry.file))));
        }
        files.insert(entry.file.clone(), bytes);
    }
    let decoded = |name: &str| -> std::result::Result<HashMap<String, Tensor>, String> {
        let bytes = files.get(name).ok_or_else(|| format!("{name} is not listed"))?;
        checkpoint::from_safetensors(bytes, cache.url(), name).map_err(|e| base::error_chain(&e))
    };
    let (weights, real) = match (decoded(WEIGHTS), decoded(REAL_FEATURES)) {
        (Ok(w), Ok(r)) => (w, r),
        (Err(e), _) | (_, Err(e)) => return Ok(Err(Some(e))),
    };
    let (vs, net) = build(wanted, device);
    if let Err(e) = crate::gan::copy_into(&vs, &weights) {
        return Ok(Err(Some(format!("{WEIGHTS}: {e}"))));
    }
    let stats = match stats_from(&real, wanted.classes.len(), info.features) {
        Ok(stats) => stats,
        Err(e) => return Ok(Err(Some(format!("{REAL_FEATURES}: {e}")))),
    };
    Ok(Ok(Classifier {
        vs,
        net,
        info,
        real: stats,
        provenance: Provenance::Cache,
        seconds: 0.0,
    }))
}

/// Names the keys in which a cache differs from what is wanted.
fn differences(have: &TrainedOn, want: &TrainedOn) -> String {
    let (a, b) = (
        serde_json::to_value(have).expect("serialises"),
        serde_json::to_value(want).expect("serialises"),
    );
    let keys: Vec<String> = match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => b
            .iter()
            .filter(|(k, v)| a.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: {} -> {v}", a.get(k).map_or("none".to_string(), |x| x.to_string())))
            .collect(),
        _ => Vec::new(),
    };
    format!("made for a different {}", keys.join("; "))
}

fn build(on: &TrainedOn, device: Device) -> (nn::VarStore, Net) {
    let vs = nn::VarStore::new(device);
    let net = Net::new(&vs.root(), on.channels, on.classes.len() as i64, on.settings.width);
    (vs, net)
}

fn stats_from(named: &HashMap<String, Tensor>, classes: usize, dims: i64) -> std::result::Result<Vec<Stats>, String> {
    (0..classes)
        .map(|k| {
            let get = |part: &str| {
                named
                    .get(&format!("class.{k}.{part}"))
                    .ok_or_else(|| format!("class.{k}.{part} is missing"))
            };
            let (count, sum, outer) = (get("count")?, get("sum")?, get("outer")?);
            if sum.size() != [dims] || outer.size() != [dims, dims] {
                return Err(format!("class {k}'s statistics do not have {dims} dimensions"));
            }
            Ok(Stats {
                count: count.int64_value(&[]) as u64,
                sum: sum.to_kind(Kind::Double),
                outer: outer.to_kind(Kind::Double),
            })
        })
        .collect()
}

/// Writes the weights and the statistics, then `classifier.json` (the commit).
fn save_cached(cache: &Location, classifier: &mut Classifier, runtime: &Handle) -> Result<()> {
    runtime.block_on(cache.delete(CLASSIFIER_INFO))?;
    let mut real: Vec<(String, Tensor)> = Vec::new();
    for (k, s) in classifier.real.iter().enumerate() {
        real.push((format!("class.{k}.count"), Tensor::from(s.count as i64)));
        real.push((format!("class.{k}.sum"), s.sum.shallow_clone()));
        real.push((format!("class.{k}.outer"), s.outer.shallow_clone()));
    }
    let weights = classifier.vs.variables();
    let files = [
        (WEIGHTS, checkpoint::to_safetensors(weights.iter())?),
        (
            REAL_FEATURES,
            checkpoint::to_safetensors(real.iter().map(|(n, t)| (n, t)))?,
        ),
    ];
    classifier.info.files.clear();
    for (name, bytes) in files {
        classifier.info.files.push(CachedFile {
            file: name.to_string(),
            bytes: bytes.len() as u64,
            sha256: sha256(&bytes),
        });
        runtime.block_on(cache.put(name, bytes))?;
    }
    let json = serde_json::to_vec_pretty(&classifier.info).expect("classifier info serialises");
    runtime.block_on(cache.put(CLASSIFIER_INFO, json))?;
    Ok(())
}

/// Trains the classifier on the train split and scores it on the held-out split.
fn train_classifier(
    dataset: &Dataset,
    condition: &Condition,
    on: TrainedOn,
    device: Device,
    runtime: &Handle,
) -> Result<Classifier> {
    let started = Instant::now();
    let settings = &on.settings;
    let classes = on.classes.len();
    let rows = dataset.manifest().split_rows(Split::Train);
    let batch = settings.batch_size.clamp(1, rows as usize);
    let steps = settings.steps(rows);
    tracing::info!(
        dataset = %on.dataset,
        condition = %on.condition,
        train_rows = rows,
        steps,
        batch,
        "training the evaluation classifier"
    );
    tch::manual_seed(base::seed::mix(&[settings.seed, 0xC1A5]) as i64);
    let (vs, net) = build(&on, device);
    let mut optimizer = nn::Adam::default().build(&vs, settings.lr)?;
    let loader = dataset.loader(LoaderOptions {
        split: Some(Split::Train),
        batch_size: batch,
        seed: settings.seed,
        shuffle: true,
        prefetch: 4,
        condition: Some(condition.clone()),
        ..LoaderOptions::default()
    })?;
    let mut stream = {
        let _guard = runtime.enter();
        loader.stream(Position::default())
    };
    let (size, channels) = (on.image_size, on.channels);
    let mut seen = vec![1.0f64; classes];
    let mut last_losses = Vec::new();
    let tail = (steps / 10).max(1);
    for step in 0..steps {
        let batch = match stream.blocking_next() {
            Some(batch) => batch?,
            None => return Err(dataprep::Error::Interrupted.into()),
        };
        for &c in &batch.classes {
            seen[c as usize] += 1.0;
        }
        let total: f64 = seen.iter().sum();
        let weights: Vec<f32> = seen.iter().map(|&n| (total / (classes as f64 * n)) as f32).collect();
        let x = images_to_tensor(&batch.pixels, batch.len as i64, size, channels, device);
        let y = Tensor::from_slice(&batch.classes).to_device(device);
        let w = Tensor::from_slice(&weights).to_device(device);
        let (_, logits) = net.forward(&x);
        let loss = logits.cross_entropy_loss(&y, Some(&w), tch::Reduction::Mean, -100, 0.0);
        optimizer.backward_step(&loss);
        if step + tail >= steps {
            last_losses.push(loss.double_value(&[]));
        }
    }
    drop(stream);
    let final_loss = last_losses.iter().sum::<f64>() / last_losses.len().max(1) as f64;
    let training = TrainingFacts {
        train_rows: rows,
        steps,
        images_seen: steps * batch as u64,
        final_loss,
        seconds: started.elapsed().as_secs_f64(),
        device: crate::device::device_name(device),
    };
    // The ceiling and the real side of the Fréchet distance.
    let mut classifier = Classifier {
        vs,
        net,
        info: ClassifierInfo {
            features: 4 * settings.width,
            training,
            held_out: HeldOut {
                split: on.held_out,
                images: 0,
                accuracy: 0.0,
                plain_accuracy: 0.0,
                classes: Vec::new(),
            },
            trained_on: on,
            files: Vec::new(),
        },
        real: Vec::new(),
        provenance: Provenance::Trained,
        seconds: 0.0,
    };
    let dims = classifier.info.features;
    let mut real: Vec<Stats> = (0..classes).map(|_| Stats::new(dims)).collect();
    let mut correct = vec![0u64; classes];
    let held_out = classifier.info.trained_on.held_out;
    scan_split(dataset, condition, held_out, runtime, |x, c| {
        let (features, logits) = classifier.forward(x);
        let predicted = Vec::<i64>::try_from(&logits.argmax(1, false).to_device(Device::Cpu)).expect("i64 predictions");
        let features = features.to_device(Device::Cpu);
        for k in 0..classes {
            let rows: Vec<i64> = (0..c.len()).filter(|&i| c[i] == k as i64).map(|i| i as i64).collect();
            if rows.is_empty() {
                continue;
            }
            real[k].add(&features.index_select(0, &Tensor::from_slice(&rows)));
            correct[k] += rows.iter().filter(|&&i| predicted[i as usize] == k as i64).count() as u64;
        }
    })?;
    let names = classifier.info.trained_on.classes.clone();
    let per_class: Vec<HeldOutClass> = (0..classes)
        .map(|k| HeldOutClass {
            name: names[k].clone(),
            images: real[k].count,
            accuracy: (real[k].count > 0).then(|| correct[k] as f64 / real[k].count as f64),
        })
        .collect();
    let images: u64 = real.iter().map(|s| s.count).sum();
    classifier.info.held_out = HeldOut {
        split: held_out,
        images,
        accuracy: balanced(per_class.iter().map(|c| c.accuracy)),
        plain_accuracy: correct.iter().sum::<u64>() as f64 / images.max(1) as f64,
        classes: per_class,
    };
    classifier.real = real;
    tracing::info!(
        steps,
        seconds = started.elapsed().as_secs_f64(),
        final_loss,
        held_out = %held_out,
        ceiling = classifier.ceiling(),
        plain_accuracy = classifier.info.held_out.plain_accuracy,
        "evaluation classifier trained"
    );
    Ok(classifier)
}

/// The mean of the measured values (0 when none is).
fn balanced(values: impl Iterator<Item = Option<f64>>) -> f64 {
    let measured: Vec<f64> = values.flatten().collect();
    measured.iter().sum::<f64>() / measured.len().max(1) as f64
}

/// Images to evaluate, by the class they were asked to be: a generator's renderings, or real
/// images standing in for them.
pub trait Images {
    /// Images asked to be of `class`.
    fn count(&self, class: usize) -> usize;
    /// Images `start..start + len` asked to be of `class`, `[len, c, h, w]` in [-1, 1] on any device.
    fn chunk(&mut self, class: usize, start: usize, len: usize) -> Result<Tensor>;
    /// Whether image `i` of every class renders the same latent (every class has the same
    /// count): then the label swap is measured.
    fn paired(&self) -> bool {
        false
    }
}

/// A generator's renderings of fixed latents, each as every class.
#[derive(Debug)]
pub struct Rendered<'a> {
    gan: &'a Gan,
    latents: Tensor,
}

impl<'a> Rendered<'a> {
    /// `samples` latents drawn on the CPU from `seed` alone (the same on every device).
    pub fn new(gan: &'a Gan, samples: u64, seed: u64) -> Self {
        tch::manual_seed(base::seed::mix(&[seed, 0xE7A1]) as i64);
        let latents = Tensor::randn([samples as i64, gan.spec.z_dim], (Kind::Float, Device::Cpu));
        Self { gan, latents }
    }
}

impl Images for Rendered<'_> {
    fn count(&self, _class: usize) -> usize {
        self.latents.size()[0] as usize
    }

    fn chunk(&mut self, class: usize, start: usize, len: usize) -> Result<Tensor> {
        let z = self.latents.narrow(0, start as i64, len as i64);
        let labels = Tensor::full([len as i64], class as i64, (Kind::Int64, Device::Cpu));
        Ok(self.gan.generate(&z, &labels))
    }

    fn paired(&self) -> bool {
        true
    }
}

/// Images with a class each (real ones standing in for generated ones, in tests and checks).
#[derive(Debug)]
pub struct Labelled {
    images: Tensor,
    rows: Vec<Vec<i64>>,
}

impl Labelled {
    /// `images` `[n, c, h, w]` in [-1, 1], image `i` asked to be of class `classes[i]`, among `count` classes.
    pub fn new(images: Tensor, classes: &[i64], count: usize) -> Self {
        let mut rows = vec![Vec::new(); count];
        for (i, &c) in classes.iter().enumerate() {
            rows[c as usize].push(i as i64);
        }
        Self { images, rows }
    }
}

impl Images for Labelled {
    fn count(&self, class: usize) -> usize {
        self.rows[class].len()
    }

    fn chunk(&mut self, class: usize, start: usize, len: usize) -> Result<Tensor> {
        let rows = Tensor::from_slice(&self.rows[class][start..start + len]);
        Ok(self.images.index_select(0, &rows))
    }
}

/// One class of an [`Evaluated`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassFigures {
    /// Class name.
    pub name: String,
    /// Images asked to be of the class.
    pub images: u64,
    /// Fraction of them classified as the class; None without images.
    pub accuracy: Option<f64>,
    /// Fréchet distance between its held-out real and its asked-for images (classifier features).
    pub frechet: Option<f64>,
    /// Held-out real images of the class.
    pub real_images: u64,
    /// The classifier's accuracy on them (the class's ceiling).
    pub classifier_accuracy: Option<f64>,
}

/// What [`evaluate`] measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluated {
    /// The classifier's balanced held-out accuracy: the ceiling of `accuracy`.
    pub classifier_accuracy: f64,
    /// Balanced accuracy on the images (mean over classes with images).
    pub accuracy: f64,
    /// Fraction of latents whose rendering as every class is classified as that class each time;
    /// None when the images are not renderings of shared latents.
    pub label_swap: Option<f64>,
    /// Fréchet distance between the class-balanced mixtures of real held-out and evaluated images.
    pub frechet: Option<f64>,
    /// Per class, by index.
    pub classes: Vec<ClassFigures>,
}

/// Scores `images` with `classifier`.
pub fn evaluate(classifier: &Classifier, images: &mut dyn Images) -> Result<Evaluated> {
    let names = classifier.classes();
    let dims = classifier.info.features;
    let paired = images.paired();
    let latents = images.count(0);
    let mut all_correct = vec![true; if paired { latents } else { 0 }];
    let mut stats = Vec::new();
    let mut correct = Vec::new();
    for k in 0..names.len() {
        let count = images.count(k);
        let mut s = Stats::new(dims);
        let mut hits = 0u64;
        for start in (0..count).step_by(CHUNK) {
            let len = (count - start).min(CHUNK);
            let x = images.chunk(k, start, len)?;
            let (features, logits) = classifier.forward(&x);
            let predicted = Vec::<i64>::try_from(&logits.argmax(1, false).to_device(Device::Cpu))?;
            for (i, &p) in predicted.iter().enumerate() {
                hits += u64::from(p == k as i64);
                if paired && p != k as i64 {
                    all_correct[start + i] = false;
                }
            }
            s.add(&features);
        }
        stats.push(s);
        correct.push(hits);
    }
    let held = &classifier.info.held_out.classes;
    let classes: Vec<ClassFigures> = (0..names.len())
        .map(|k| ClassFigures {
            name: names[k].clone(),
            images: stats[k].count,
            accuracy: (stats[k].count > 0).then(|| correct[k] as f64 / stats[k].count as f64),
            frechet: stats_distance(&classifier.real[k], &stats[k]),
            real_images: classifier.real[k].count,
            classifier_accuracy: held.get(k).and_then(|h| h.accuracy),
        })
        .collect();
    Ok(Evaluated {
        classifier_accuracy: classifier.ceiling(),
        accuracy: balanced(classes.iter().map(|c| c.accuracy)),
        label_swap: (paired && latents > 0)
            .then(|| all_correct.iter().filter(|&&ok| ok).count() as f64 / latents as f64),
        frechet: mixture_distance(&classifier.real, &stats),
        classes,
    })
}

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
    let name = format!("{}.json", checkpoint::folder_name(report.step));
    let folder = output.join(EVAL);
    let json = serde_json::to_vec_pretty(report).expect("report serialises");
    runtime.block_on(folder.put(&name, json))?;
    Ok(folder.url_of(&name))
}

/// Evaluates a generator's renderings of `samples` latents per class (drawn from `seed`) and
/// builds the report (not yet written); `started` is when the evaluation began.
fn report_generator(
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

fn log_report(report: &Report, url: &str) {
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

/// Whether a run evaluates after `step`: every `eval_every` steps and at the last step, when
/// `eval_every` is set.
pub fn due(train: &TrainConfig, step: u64) -> bool {
    train.eval_every > 0 && (step.is_multiple_of(train.eval_every) || step == train.steps)
}

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
    /// next training step seeds it again). A libtorch failure is an [`Error::Allocation`].
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
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<_> {
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
        }));
        let report = match outcome {
            Ok(report) => report?,
            Err(panic) => {
                return Err(Error::Allocation {
                    during: format!("evaluation at step {step}"),
                    message: crate::train::libtorch_message(
                        panic
                            .downcast_ref::<String>()
                            .map(String::as_str)
                            .or_else(|| panic.downcast_ref::<&str>().copied())
                            .unwrap_or("a panic without a message"),
                    ),
                });
            }
        };
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

/// The job output holding a checkpoint folder (`<output>/checkpoints/step-N`).
fn run_output(folder: &str) -> Option<&str> {
    let (parent, name) = folder.trim_end_matches('/').rsplit_once('/')?;
    let (output, checkpoints) = parent.rsplit_once('/')?;
    (name.starts_with("step-") && checkpoints == checkpoint::CHECKPOINTS && !output.is_empty()).then_some(output)
}

/// `worker eval`: evaluates a checkpoint's generator at its step and writes the report into the
/// run's output (the classifier is cached there, shared with the run's own evaluations). Blocks
/// the calling thread, which must not be one of `runtime`'s.
pub fn evaluate_checkpoint(options: &EvalOptions, runtime: &Handle) -> Result<CheckpointEvaluation> {
    let started = Instant::now();
    let folder = runtime.block_on(checkpoint::resolve(&options.checkpoint))?;
    let ckpt = runtime.block_on(checkpoint::load(&folder))?;
    let bad = |message: String| Error::Checkpoint {
        url: ckpt.url.clone(),
        message,
    };
    let output = run_output(&ckpt.url).ok_or_else(|| {
        bad(format!(
            "not inside a run's output (expected <output>/{}/step-N)",
            checkpoint::CHECKPOINTS
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
        return Err(bad(format!(
            "its classes ({}) are not the dataset's under {} ({}): the dataset at {data} has changed",
            ckpt.state.classes.join(", "),
            config.data.condition,
            classes.names.join(", ")
        )));
    }
    let device = crate::device::resolve(options.device)?;
    let mut gan = crate::train::build_gan(config, ckpt.state.channels, classes.len() as i64, device);
    gan.load_generator(&ckpt.generator).map_err(bad)?;
    let classifier = prepare_classifier(
        &dataset,
        &config.data.condition,
        config.model.image_size,
        &output,
        &options.settings,
        device,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_folder_names_its_run_output() {
        assert_eq!(run_output("/runs/a/checkpoints/step-0000004"), Some("/runs/a"));
        assert_eq!(
            run_output("s3://b/runs/a/checkpoints/step-0000004/"),
            Some("s3://b/runs/a")
        );
        assert_eq!(run_output("/runs/a/step-0000004"), None);
        assert_eq!(run_output("step-1"), None);
    }

    #[test]
    fn evaluations_are_due_every_n_steps_and_at_the_end() {
        let mut train = TrainConfig {
            steps: 10,
            ..TrainConfig::default()
        };
        assert!((1..=10).all(|s| !due(&train, s)));
        train.eval_every = 4;
        let due_at: Vec<u64> = (1..=10).filter(|&s| due(&train, s)).collect();
        assert_eq!(due_at, [4, 8, 10]);
    }
}
