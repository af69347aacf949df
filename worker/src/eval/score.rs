//! Scoring images with the classifier: what is scored ([`Images`]: a generator's
//! [`Rendered`] latents, or [`Labelled`] real images standing in for them) and what [`evaluate`]
//! measures ([`Evaluated`], per class [`ClassFigures`]): balanced accuracy, the label swap and
//! the Fréchet distances to the held-out real images.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::classifier::{Classifier, balanced};
use super::frechet::{Stats, mixture_distance, stats_distance};
use super::split::CHUNK;
use crate::Result;
use crate::gan::Gan;

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
        tch::manual_seed(base::seed::mix(&[seed, base::seed::tag::EVAL_RENDER]) as i64);
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
