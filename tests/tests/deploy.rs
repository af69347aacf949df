//! The cluster launch files, checked without a cluster, a container engine or Slurm:
//! `deploy/check.py` validates the Kubernetes manifests against the API schemas (strict) and
//! against each other, the Dockerfile's stages, sources and user, and the shell scripts
//! (`bash -n`, shellcheck), and every flag the manifests pass against the built binaries'
//! `--help`; the job files of the example ConfigMaps must then be jobs gantry's own parser accepts.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

#[test]
fn the_launch_files_pass_deploy_check_and_their_job_files_are_valid_jobs() {
    let root = repository();
    let python = root.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run deploy/bootstrap.sh (it installs deploy/requirements.txt)",
        python.display()
    );
    let jobs = tempfile::tempdir().expect("temporary folder");
    // The release binaries beside this test's own (target/release/deps/deploy-...).
    let exe = std::env::current_exe().expect("test executable path");
    let binaries = exe.parent().and_then(Path::parent).expect("target/<profile>/deps");
    assert!(
        binaries.join("coordinator").is_file(),
        "{} has no coordinator binary: build the binaries first (deploy/bootstrap.sh)",
        binaries.display()
    );
    let output = Command::new(&python)
        .arg(root.join("deploy/check.py"))
        .arg("--jobs-out")
        .arg(jobs.path())
        .arg("--bin")
        .arg(binaries)
        .current_dir(&root)
        .output()
        .expect("run deploy/check.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "deploy/check.py found problems in the launch files ({}):\n{stdout}{stderr}",
        output.status
    );

    let mut files: Vec<PathBuf> = std::fs::read_dir(jobs.path())
        .expect("read the job files")
        .map(|entry| entry.expect("job file entry").path())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no job file (a ConfigMap key ending in .toml) under deploy/k8s"
    );
    for file in &files {
        let job = gantry_job::JobConfig::from_file(file)
            .unwrap_or_else(|e| panic!("{} (from a ConfigMap under deploy/k8s): {}", file.display(), chain(&e)));
        job.validate()
            .unwrap_or_else(|e| panic!("{} (from a ConfigMap under deploy/k8s): {}", file.display(), chain(&e)));
    }
}

/// An error and its causes, one after the other.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
