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

/// The workspace's root folder.
fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The top-level modules of the crate under `src` that `text` names through `crate::`
/// (`crate::a::b`, `crate::{a, b::c}`).
fn crate_references(text: &str, modules: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                group.split(',').map(|item| item.trim()).collect()
            }
            None => vec![rest],
        };
        for name in names {
            let end = name
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(name.len());
            let name = &name[..end];
            if modules.iter().any(|m| m == name) && !found.iter().any(|f| f == name) {
                found.push(name.to_string());
            }
        }
    }
    found
}

#[test]
fn the_worker_s_modules_import_each_other_without_a_cycle() {
    let src = workspace().join("worker/src");
    let mut modules: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_stem().is_some_and(|s| s != "lib" && s != "main"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    modules.sort();
    modules.dedup();
    let edges: Vec<(String, Vec<String>)> = modules
        .iter()
        .map(|module| {
            let file = src.join(format!("{module}.rs"));
            let files = if file.exists() {
                vec![file]
            } else {
                rust_files(&src.join(module))
            };
            let mut uses: Vec<String> = files
                .iter()
                .flat_map(|f| crate_references(&std::fs::read_to_string(f).unwrap(), &modules))
                .filter(|m| m != module)
                .collect();
            uses.sort();
            uses.dedup();
            (module.clone(), uses)
        })
        .collect();
    let uses = |m: &str| edges.iter().find(|(n, _)| n == m).map_or(&[][..], |(_, u)| &u[..]);
    // The trainer calls evaluation and samples, never the other way round.
    for leaf in [
        "eval",
        "samples",
        "pixels",
        "torch_guard",
        "checkpoint",
        "gan",
        "cadence",
    ] {
        assert!(
            !uses(leaf).iter().any(|m| m == "train"),
            "{leaf} imports train: {:?}",
            uses(leaf)
        );
    }
    // Depth-first search for a cycle, reporting its path.
    fn visit<'a>(
        module: &'a str,
        uses: &dyn Fn(&str) -> &'a [String],
        path: &mut Vec<&'a str>,
        done: &mut Vec<&'a str>,
    ) {
        if done.contains(&module) {
            return;
        }
        if let Some(start) = path.iter().position(|m| *m == module) {
            panic!(
                "module cycle in the worker crate: {} -> {module}",
                path[start..].join(" -> ")
            );
        }
        path.push(module);
        for next in uses(module) {
            visit(next, uses, path, done);
        }
        path.pop();
        done.push(module);
    }
    let mut done = Vec::new();
    for (module, _) in &edges {
        visit(module, &uses, &mut Vec::new(), &mut done);
    }
    // The scan sees the imports it must: the trainer's of evaluation and checkpoints.
    assert!(uses("train").iter().any(|m| m == "eval") && uses("train").iter().any(|m| m == "checkpoint"));
}

#[test]
fn no_source_file_reaches_a_thousand_lines() {
    let root = workspace();
    let mut long = Vec::new();
    for krate in ["base", "proto", "job", "dataprep", "worker", "coordinator", "tests"] {
        for file in rust_files(&root.join(krate)) {
            let lines = std::fs::read_to_string(&file).unwrap().lines().count();
            if lines >= 1000 {
                long.push(format!(
                    "{} ({lines} lines)",
                    file.strip_prefix(&root).unwrap().display()
                ));
            }
        }
    }
    assert!(long.is_empty(), "split along its concerns: {long:?}");
}

#[test]
fn the_foundation_depends_on_no_crate_of_ours() {
    let metadata = metadata();
    let ours: Vec<String> = dependencies(&metadata, "gantry-base")
        .into_iter()
        .map(|(name, _, _)| name)
        .filter(|name| name.starts_with("gantry-"))
        .collect();
    assert!(ours.is_empty(), "gantry-base depends on {ours:?}");
}
