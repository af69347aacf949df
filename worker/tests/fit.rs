//! Jobs that cannot fit are refused with the figures, and allocation failures are errors, never
//! a crash: `worker train` as a person runs it.

use std::process::Command;

use crate::util::*;

/// `worker train` on `job` (written next to it); its exit code and stderr.
fn train(
    dir: &std::path::Path,
    job: &worker::config::JobConfig,
    shell_prefix: &str,
    extra: &str,
) -> (Option<i32>, String) {
    let file = dir.join("job.toml");
    std::fs::write(&file, job.to_toml()).unwrap();
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{shell_prefix} exec '{}' train --config '{}' {extra}",
            env!("CARGO_BIN_EXE_worker"),
            file.display()
        ))
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_job_larger_than_the_memory_limit_is_refused_before_building_anything() {
    let dir = tempfile::tempdir().unwrap();
    let data = packed_celeba(dir.path(), 64, 4);
    let mut job = small_job(&data, &dir.path().join("out"));
    job.model.width = 6000;
    let (code, stderr) = train(dir.path(), &job, "", "--memory-limit 8GiB");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("error: model.width 6000, model.image_size 32 and train.batch_size 8 (8 per rank) need about "),
        "{stderr}"
    );
    assert!(
        stderr.contains("per rank; this worker's --memory-limit is 8.0 GiB"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!dir.path().join("out/checkpoints").exists());
}

#[test]
fn an_allocation_failure_is_an_error_naming_the_bytes_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let data = packed_celeba(dir.path(), 64, 4);
    let mut job = small_job(&data, &dir.path().join("out"));
    // About 0.3 GB of weights, under an address-space limit that leaves libtorch room to load but
    // not to hold them: the estimate passes (no --memory-limit), the allocation fails.
    job.model.width = 1024;
    let (code, stderr) = train(dir.path(), &job, "ulimit -v 3000000;", "");
    assert_eq!(code, Some(1), "a clean error exit, not a panic's 101: {stderr}");
    assert!(
        stderr.contains(
            "error: building the model failed: DefaultCPUAllocator: can't allocate memory: you tried to allocate "
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("frame #"), "no C++ stack: {stderr}");
}

#[test]
fn a_device_the_worker_does_not_have_is_named_with_those_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let data = packed_celeba(dir.path(), 64, 4);
    let job = small_job(&data, &dir.path().join("out"));
    let (code, stderr) = train(dir.path(), &job, "", "--device cuda:99");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("device \"cuda:99\""), "{stderr}");
    assert!(stderr.contains("this worker has: cpu"), "{stderr}");
}
