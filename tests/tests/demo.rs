//! The main job (`deploy/local/demo.sh` after its set-up, i.e. `deploy/local/pipeline.sh`) run
//! as a user runs it, with its storage in an S3 API: tests/run.sh's moto server.

use std::path::Path;
use std::process::{Command, Output};

use crate::cluster::serial;
use crate::util::*;

/// The pipeline script with small settings.
fn pipeline_command(demo: &Path, storage: &str, steps: u64) -> Command {
    let mut command = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/pipeline.sh"));
    command
        .env("DEMO_DIR", demo)
        .env("STORAGE", storage)
        .env("IMAGES", "160")
        .env("STEPS", steps.to_string())
        .env("WORKERS", "2");
    command
}

/// Runs the pipeline script with the given settings; its output.
fn pipeline(demo: &Path, storage: &str) -> Output {
    run_with(&mut pipeline_command(demo, storage, 6))
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if entry.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

async fn text_of(storage: &str, name: &str) -> Option<String> {
    let location = base::Location::parse(storage).unwrap();
    let bytes = location.get_opt(name).await.unwrap()?;
    Some(String::from_utf8(bytes.to_vec()).unwrap())
}

#[test]
fn the_main_job_runs_end_to_end_through_the_coordinator_on_s3_and_a_second_run_reuses_it() {
    let Ok(bucket) = std::env::var("GANTRY_TEST_S3") else {
        assert!(
            std::env::var_os("GANTRY_REQUIRE_S3").is_none(),
            "GANTRY_REQUIRE_S3 is set but GANTRY_TEST_S3 is not: tests/run.sh starts the S3 server"
        );
        eprintln!("GANTRY_TEST_S3 is not set: the main job's S3 run is skipped (tests/run.sh sets it)");
        return;
    };
    serial(async {
        let scratch = tempfile::tempdir().unwrap();
        let demo = scratch.path().join("demo");
        let storage = format!("{bucket}/demo-{}", std::process::id());

        let first = pipeline(&demo, &storage);
        let (stdout, stderr) = text(&first);
        let logs: String = ["coordinator.log", "worker-1.log", "worker-2.log"]
            .iter()
            .map(|name| {
                format!(
                    "--- {name}\n{}\n",
                    std::fs::read_to_string(demo.join(name)).unwrap_or_default()
                )
            })
            .collect();
        assert!(first.status.success(), "{stdout}\n{stderr}\n{logs}");
        // Nothing it started outlives it: coordinator and workers name the demo folder.
        let left = processes_mentioning(demo.to_str().unwrap());
        assert!(left.is_empty(), "processes left behind: {left:?}");

        // Packed, trained by a gang of two through the coordinator, followed live.
        assert!(stdout.contains("packing"), "{stdout}");
        assert!(stdout.contains("2 workers started"), "{stdout}");
        let steps: Vec<&str> = stdout.lines().filter(|l| l.starts_with("step ")).collect();
        assert_eq!(steps.len(), 6, "one progress line per step: {stdout}");
        assert!(stdout.contains("SUCCEEDED: trained to step 6"), "{stdout}");
        // Everything landed in the bucket: dataset, job record, checkpoints, metrics, samples.
        let run = format!("{storage}/runs/blond32");
        assert!(text_of(&storage, "datasets/celeba32/manifest.json").await.is_some());
        let metrics = text_of(&run, "metrics.jsonl").await.expect("metrics.jsonl in S3");
        assert_eq!(metrics.lines().count(), 6, "{metrics}");
        assert!(text_of(&run, "checkpoints/step-0000006/manifest.json").await.is_some());
        assert!(
            base::Location::parse(&run)
                .unwrap()
                .get_opt("samples/step-0000006.png")
                .await
                .unwrap()
                .is_some()
        );
        let config = text_of(&run, "config.toml").await.expect("the resolved config");
        assert!(config.contains("workers = 2"), "{config}");
        let records = base::Location::parse(&format!("{storage}/state"))
            .unwrap()
            .join("jobs")
            .list_names()
            .await
            .unwrap();
        assert_eq!(records.len(), 1, "{records:?}");
        // The pictures, on this machine.
        let grid = image::open(demo.join("label-swap.png")).unwrap();
        assert!(
            grid.width() >= 64 && grid.height() >= 32,
            "{}x{}",
            grid.width(),
            grid.height()
        );
        let mut classes: Vec<String> = std::fs::read_dir(demo.join("generated"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        classes.sort();
        assert_eq!(classes.len(), 2, "{classes:?}");
        for class in &classes {
            assert_eq!(
                std::fs::read_dir(demo.join("generated").join(class)).unwrap().count(),
                8
            );
        }
        for line in ["checkpoints:", "metrics:", "sample grids:", "label-swap grid:"] {
            assert!(stdout.contains(line), "{line} missing from {stdout}");
        }
        println!(
            "main job on S3: {} progress lines, grid {}x{}",
            steps.len(),
            grid.width(),
            grid.height()
        );

        // Again: nothing is synthesised or packed again, and the new job resumes the finished
        // run from its last checkpoint instead of training again.
        let second = pipeline(&demo, &storage);
        let (stdout, stderr) = text(&second);
        assert!(second.status.success(), "{stdout}\n{stderr}");
        assert!(!stdout.contains("packing"), "{stdout}");
        assert!(!stdout.lines().any(|l| l.starts_with("step ")), "{stdout}");
        assert!(
            stdout.contains("resumed from step 6") || stdout.contains("trained to step 6"),
            "{stdout}"
        );
        assert_eq!(text_of(&run, "metrics.jsonl").await.unwrap(), metrics);
        assert!(processes_mentioning(demo.to_str().unwrap()).is_empty());
    });
}

#[test]
fn a_signal_to_the_main_command_stops_everything_and_the_next_run_resumes_the_saved_job() {
    use std::io::{BufRead, BufReader};
    serial(async {
        let scratch = tempfile::tempdir().unwrap();
        let demo = scratch.path().join("demo");
        let storage = demo.display().to_string();
        let mut child = pipeline_command(&demo, &storage, 400)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Follow its progress lines until training is under way, then signal it as a cluster or a
        // terminal would (SIGTERM; Ctrl-C takes the same path).
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            let training = line.starts_with("step 10 ");
            seen.push(line);
            if training {
                break;
            }
        }
        assert!(seen.last().is_some_and(|l| l.starts_with("step 10 ")), "{seen:#?}");
        ok(run_with(Command::new("kill").args(["-TERM", &child.id().to_string()])));
        let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(143), "{rest:#?}");
        let left = processes_mentioning(demo.to_str().unwrap());
        assert!(left.is_empty(), "processes left behind: {left:?}");
        // The workers stopped first: the job saved a checkpoint and went back to the queue.
        let records = std::fs::read_dir(demo.join("state/jobs")).unwrap();
        let records: Vec<serde_json::Value> = records
            .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
            .collect();
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(record["state"], "QUEUED", "{record:#}");
        assert_eq!(record["attempts"][0]["preempted"], true, "{record:#}");
        let saved = record["checkpoint"][0].as_u64().expect("a checkpoint step");
        assert!(saved >= 10, "{record:#}");

        // The next run cancels the left-over job and resumes the run from that checkpoint.
        let again = run_with(&mut pipeline_command(&demo, &storage, saved + 5));
        let (stdout, stderr) = text(&again);
        assert!(again.status.success(), "{stdout}\n{stderr}");
        assert!(
            stdout.contains("CANCELLED: cancelled: superseded by a new run of the demo"),
            "{stdout}"
        );
        assert!(stdout.contains(&format!("resumed from step {saved}")), "{stdout}");
        assert!(
            stdout.contains(&format!("SUCCEEDED: trained to step {}", saved + 5)),
            "{stdout}"
        );
        let metrics = std::fs::read_to_string(demo.join("runs/blond32/metrics.jsonl")).unwrap();
        assert_eq!(metrics.lines().count() as u64, saved + 5);
        assert!(processes_mentioning(demo.to_str().unwrap()).is_empty());
        println!("main command: stopped by SIGTERM after step 10, saved at step {saved}, resumed from it");
    });
}
