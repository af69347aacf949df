//! Data-parallel training between real processes on loopback (`worker parallel-check` ranks over
//! Gloo): the averaged gradient is DDP's, and ranks stay bitwise identical.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use tch::Tensor;
use worker::checkpoint::from_safetensors;

use crate::util::free_address;

fn parallel_check(rank: usize, world_size: usize, address: &str, out: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_worker"));
    command
        .arg("parallel-check")
        .args(["--address", address, "--bind-host", "127.0.0.1", "--timeout-s", "60"])
        .args(["--rank", &rank.to_string(), "--world-size", &world_size.to_string()])
        .args(["--secret", "test-secret", "--out"])
        .arg(out)
        .args(extra);
    command
}

fn read(path: &Path) -> HashMap<String, Tensor> {
    from_safetensors(&std::fs::read(path).unwrap(), "test", &path.display().to_string()).unwrap()
}

fn succeeded(what: &str, output: Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `world_size` ranks with `extra` arguments; every rank's tensors.
fn ranks(dir: &Path, world_size: usize, extra: &[&str]) -> Vec<HashMap<String, Tensor>> {
    let address = free_address();
    let children: Vec<_> = (0..world_size)
        .map(|rank| {
            let out = dir.join(format!("rank{rank}.safetensors"));
            let child = parallel_check(rank, world_size, &address, &out, extra)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (child, out)
        })
        .collect();
    children
        .into_iter()
        .enumerate()
        .map(|(rank, (child, out))| {
            succeeded(&format!("rank {rank}"), child.wait_with_output().unwrap());
            read(&out)
        })
        .collect()
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

#[test]
fn the_averaged_critic_gradient_is_the_mean_of_the_ranks_gradients() {
    let dir = tempfile::tempdir().unwrap();
    let reference_path = dir.path().join("reference.safetensors");
    let reference = parallel_check(0, 2, "127.0.0.1:1", &reference_path, &["--reference"])
        .output()
        .unwrap();
    succeeded("the one-process reference", reference);
    let expected = &read(&reference_path)["critic_gradient"];
    assert!(max_abs(expected) > 1e-3, "a gradient to compare");

    let got = ranks(dir.path(), 2, &[]);
    for (rank, tensors) in got.iter().enumerate() {
        let gradient = &tensors["critic_gradient"];
        assert_eq!(gradient.size(), expected.size());
        let relative = max_abs(&(gradient - expected)) / max_abs(expected);
        println!(
            "parallel: rank {rank}'s averaged critic gradient vs the one-process mean: max|diff|/max|ref| = {relative:.2e}"
        );
        assert!(relative <= 1e-6, "rank {rank}: max|diff|/max|ref| = {relative}");
    }
    assert!(got[0]["critic_gradient"].equal(&got[1]["critic_gradient"]));
}

#[test]
fn after_twenty_steps_every_weight_moment_and_statistic_is_bitwise_equal_on_both_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let got = ranks(dir.path(), 2, &["--steps", "20"]);
    let (a, b) = (&got[0], &got[1]);
    let mut names: Vec<&String> = a.keys().collect();
    names.sort();
    assert_eq!(names.len(), b.len(), "the same tensors on both ranks");
    for kind in ["g.", "c.", "generator.m.", "critic.v.", "metrics.0020"] {
        assert!(names.iter().any(|n| n.starts_with(kind)), "{kind}* saved");
    }
    assert!(
        names.iter().any(|n| n.ends_with("running_var")),
        "BatchNorm statistics saved"
    );
    for name in names {
        assert!(a[name].equal(&b[name]), "{name} differs between the ranks");
    }
    // The weights moved: the exchange is not comparing two untouched copies.
    let moments = &a["critic.m.output.weight"];
    assert!(max_abs(moments) > 0.0);
}

#[test]
fn a_checkpoint_of_one_rank_is_not_resumed_by_two() {
    let dir = tempfile::tempdir().unwrap();
    let data = crate::util::packed_celeba(dir.path(), 64, 3);
    let out = dir.path().join("out");
    let mut job = crate::util::small_job(&data, &out);
    {
        let _serial = crate::util::exclusive();
        worker::train::train(&job, &worker::train::TrainOptions::default(), crate::util::io()).unwrap();
    }
    job.job.workers = 2;
    job.train.steps = 6;
    let file = dir.path().join("job2.toml");
    std::fs::write(&file, job.to_toml()).unwrap();
    let ranks = crate::util::train_ranks(&file, 2);
    for (rank, child) in ranks.into_iter().enumerate() {
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "rank {rank} resumed a 1-rank checkpoint with 2 ranks"
        );
        assert!(
            stderr.contains(
                "step-0000004: written by a run of 1 rank(s), and this run has 2; resume with job.workers = 1"
            ),
            "rank {rank}: {stderr}"
        );
    }
}
