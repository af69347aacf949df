//! The workspace's shape: what depends on what.

use serde_json::Value;

/// `cargo metadata` of the workspace, without resolving the registry (no network).
fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("cargo metadata is JSON")
}

/// The normal (not dev, not build) dependencies of a workspace package: (name, features, whether
/// default features are on).
fn dependencies(metadata: &Value, package: &str) -> Vec<(String, Vec<String>, bool)> {
    let package = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == package)
        .unwrap_or_else(|| panic!("no package {package}"));
    package["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"].is_null())
        .map(|d| {
            let features = d["features"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_string())
                .collect();
            let default = d["uses_default_features"].as_bool().unwrap();
            (d["name"].as_str().unwrap().to_string(), features, default)
        })
        .collect()
}

#[test]
fn the_wire_contract_depends_on_no_crate_of_ours() {
    let metadata = metadata();
    let ours: Vec<String> = dependencies(&metadata, "gantry-proto")
        .into_iter()
        .map(|(name, _, _)| name)
        .filter(|name| name.starts_with("gantry-"))
        .collect();
    assert!(ours.is_empty(), "gantry-proto depends on {ours:?}");
}

#[test]
fn the_libraries_do_not_compile_the_synthetic_dataset_generator() {
    let metadata = metadata();
    for package in ["gantry-job", "gantry-worker", "gantry-coordinator"] {
        for (name, features, default) in dependencies(&metadata, package) {
            if name == "gantry-dataprep" {
                assert!(
                    !default && !features.iter().any(|f| f == "synth"),
                    "{package} builds gantry-dataprep with its synth feature (default features: {default}, features: {features:?})"
                );
            }
        }
    }
}
