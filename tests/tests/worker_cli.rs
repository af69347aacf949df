//! The worker binary runs without any library path set by the user.

use std::process::Command;

use crate::util::*;

#[test]
fn worker_finds_libtorch_without_ld_library_path() {
    let output = run_with(
        Command::new(bin("worker"))
            .args(["device"])
            .env_remove("LD_LIBRARY_PATH"),
    );
    let stdout = ok(output);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    // ones(64x64) @ ones(64x64) sums to 64^3.
    assert_eq!(report["matmul_check"], 262144.0);
    assert!(report["cpu_threads"].as_i64().unwrap() >= 1);
}
