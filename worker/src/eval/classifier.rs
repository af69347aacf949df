//! The evaluation classifier: [`Classifier`] (the network, its description [`ClassifierInfo`]
//! and the held-out images' feature statistics), how it is trained ([`ClassifierSettings`],
//! [`train_classifier`]) and what its description records ([`TrainedOn`], the cache key;
//! [`TrainingFacts`]; [`HeldOut`], the ceiling). Loading and storing it is the cache's business.

use std::time::Instant;

use dataprep::{Condition, Dataset, LoaderOptions, Position, Split};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};
use tokio::runtime::Handle;

use super::frechet::Stats;
use super::split::scan_split;
use crate::Result;
use crate::pixels::images_to_tensor;

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
pub(super) struct CachedFile {
    pub(super) file: String,
    pub(super) bytes: u64,
    pub(super) sha256: String,
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
    pub(super) files: Vec<CachedFile>,
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
pub(super) struct Net {
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

/// A trained classifier with the held-out images' feature statistics.
#[derive(Debug)]
pub struct Classifier {
    pub(super) vs: nn::VarStore,
    pub(super) net: Net,
    pub(super) info: ClassifierInfo,
    pub(super) real: Vec<Stats>,
    pub(super) provenance: Provenance,
    /// Seconds its preparation took (0 when reused from memory).
    pub(super) seconds: f64,
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

/// An untrained network for what `on` describes, on `device`.
pub(super) fn build(on: &TrainedOn, device: Device) -> (nn::VarStore, Net) {
    let vs = nn::VarStore::new(device);
    let net = Net::new(&vs.root(), on.channels, on.classes.len() as i64, on.settings.width);
    (vs, net)
}

/// Trains the classifier on the train split and scores it on the held-out split.
pub(super) fn train_classifier(
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
    tch::manual_seed(base::seed::mix(&[settings.seed, base::seed::tag::CLASSIFIER]) as i64);
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
pub(super) fn balanced(values: impl Iterator<Item = Option<f64>>) -> f64 {
    let measured: Vec<f64> = values.flatten().collect();
    measured.iter().sum::<f64>() / measured.len().max(1) as f64
}
