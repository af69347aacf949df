//! Where a run puts its outputs, inside the job's output location:
//!
//! ```text
//! <output>/
//!   .gantry-run                     the marker, written first (access::RUN_MARKER)
//!   config.toml                     the resolved job file
//!   metrics.jsonl                   one JSON line per step, cut back to the checkpoint on resume
//!   samples/step-0000400.png        a sample grid per sample step
//!   checkpoints/step-0000400/       a checkpoint (its manifest.json written last)
//!   checkpoints/latest              the name of the latest complete checkpoint
//!   eval/step-0000400.json          an evaluation report
//!   eval/classifier/                the evaluation classifier's cache
//!   tensorboard/                    TensorBoard event files
//! ```
//!
//! The worker writes this layout and the coordinator's dashboard reads it: both name every
//! file through this module.

/// The resolved job file.
pub const CONFIG_FILE: &str = "config.toml";
/// One JSON line per step.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// Folder of the sample grids.
pub const SAMPLES: &str = "samples";
/// Folder of the checkpoints.
pub const CHECKPOINTS: &str = "checkpoints";
/// Inside [`CHECKPOINTS`]: the name of the latest complete checkpoint.
pub const LATEST: &str = "latest";
/// Folder of the evaluation reports.
pub const EVAL: &str = "eval";
/// Inside [`EVAL`]: the folder of the cached evaluation classifier.
pub const CLASSIFIER: &str = "classifier";
/// Folder of the TensorBoard event files.
pub const TENSORBOARD: &str = "tensorboard";

/// The name every per-step artefact starts with: `step-` and the step in at least 7 digits.
pub fn step_name(step: u64) -> String {
    format!("step-{step:07}")
}

/// The step of a per-step name (`step-0000400`, followed by `suffix`), if it is one.
pub fn step_of(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?.strip_suffix(suffix)?;
    (digits.len() >= 7 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The folder of the checkpoint at `step`, inside [`CHECKPOINTS`].
pub fn checkpoint_folder(step: u64) -> String {
    step_name(step)
}

/// The file of the sample grid at `step`, inside [`SAMPLES`].
pub fn sample_file(step: u64) -> String {
    format!("{}.png", step_name(step))
}

/// The step of a sample grid's file name, if `name` is one.
pub fn sample_step(name: &str) -> Option<u64> {
    step_of(name, ".png")
}

/// The file of the evaluation report at `step`, inside [`EVAL`].
pub fn eval_report(step: u64) -> String {
    format!("{}.json", step_name(step))
}

/// The job output holding a checkpoint folder URL (`<output>/checkpoints/step-N`), if it is one.
pub fn run_output_of_checkpoint(folder: &str) -> Option<&str> {
    let (parent, name) = folder.trim_end_matches('/').rsplit_once('/')?;
    let (output, checkpoints) = parent.rsplit_once('/')?;
    (step_of(name, "").is_some() && checkpoints == CHECKPOINTS && !output.is_empty()).then_some(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_step_names_round_trip_and_strangers_are_not_taken_for_them() {
        assert_eq!(sample_file(40), "step-0000040.png");
        assert_eq!(sample_step("step-0000040.png"), Some(40));
        assert_eq!(sample_step("step-12345678.png"), Some(12_345_678));
        for stranger in [
            "step-40.png",
            "../x.png",
            "step-0000040.jpg",
            "step-00000x0.png",
            "step-.png",
        ] {
            assert_eq!(sample_step(stranger), None, "{stranger}");
        }
        assert_eq!(checkpoint_folder(7), "step-0000007");
        assert_eq!(eval_report(800), "step-0000800.json");
    }

    #[test]
    fn a_checkpoint_folder_names_its_run_output() {
        assert_eq!(
            run_output_of_checkpoint("s3://b/runs/r1/checkpoints/step-0000010"),
            Some("s3://b/runs/r1")
        );
        assert_eq!(
            run_output_of_checkpoint("/runs/r1/checkpoints/step-0000010/"),
            Some("/runs/r1")
        );
        assert_eq!(run_output_of_checkpoint("/runs/r1/other/step-0000010"), None);
        assert_eq!(run_output_of_checkpoint("/runs/r1/checkpoints/latest"), None);
        assert_eq!(run_output_of_checkpoint("step-1"), None);
    }
}
