//! Bad jobs fail before training with every problem named; failures mid-run name their cause and
//! keep the last good checkpoint.

use worker::Error;
use worker::train::{TrainOptions, train};

use crate::util::*;

#[test]
fn jobs_that_do_not_fit_the_dataset_are_rejected_before_training() {
    let _serial = crate::util::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let data = packed_celeba(dir.path(), 30, 9);
    let out = dir.path().join("out");
    let mut job = small_job(&data, &out);
    job.data.condition = "Purple_Hair".parse().unwrap();
    job.model.image_size = 64;
    let err = train(&job, &TrainOptions::default(), crate::util::io())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown attribute \"Purple_Hair\""), "{err}");
    assert!(err.contains("model.image_size is 64") && err.contains("32x32"), "{err}");
    assert!(!out.join("checkpoints").exists(), "nothing trained");

    let mut job = small_job(&data, &out);
    job.data.condition = dataprep::Condition::Label;
    let err = train(&job, &TrainOptions::default(), crate::util::io())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no label column"), "{err}");

    let mut job = small_job(&data, &out);
    job.data.url = dir.path().join("nothing-here").display().to_string();
    let err = train(&job, &TrainOptions::default(), crate::util::io())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no dataset at"), "{err}");
}

#[test]
fn a_missing_shard_mid_run_is_named_and_the_last_checkpoint_kept() {
    let _serial = crate::util::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let data = packed_celeba(dir.path(), 60, 10);
    let out = dir.path().join("out");
    let mut job = small_job(&data, &out);
    job.train.steps = 2;
    train(&job, &TrainOptions::default(), crate::util::io()).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{data}/manifest.json")).unwrap()).unwrap();
    let shard = manifest["shards"][0]["file"].as_str().unwrap().to_string();
    std::fs::remove_file(format!("{data}/{shard}")).unwrap();
    job.train.steps = 20;
    let err = train(&job, &TrainOptions::default(), crate::util::io())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&shard) && err.contains("missing"), "{err}");
    assert!(out.join("checkpoints/step-0000002/manifest.json").is_file());
    assert_eq!(
        std::fs::read_to_string(out.join("checkpoints/latest")).unwrap(),
        "step-0000002"
    );
}

#[test]
fn a_diverging_run_stops_at_the_nan_step_naming_the_last_good_checkpoint() {
    let _serial = crate::util::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let data = packed_celeba(dir.path(), 40, 11);
    let out = dir.path().join("out");
    let mut job = small_job(&data, &out);
    job.train.steps = 2;
    job.train.checkpoint_every = 1;
    train(&job, &TrainOptions::default(), crate::util::io()).unwrap();
    // Continue with an absurd learning rate: the weights blow up within a few steps.
    job.train.steps = 50;
    job.train.lr = 1e30;
    job.train.gp_weight = 1e30;
    let err = train(&job, &TrainOptions::default(), crate::util::io()).unwrap_err();
    // What a person (or the coordinator, in the job's failure reason) reads of the real error.
    let message = format!("{err:#}");
    let Error::NonFinite { step, metric, .. } = err else {
        panic!("expected a NaN/inf stop, got {message}");
    };
    assert!(step > 2, "{message}");
    assert!(
        message.starts_with(&format!("{metric} is ")) && message.contains(&format!(" at step {step}; ")),
        "{message}"
    );
    let last_good = message
        .split("the last good checkpoint is ")
        .nth(1)
        .unwrap_or_else(|| panic!("no last good checkpoint named in {message}"));
    let folder = last_good.strip_prefix("file://").unwrap_or(last_good);
    assert!(
        std::path::Path::new(folder).join("manifest.json").is_file(),
        "{last_good} is not a committed checkpoint"
    );
    // Nothing after the bad step was checkpointed.
    let latest = std::fs::read_to_string(out.join("checkpoints/latest")).unwrap();
    assert!(
        last_good.ends_with(&latest),
        "latest is {latest}, the message names {last_good}"
    );
}
