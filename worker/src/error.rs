//! The trainer's error type. As everywhere in gantry, an error's text says what failed in our
//! words and its cause is its `source()`, not repeated in the text: show errors to people with
//! [`base::error_chain`] (or `{:#}` of `anyhow`).

/// Everything that can stop a training job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The job file or spec is unusable; every problem is listed.
    #[error(transparent)]
    Job(#[from] gantry_job::JobError),
    /// Reading data failed.
    #[error(transparent)]
    Data(#[from] dataprep::Error),
    /// Reading or writing storage (artifacts, checkpoints, reports) failed.
    #[error(transparent)]
    Storage(#[from] base::Error),
    /// libtorch reported an error.
    #[error("libtorch failed")]
    Torch(#[from] tch::TchError),
    /// The job would touch storage this worker does not let jobs touch.
    #[error("{message}")]
    Denied {
        /// The URL and the allowed prefixes.
        message: String,
    },
    /// The job needs more memory than this worker has (by the estimate, before any allocation).
    #[error("{message}")]
    TooLarge {
        /// The keys, the estimate and the memory available.
        message: String,
    },
    /// libtorch could not allocate memory (or otherwise failed inside a call that has no
    /// fallible form in tch).
    #[error("{during} failed: {message}")]
    Allocation {
        /// What was being done: `building the model`, `step 12`.
        during: String,
        /// libtorch's message (it names the bytes it tried to allocate).
        message: String,
    },
    /// The exchange with the other ranks of a data-parallel run failed.
    #[error(transparent)]
    Collective(#[from] crate::collective::Error),
    /// A checkpoint is unusable.
    #[error("checkpoint {url}: {message}")]
    Checkpoint {
        /// The checkpoint folder.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// A file of a checkpoint does not decode.
    #[error("checkpoint {url}: {file} does not decode")]
    CheckpointFile {
        /// The checkpoint folder.
        url: String,
        /// The file in it.
        file: String,
        /// The decoder's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Tensors could not be encoded as safetensors.
    #[error("encoding tensors as safetensors failed")]
    Encode(#[source] safetensors::SafeTensorError),
    /// A loss became NaN or infinite.
    #[error("{metric} is {value} at step {step}; {last_good}")]
    NonFinite {
        /// The metric.
        metric: &'static str,
        /// Its value.
        value: f64,
        /// The step that produced it.
        step: u64,
        /// Names the last good checkpoint.
        last_good: String,
    },
    /// The requested device is not available.
    #[error("device {device:?}: {message}")]
    Device {
        /// The device as configured.
        device: String,
        /// What is wrong.
        message: String,
    },
    /// The job was stopped before it finished.
    #[error("stopped at step {step}")]
    Stopped {
        /// The last completed step.
        step: u64,
    },
    /// A rank of the job is shutting down: every rank stopped at the same step after rank 0
    /// saved a checkpoint there, so the job resumes from it.
    #[error("preempted at step {step} ({})", checkpoint.as_deref().map_or("no step taken, nothing to save".to_string(), |url| format!("checkpoint {url}")))]
    Preempted {
        /// The last completed step.
        step: u64,
        /// The checkpoint of that step; None when no step was taken.
        checkpoint: Option<String>,
    },
    /// Something could not be recorded in the run's TensorBoard event files.
    #[error("TensorBoard events: {message}")]
    Events {
        /// What was wrong.
        message: String,
    },
}

/// Result with the trainer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
