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
//! - [`InTraining`]: the trainer's hook; [`evaluate_checkpoint`]: `worker eval`.
//! - Reports go to `<output>/eval/step-NNNNNNN.json` ([`Report`]); the step's metrics line
//!   carries the figures as a [`pb::Evaluation`](gantry_proto::pb::Evaluation).
//!
//! The package, one concern per file: `classifier` (the network, its training and what it
//! records), `frechet` (feature statistics and the distance), `split` (reading a dataset's
//! splits), `cache` (the classifier cached in a run's output), `score` (scoring images),
//! `report` (reports: JSON, the wire, the summary) and `run` (evaluation during training and
//! `worker eval`). Nothing here depends on the trainer: the trainer calls in.
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
//!   [`pb::Evaluation`](gantry_proto::pb::Evaluation) (whose metrics lines are JSON, where NaN
//!   cannot be written).

mod cache;
mod classifier;
mod frechet;
mod report;
mod run;
mod score;
mod split;

pub use cache::{CLASSIFIER_INFO, prepare_classifier};
pub use classifier::{
    Classifier, ClassifierInfo, ClassifierSettings, FEATURES, HeldOut, HeldOutClass, Provenance, TrainedOn,
    TrainingFacts,
};
pub use frechet::{Stats, frechet_distance, mixture_distance, stats_distance};
pub use report::{FRECHET_NOTE, NOT_MEASURED, Report, write_report};
pub use run::{CheckpointEvaluation, EvalOptions, InTraining, evaluate_checkpoint};
pub use score::{ClassFigures, Evaluated, Images, Labelled, Rendered, evaluate};
pub use split::{held_out_split, read_split};
