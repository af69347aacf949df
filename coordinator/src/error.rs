//! The coordinator's error type, and the one place where errors become gRPC status codes.

use tonic::{Code, Status};

/// Everything a coordinator call or the server itself can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The job spec is invalid; every problem is listed, each naming its field.
    #[error("invalid job spec:\n  - {}", problems.join("\n  - "))]
    InvalidSpec {
        /// One line per problem.
        problems: Vec<String>,
    },
    /// A request is malformed (a missing field, an unknown state).
    #[error("{0}")]
    BadRequest(String),
    /// A job would touch storage outside what jobs may read or write.
    #[error("{0}")]
    Denied(String),
    /// No job has this id.
    #[error("no job {id}")]
    JobNotFound {
        /// The id asked for.
        id: String,
    },
    /// The job cannot do that in its state (cancel a finished job).
    #[error("job {id} is {state}: {message}")]
    JobState {
        /// The job.
        id: String,
        /// Its state.
        state: &'static str,
        /// What cannot be done.
        message: String,
    },
    /// Another job that has not ended writes the same output: two runs in one place would
    /// overwrite each other's checkpoints.
    #[error(
        "output.url {url} is the output of {job}, which is {state}: wait for it to end or cancel it (a job on the same output then resumes its checkpoints), or use another output.url"
    )]
    OutputInUse {
        /// The output, as submitted.
        url: String,
        /// The job writing it.
        job: String,
        /// That job's state.
        state: &'static str,
    },
    /// The job store (object storage under `--state`) failed.
    #[error("job store")]
    Store(#[from] base::Error),
    /// A job record in the store cannot be read.
    #[error("job record {path} does not decode")]
    Record {
        /// The record.
        path: String,
        /// The decoder's error.
        source: serde_json::Error,
    },
    /// This coordinator does not hold the state's lease (any more): it may not write.
    #[error("this coordinator may not write the job store (lease epoch {epoch}): {why}")]
    Fenced {
        /// The epoch it held.
        epoch: u64,
        /// Why it lost it.
        why: String,
    },
    /// Another coordinator holds the state's lease, and did not let go in time.
    #[error(
        "another coordinator holds the lease on the job store {state} (epoch {epoch}): {holder}; waited {waited_s:.1} s (--lease-wait)"
    )]
    LeaseHeld {
        /// The state URL.
        state: String,
        /// Who holds it.
        holder: String,
        /// Its epoch.
        epoch: u64,
        /// How long this one waited.
        waited_s: f64,
    },
    /// Another coordinator took the lease this one held: it stops serving.
    #[error("lost the lease on the job store (epoch {epoch}) to {by}: this coordinator stops")]
    LeaseLost {
        /// The epoch this one held.
        epoch: u64,
        /// Who took it.
        by: String,
    },
    /// The server could not start or failed (TLS set-up, the listener).
    #[error("the gRPC server failed")]
    Server(#[from] tonic::transport::Error),
    /// The reflection service could not be built.
    #[error("building the gRPC reflection service failed")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The HTTP server (dashboard, `/metrics`) could not start or failed.
    #[error("the HTTP server: {0}")]
    Http(String),
}

/// Result with the coordinator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidSpec { .. } | Error::BadRequest(_) => Code::InvalidArgument,
            Error::Denied(_) => Code::PermissionDenied,
            Error::JobNotFound { .. } => Code::NotFound,
            Error::JobState { .. } | Error::OutputInUse { .. } => Code::FailedPrecondition,
            Error::Store(_) | Error::Fenced { .. } | Error::LeaseHeld { .. } | Error::LeaseLost { .. } => {
                Code::Unavailable
            }
            Error::Record { .. } | Error::Server(_) | Error::Reflection(_) | Error::Http(_) => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        Status::new(e.code(), base::error_chain(&e))
    }
}
