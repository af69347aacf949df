//! Evaluation on data where the answer is known (real images standing in for generated ones, the
//! same images with their labels shuffled, noisy copies), its classifier cache, and evaluation
//! during a run and by `worker eval`.

use std::time::Instant;

use base::Location;
use dataprep::{Condition, Dataset, Split};
use tch::{Device, Kind, Tensor};
use worker::eval::{
    self, ClassifierSettings, Labelled, Provenance, evaluate, frechet_distance, prepare_classifier, read_split,
};
use worker::train::{MetricsLine, TrainOptions, train};

use crate::util::*;

fn blond() -> Condition {
    "Blond_Hair".parse().unwrap()
}

/// Files under `dir`, relative, sorted (to show a dataset is left as it was).
fn listing(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                let rel = entry.path().strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, entry.metadata().unwrap().len()));
            }
        }
    }
    out.sort();
    out
}

fn weights_sha(out: &std::path::Path) -> String {
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("eval/classifier/classifier.json")).unwrap()).unwrap();
    info["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == "weights.safetensors")
        .unwrap()["sha256"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_frechet_distance_matches_its_closed_form_and_stays_finite_when_singular() {
    let opts = (Kind::Double, Device::Cpu);
    // Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    let mu1 = Tensor::from_slice(&[0.0f64, 1.0, 2.0]);
    let mu2 = Tensor::from_slice(&[1.0f64, 1.0, 0.0]);
    let a = Tensor::from_slice(&[1.0f64, 4.0, 9.0]).diag(0);
    let b = Tensor::from_slice(&[4.0f64, 1.0, 0.25]).diag(0);
    let expected = 1.0 + 4.0 + (1.0f64 - 2.0).powi(2) + (2.0f64 - 1.0).powi(2) + (3.0f64 - 0.5).powi(2);
    let d = frechet_distance(&mu1, &a, &mu2, &b);
    assert!((d - expected).abs() < 1e-9, "{d} vs {expected}");
    // A full-rank covariance against itself, rotated: the same distribution.
    tch::manual_seed(4);
    let x = Tensor::randn([50, 8], opts);
    let s = x.transpose(0, 1).matmul(&x) / 49.0;
    let m = Tensor::zeros([8], opts);
    assert!(frechet_distance(&m, &s, &m, &s) < 1e-9);
    // Rank 2 covariances in 8 dimensions (3 samples each): finite and positive.
    let y = Tensor::randn([3, 8], opts);
    let z = Tensor::randn([3, 8], opts) * 2.0;
    let cov = |t: &Tensor| {
        let c = t - t.mean_dim([0i64].as_slice(), true, Kind::Double);
        c.transpose(0, 1).matmul(&c) / 2.0
    };
    let d = frechet_distance(&m, &cov(&y), &m, &cov(&z));
    assert!(d.is_finite() && d > 0.0, "{d}");
}

#[test]
fn the_evaluation_knows_the_answers_on_real_images() {
    let _serial = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let data = packed_celeba(dir.path(), 1200, 5);
    let runtime = io();
    let dataset = runtime.block_on(Dataset::open(&data)).unwrap();
    let out = dir.path().join("out");
    let output = Location::parse(out.to_str().unwrap()).unwrap();
    // Fewer steps than the default (151 here): enough for a visible attribute, and fast.
    let settings = ClassifierSettings {
        batch_size: 32,
        max_steps: 60,
        ..ClassifierSettings::default()
    };
    let before = listing(std::path::Path::new(&data));

    let started = Instant::now();
    let classifier = prepare_classifier(&dataset, &blond(), 32, &output, &settings, Device::Cpu, runtime).unwrap();
    let train_seconds = started.elapsed().as_secs_f64();
    assert_eq!(classifier.provenance(), Provenance::Trained);
    let info = classifier.info();
    let ceiling = classifier.ceiling();
    println!(
        "evaluation classifier: {} steps on {} train images in {train_seconds:.1}s; held-out ({}) ceiling {ceiling:.3} \
         (plain {:.3}; per class {:?})",
        info.training.steps,
        info.training.train_rows,
        info.held_out.split,
        info.held_out.plain_accuracy,
        info.held_out
            .classes
            .iter()
            .map(|c| (c.images, c.accuracy))
            .collect::<Vec<_>>()
    );
    assert_eq!(info.held_out.split, Split::Valid);
    assert!(ceiling > 0.9, "the classifier must see blond hair: ceiling {ceiling}");

    let (valid, valid_classes) = read_split(&dataset, &blond(), Split::Valid, runtime).unwrap();
    let (test, test_classes) = read_split(&dataset, &blond(), Split::Test, runtime).unwrap();

    // The held-out images themselves as the "generated" ones: exactly the ceiling, distance 0.
    let same = evaluate(
        &classifier,
        &mut Labelled::new(valid.shallow_clone(), &valid_classes, 2),
    )
    .unwrap();
    assert!(
        (same.accuracy - ceiling).abs() < 1e-12,
        "{} vs {ceiling}",
        same.accuracy
    );
    assert_eq!(same.label_swap, None);
    let self_distance = same.frechet.unwrap();
    let real_trace: f64 = classifier
        .real()
        .iter()
        .map(|s| s.covariance().diagonal(0, 0, 1).sum(Kind::Double).double_value(&[]))
        .sum();
    println!(
        "Fréchet distance of the held-out set to itself {self_distance:.2e} (trace of its covariances {real_trace:.1})"
    );
    assert!(self_distance < 1e-6 * real_trace.max(1.0), "{self_distance}");
    for c in &same.classes {
        assert!(c.frechet.unwrap() < 1e-6 * real_trace.max(1.0), "{c:?}");
    }

    // Other real images (the test split): at the ceiling, within sampling noise.
    let other = evaluate(&classifier, &mut Labelled::new(test.shallow_clone(), &test_classes, 2)).unwrap();
    println!(
        "real test images as generated: accuracy {:.3} (ceiling {ceiling:.3}), per class {:?}; Fréchet to the held-out set {:.3}",
        other.accuracy,
        other.classes.iter().map(|c| (c.images, c.accuracy)).collect::<Vec<_>>(),
        other.frechet.unwrap()
    );
    assert!(
        (other.accuracy - ceiling).abs() < 0.08,
        "real images score {} against a ceiling of {ceiling}",
        other.accuracy
    );

    // Labels shuffled: the images no longer follow the label, so accuracy is near chance (1/2:
    // balanced accuracy with independent labels is the mean of the predicted-class shares).
    let mut shuffled_accuracies = Vec::new();
    for seed in 0..5 {
        tch::manual_seed(seed);
        let order = Tensor::randperm(valid_classes.len() as i64, (Kind::Int64, Device::Cpu));
        let order = Vec::<i64>::try_from(&order).unwrap();
        let classes: Vec<i64> = order.iter().map(|&i| valid_classes[i as usize]).collect();
        let e = evaluate(&classifier, &mut Labelled::new(valid.shallow_clone(), &classes, 2)).unwrap();
        shuffled_accuracies.push(e.accuracy);
    }
    let shuffled = shuffled_accuracies.iter().sum::<f64>() / shuffled_accuracies.len() as f64;
    println!("labels shuffled: accuracy {shuffled:.3} (chance 0.5; each {shuffled_accuracies:.3?})");
    assert!((shuffled - 0.5).abs() < 0.1, "shuffled labels score {shuffled}");
    assert!(shuffled_accuracies.iter().all(|a| (a - 0.5).abs() < 0.2));

    // Noise added to the held-out images: the distance grows with it.
    let mut distances = vec![self_distance];
    for sigma in [0.05, 0.15, 0.4] {
        tch::manual_seed(11);
        let noisy = (&valid + valid.randn_like() * sigma).clamp(-1.0, 1.0);
        let e = evaluate(&classifier, &mut Labelled::new(noisy, &valid_classes, 2)).unwrap();
        distances.push(e.frechet.unwrap());
    }
    println!("Fréchet distance with noise sigma 0, 0.05, 0.15, 0.4: {distances:.3?}");
    assert!(distances.windows(2).all(|w| w[1] > w[0]), "{distances:?}");

    // Fewer images per class than feature dimensions: finite per-class distances.
    let few: Vec<i64> = (0..valid_classes.len() as i64).collect();
    let mut picked: Vec<i64> = Vec::new();
    for class in [0i64, 1] {
        picked.extend(few.iter().filter(|&&i| valid_classes[i as usize] == class).take(5));
    }
    let images = valid.index_select(0, &Tensor::from_slice(&picked));
    let classes: Vec<i64> = picked.iter().map(|&i| valid_classes[i as usize]).collect();
    let e = evaluate(&classifier, &mut Labelled::new(images, &classes, 2)).unwrap();
    assert!(e.classes.iter().all(|c| c.frechet.unwrap().is_finite()), "{e:?}");
    assert!(e.frechet.unwrap().is_finite());

    // The cache: a second preparation loads it; other settings retrain; a cache made for another
    // dataset version is retrained too, to the same weights (training is deterministic).
    let started = Instant::now();
    let again = prepare_classifier(&dataset, &blond(), 32, &output, &settings, Device::Cpu, runtime).unwrap();
    let load_seconds = started.elapsed().as_secs_f64();
    assert_eq!(again.provenance(), Provenance::Cache);
    // (The same facts; floats read back from JSON may differ in the last bit.)
    assert_eq!(again.info().trained_on, classifier.info().trained_on);
    assert_eq!(again.info().training.steps, classifier.info().training.steps);
    assert!((again.ceiling() - ceiling).abs() < 1e-12);
    assert_eq!(again.real()[1].count(), classifier.real()[1].count());
    let shorter = ClassifierSettings {
        max_steps: 10,
        ..settings.clone()
    };
    let other = prepare_classifier(&dataset, &blond(), 32, &output, &shorter, Device::Cpu, runtime).unwrap();
    assert_eq!(other.provenance(), Provenance::Trained);
    assert_eq!(other.info().training.steps, 10);
    let first = weights_sha(&out);
    let info_path = out.join("eval/classifier/classifier.json");
    let text = std::fs::read_to_string(&info_path).unwrap();
    let sha = other.info().trained_on.manifest_sha256.clone();
    std::fs::write(&info_path, text.replace(&sha, &"0".repeat(64))).unwrap();
    let retrained = prepare_classifier(&dataset, &blond(), 32, &output, &shorter, Device::Cpu, runtime).unwrap();
    assert_eq!(retrained.provenance(), Provenance::Trained);
    assert_eq!(
        weights_sha(&out),
        first,
        "retraining with the same settings gives the same weights"
    );
    assert_eq!(retrained.info().held_out, other.info().held_out);
    println!("classifier cache: loaded in {load_seconds:.2}s (trained in {train_seconds:.1}s)");
    assert_eq!(listing(std::path::Path::new(&data)), before, "the dataset is only read");
}

#[test]
fn a_run_evaluates_every_n_steps_and_worker_eval_scores_its_checkpoint() {
    let _serial = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let data = packed_celeba(dir.path(), 300, 8);
    let out = dir.path().join("out");
    let mut job = small_job(&data, &out);
    job.train.steps = 5;
    job.train.eval_every = 2;
    job.train.eval_samples = 24;
    let started = Instant::now();
    train(&job, &TrainOptions::default(), io()).unwrap();
    let train_seconds = started.elapsed().as_secs_f64();

    // Reports at steps 2, 4 and the last, 5; the same figures on exactly those metrics lines.
    let mut names: Vec<String> = std::fs::read_dir(out.join("eval"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "classifier",
            "step-0000002.json",
            "step-0000004.json",
            "step-0000005.json"
        ]
    );
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<MetricsLine> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    let mut reports = Vec::new();
    for line in &lines {
        let Some(e) = &line.evaluation else {
            assert!(![2, 4, 5].contains(&line.step), "step {} has no evaluation", line.step);
            continue;
        };
        assert!([2, 4, 5].contains(&line.step), "step {} has an evaluation", line.step);
        assert_eq!(e.step, line.step);
        let path = out.join(format!("eval/step-{:07}.json", line.step));
        assert!(
            e.url.ends_with(&format!("eval/step-{:07}.json", line.step)),
            "{}",
            e.url
        );
        let report: eval::Report = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(report.step, line.step);
        assert_eq!(report.samples_per_class, 24);
        assert_eq!(e.samples_per_class, 24);
        assert_eq!(report.figures.accuracy, e.accuracy);
        assert_eq!(report.figures.classifier_accuracy, e.classifier_accuracy);
        assert_eq!(report.figures.frechet, Some(e.frechet));
        assert_eq!(report.figures.label_swap, Some(e.label_swap));
        assert_eq!(e.classes.len(), 2);
        assert_eq!(e.classes[1].name, "Blond_Hair");
        assert!(report.note.contains("NOT comparable with Inception FID"));
        assert!((0.0..=1.0).contains(&e.accuracy) && e.frechet >= 0.0);
        println!(
            "step {}: accuracy {:.3} (ceiling {:.3}), label swap {:.3}, Fréchet {:.2}; {:.1}s ({:?})",
            report.step,
            e.accuracy,
            e.classifier_accuracy,
            e.label_swap,
            e.frechet,
            report.seconds,
            report.classifier_provenance
        );
        reports.push(report);
    }
    // The classifier is trained once per run and kept in memory.
    let provenance: Vec<Provenance> = reports.iter().map(|r| r.classifier_provenance).collect();
    assert_eq!(
        provenance,
        [Provenance::Trained, Provenance::Memory, Provenance::Memory]
    );
    println!("run of 5 steps with 3 evaluations: {train_seconds:.1}s");

    // Evaluating does not change training: the same job without evaluations takes the same steps.
    let plain_out = dir.path().join("plain");
    let mut plain = small_job(&data, &plain_out);
    plain.train.steps = 5;
    train(&plain, &TrainOptions::default(), io()).unwrap();
    let text = std::fs::read_to_string(plain_out.join("metrics.jsonl")).unwrap();
    let plain_lines: Vec<MetricsLine> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let losses = |l: &MetricsLine| (l.step, l.c_loss, l.c_wass_loss, l.c_gp, l.g_loss);
    assert_eq!(
        lines.iter().map(losses).collect::<Vec<_>>(),
        plain_lines.iter().map(losses).collect::<Vec<_>>()
    );
    assert!(!plain_out.join("eval").exists());

    // `worker eval` on the final checkpoint: loads the cached classifier, and finds what the run found.
    let checkpoint = out.join("checkpoints/step-0000005");
    let started = Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(["eval", "--checkpoint", checkpoint.to_str().unwrap()])
        .args(["--device", "cpu", "--json"])
        .output()
        .unwrap();
    let eval_seconds = started.elapsed().as_secs_f64();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: eval::Report = serde_json::from_slice(&output.stdout).unwrap();
    let last = reports.last().unwrap();
    assert_eq!(report.step, 5);
    assert_eq!(report.classifier_provenance, Provenance::Cache);
    assert_eq!(report.samples_per_class, 24, "the job's eval_samples by default");
    assert_eq!(report.classifier, last.classifier);
    assert_eq!(report.figures.accuracy, last.figures.accuracy);
    assert_eq!(report.figures.label_swap, last.figures.label_swap);
    let (a, b) = (report.figures.frechet.unwrap(), last.figures.frechet.unwrap());
    assert!((a - b).abs() <= 1e-3 * b.max(1.0), "{a} vs {b}");
    assert!(report.checkpoint.unwrap().ends_with("checkpoints/step-0000005"));
    println!("worker eval on the final checkpoint: {eval_seconds:.1}s");

    // The readable summary names each class and the report.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .args([
            "eval",
            "--checkpoint",
            out.to_str().unwrap(),
            "--samples",
            "8",
            "--device",
            "cpu",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "not Blond_Hair",
        "Blond_Hair",
        "overall",
        "label swap",
        "Inception FID",
        "step-0000005.json",
    ] {
        assert!(summary.contains(needle), "{needle:?} missing from:\n{summary}");
    }
    println!("{summary}");

    // Bad input: no checkpoint there.
    let missing = dir.path().join("nowhere");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(["eval", "--checkpoint", missing.to_str().unwrap(), "--device", "cpu"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nowhere") && stderr.contains("checkpoint"), "{stderr}");
}

#[test]
fn a_dataset_without_held_out_images_is_refused_before_training() {
    let _serial = exclusive();
    let dir = tempfile::tempdir().unwrap();
    // Two images: both in the train split.
    let data = packed_celeba(dir.path(), 2, 1);
    let out = dir.path().join("out");
    let mut job = small_job(&data, &out);
    job.train.batch_size = 2;
    job.train.eval_every = 1;
    let error = train(&job, &TrainOptions::default(), io()).unwrap_err();
    let message = base::error_chain(&error);
    assert!(
        message.contains("no held-out images") && message.contains(&data),
        "{message}"
    );
    assert!(!out.join("checkpoints").exists());
}

#[test]
fn in_a_two_rank_run_rank_0_evaluates_while_the_other_waits() {
    let _serial = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let data = packed_celeba(dir.path(), 300, 9);
    let out = dir.path().join("out");
    let mut job = small_job(&data, &out);
    job.job.workers = 2;
    job.train.steps = 3;
    job.train.eval_every = 2;
    job.train.eval_samples = 8;
    let file = dir.path().join("job.toml");
    std::fs::write(&file, job.to_toml()).unwrap();
    let started = Instant::now();
    for (rank, child) in train_ranks(&file, 2).into_iter().enumerate() {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "rank {rank}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let evaluated: Vec<u64> = text
        .lines()
        .map(|l| serde_json::from_str::<MetricsLine>(l).unwrap())
        .filter_map(|l| l.evaluation.map(|e| e.step))
        .collect();
    assert_eq!(evaluated, [2, 3]);
    for step in [2, 3] {
        assert!(out.join(format!("eval/step-{step:07}.json")).exists());
    }
    println!(
        "2 ranks, 3 steps, evaluations at 2 and 3: {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
