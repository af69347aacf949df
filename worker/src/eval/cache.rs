//! The classifier cache in a run's output, `<output>/eval/classifier/`: the weights, the
//! held-out images' feature statistics and `classifier.json` (the [`ClassifierInfo`], with the
//! files' checksums), written last. [`prepare_classifier`] loads it when its [`TrainedOn`] key
//! matches the dataset (its manifest's checksum), condition, image shape and settings, and
//! otherwise trains a classifier and stores it there; datasets are only read.

use std::collections::HashMap;
use std::time::Instant;

use base::Location;
use dataprep::{Condition, Dataset, Split};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};
use tokio::runtime::Handle;

use super::classifier::{
    CachedFile, Classifier, ClassifierInfo, ClassifierSettings, Provenance, TrainedOn, build, train_classifier,
};
use super::frechet::Stats;
use super::split::{held_out_split, invalid};
use crate::Result;
use crate::checkpoint;

/// The classifier's description, written last: a cache without it does not exist.
pub const CLASSIFIER_INFO: &str = "classifier.json";
const WEIGHTS: &str = "weights.safetensors";
const REAL_FEATURES: &str = "real-features.safetensors";
const FORMAT: &str = "gantry-eval-classifier";
const FORMAT_VERSION: u32 = 1;

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
    let cache = output.join(base::layout::EVAL).join(base::layout::CLASSIFIER);
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
