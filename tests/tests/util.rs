//! Helpers to run gantry's binaries.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Path of a workspace binary built with the same profile as this test.
pub(crate) fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (deploy/bootstrap.sh, or cargo build --release --bins)",
        path.display()
    );
    path
}

/// Runs a binary with arguments; returns its output.
pub(crate) fn run(name: &str, args: &[&str]) -> Output {
    run_with(Command::new(bin(name)).args(args))
}

/// Runs a prepared command; returns its output.
pub(crate) fn run_with(command: &mut Command) -> Output {
    command.output().expect("spawn binary")
}

/// Stdout and stderr as text, for assertions and failure messages.
pub(crate) fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Asserts success and returns stdout.
pub(crate) fn ok(output: Output) -> String {
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    stdout
}
