//! Stop at step k, resume, and land on exactly the weights of an uninterrupted run.

use std::collections::HashMap;

use base::Location;
use tch::Tensor;
use worker::checkpoint;
use worker::train::{TrainOptions, train};

use crate::util::*;

fn final_tensors(output: &std::path::Path) -> (u64, HashMap<String, Tensor>, dataprep::Position) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let location = Location::parse(output.to_str().unwrap()).unwrap();
    let folder = runtime
        .block_on(checkpoint::latest(&location))
        .unwrap()
        .expect("a checkpoint");
    let ckpt = runtime.block_on(checkpoint::load(&folder)).unwrap();
    let mut all = HashMap::new();
    for (prefix, map) in [("g", ckpt.generator), ("c", ckpt.critic), ("opt", ckpt.optimizer)] {
        for (name, t) in map {
            all.insert(format!("{prefix}.{name}"), t);
        }
    }
    (ckpt.state.step, all, ckpt.state.position)
}

#[test]
fn a_resumed_run_ends_bitwise_equal_to_an_uninterrupted_one() {
    let _serial = crate::util::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let data = packed_celeba(dir.path(), 60, 5);
    let mut job = small_job(&data, &dir.path().join("straight"));
    job.train.steps = 7;
    job.train.checkpoint_every = 3;
    let straight = train(&job, &TrainOptions::default(), crate::util::io()).unwrap();
    assert_eq!((straight.steps, straight.resumed_from), (7, 0));

    // Same job, stopped after step 3 (its checkpoint), then resumed to 7.
    let mut stopped = small_job(&data, &dir.path().join("resumed"));
    stopped.train.steps = 3;
    stopped.train.checkpoint_every = 3;
    train(&stopped, &TrainOptions::default(), crate::util::io()).unwrap();
    let mut resumed = stopped.clone();
    resumed.train.steps = 7;
    let summary = train(&resumed, &TrainOptions::default(), crate::util::io()).unwrap();
    assert_eq!((summary.steps, summary.resumed_from), (7, 3));

    let (step_a, a, position_a) = final_tensors(&dir.path().join("straight"));
    let (step_b, b, position_b) = final_tensors(&dir.path().join("resumed"));
    assert_eq!((step_a, step_b), (7, 7));
    assert_eq!(position_a, position_b, "data position");
    assert_eq!(a.len(), b.len());
    assert!(
        a.keys().any(|k| k.starts_with("opt.critic.m.")),
        "optimiser moments are checkpointed"
    );
    for (name, ta) in &a {
        let tb = &b[name];
        let diff = (ta - tb).abs().max().double_value(&[]);
        assert_eq!(diff, 0.0, "{name} differs by {diff}");
    }
    // The metrics of the resumed run are continuous: one line per step, 1..=7.
    let metrics = std::fs::read_to_string(dir.path().join("resumed/metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, (1..=7).collect::<Vec<_>>());
}

#[test]
fn a_torn_checkpoint_is_ignored_in_favour_of_the_previous_one() {
    let _serial = crate::util::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let data = packed_celeba(dir.path(), 40, 6);
    let out = dir.path().join("out");
    let mut job = small_job(&data, &out);
    job.train.steps = 4;
    train(&job, &TrainOptions::default(), crate::util::io()).unwrap();
    // Tear the newest checkpoint: its manifest is what commits it.
    std::fs::remove_file(out.join("checkpoints/step-0000004/manifest.json")).unwrap();
    job.train.steps = 5;
    let summary = train(&job, &TrainOptions::default(), crate::util::io()).unwrap();
    assert_eq!(summary.resumed_from, 2, "resumed from the last complete checkpoint");
    assert_eq!(summary.steps, 5);
}
