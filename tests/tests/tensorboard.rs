//! Watching a run from the outside: TensorBoard reads the event files rank 0 writes (from a
//! local folder and from the bucket) and finds the values of `metrics.jsonl`, the evaluation
//! figures and the sample grids in them.

use crate::cluster::*;
use crate::python_client::python_command;
use crate::util::*;

/// A short job on the scratch dataset with sample grids and evaluations at steps 2 and 4 and
/// the last.
fn observed_job(scratch: &Scratch, output: &str) -> std::path::PathBuf {
    let text = format!(
        "[data]\nurl = \"{data}\"\n[model]\nimage_size = 32\nwidth = 8\n\
         [train]\nbatch_size = 8\nsteps = 5\ncheckpoint_every = 3\nsample_every = 2\n\
         eval_every = 2\neval_samples = 16\n\
         sample_rows = 2\ndevice = \"cpu\"\nthreads = 1\n\
         [output]\nurl = \"{output}\"\n[job]\nname = \"observed\"\n",
        data = scratch.data(),
    );
    let file = scratch.path("observed.toml");
    std::fs::write(&file, text).unwrap();
    file
}

/// Runs `tests/python/tensorboard_check.py` on a run's output; returns its JSON summary.
fn tensorboard_check(output: &str) -> serde_json::Value {
    let out = run_with(python_command("tests/python/tensorboard_check.py").arg(output));
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "TensorBoard's reading of {output} disagrees:\n{stderr}"
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn tensorboard_reads_the_run_s_events_from_a_folder_and_from_the_bucket() {
    let scratch = Scratch::new();
    let mut outputs = vec![scratch.path("runs/observed").display().to_string()];
    match std::env::var("GANTRY_TEST_S3") {
        Ok(bucket) => outputs.push(format!("{bucket}/observe-{}", std::process::id())),
        Err(_) => assert!(
            std::env::var_os("GANTRY_REQUIRE_S3").is_none(),
            "GANTRY_REQUIRE_S3 is set but GANTRY_TEST_S3 is not: tests/run.sh starts the S3 server"
        ),
    }
    for output in outputs {
        let job = observed_job(&scratch, &output);
        ok(run("worker", &["train", "--config", job.to_str().unwrap()]));
        let summary = tensorboard_check(&output);
        assert_eq!(
            summary["steps"],
            serde_json::json!([1, 2, 3, 4, 5]),
            "{output}: {summary}"
        );
        assert_eq!(
            summary["image_steps"],
            serde_json::json!([2, 4, 5]),
            "{output}: {summary}"
        );
        assert_eq!(
            summary["evaluated_steps"],
            serde_json::json!([2, 4, 5]),
            "{output}: {summary}"
        );
        // Four losses, images/s and three timings at each of the five steps, and four overall
        // evaluation figures and one per class (two classes) at each of the three evaluations.
        assert_eq!(summary["values_checked"], 40 + 3 * (4 + 2), "{output}: {summary}");
    }
}
