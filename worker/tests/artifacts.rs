//! What a run leaves in its output, and `generate`.

use worker::samples::{GenerateOptions, generate};
use worker::train::{TrainOptions, train};

use crate::util::*;

#[test]
fn a_run_writes_config_checkpoints_samples_and_metrics_and_generate_reads_them() {
    let _serial = crate::util::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let data = packed_celeba(dir.path(), 40, 8);
    let out = dir.path().join("out");
    let job = small_job(&data, &out);
    let summary = train(&job, &TrainOptions::default(), crate::util::io()).unwrap();
    assert_eq!(summary.steps, 4);
    assert!(summary.metrics.c_gp.is_finite() && summary.metrics.g_loss.is_finite());

    let resolved = worker::config::JobConfig::from_file(&out.join("config.toml")).unwrap();
    assert_eq!(resolved, job);
    for step in ["step-0000002", "step-0000004"] {
        for file in [
            "manifest.json",
            "state.json",
            "generator.safetensors",
            "critic.safetensors",
            "optimizer.safetensors",
        ] {
            assert!(out.join("checkpoints").join(step).join(file).is_file(), "{step}/{file}");
        }
        let grid = image::open(out.join("samples").join(format!("{step}.png"))).unwrap();
        // 3 rows (latents) and 2 columns (not blond, blond) of 32px images scaled 4x so that the
        // label "not Blond_Hair" fits above its column, plus the label row.
        assert!(
            grid.width() > 2 * 128 && grid.width() < 3 * 128,
            "grid width {}",
            grid.width()
        );
        assert!(
            grid.height() > 3 * 128 && grid.height() < 4 * 128,
            "grid height {}",
            grid.height()
        );
    }
    assert_eq!(
        std::fs::read_to_string(out.join("checkpoints/latest")).unwrap(),
        "step-0000004"
    );
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4);
    for line in metrics.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in ["c_loss", "c_wass_loss", "c_gp", "g_loss", "images_per_sec"] {
            assert!(v[key].as_f64().unwrap().is_finite(), "{key} in {line}");
        }
        let (c_loss, c_wass, c_gp) = (
            v["c_loss"].as_f64().unwrap(),
            v["c_wass_loss"].as_f64().unwrap(),
            v["c_gp"].as_f64().unwrap(),
        );
        assert!(
            (c_loss - (c_wass + 10.0 * c_gp)).abs() < 1e-4 * c_loss.abs().max(1.0),
            "{line}"
        );
    }

    // generate: one folder per class, or one class; a job output resolves to its latest checkpoint.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let gen_dir = dir.path().join("generated");
    let options = GenerateOptions {
        checkpoint: out.to_str().unwrap().to_string(),
        count: 3,
        out: gen_dir.clone(),
        label: None,
        seed: 1,
        grid: Some(dir.path().join("grid.png")),
        device: worker::config::DeviceSpec::Cpu,
    };
    let generated = runtime.block_on(generate(&options)).unwrap();
    assert_eq!(generated.step, 4);
    for class in ["not_Blond_Hair", "Blond_Hair"] {
        for i in 0..3 {
            let image = image::open(gen_dir.join(class).join(format!("{i}.png"))).unwrap();
            assert_eq!((image.width(), image.height()), (32, 32));
        }
    }
    assert!(dir.path().join("grid.png").is_file());
    let only = GenerateOptions {
        label: Some("Blond_Hair".into()),
        out: dir.path().join("only"),
        checkpoint: out.join("checkpoints/step-0000002").to_str().unwrap().to_string(),
        grid: None,
        ..options.clone()
    };
    let generated = runtime.block_on(generate(&only)).unwrap();
    assert_eq!((generated.step, generated.files.len()), (2, 3));
    assert!(!dir.path().join("only/not_Blond_Hair").exists());
    let wrong = GenerateOptions {
        label: Some("Purple_Hair".into()),
        ..only
    };
    let err = runtime.block_on(generate(&wrong)).unwrap_err().to_string();
    assert!(
        err.contains("no class \"Purple_Hair\"") && err.contains("not Blond_Hair"),
        "{err}"
    );
}
