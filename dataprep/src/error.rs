//! The one error type of the data path.

use std::any::Any;
use std::path::PathBuf;

/// A cause of an [`Error`] whose type varies from one occurrence to the next.
type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong while packing, reading or inspecting a dataset.
///
/// Display says what failed where, in our words; an underlying error (I/O, object store,
/// Parquet, JSON...) is the [`source`](std::error::Error::source) and not repeated in the text.
/// Print a whole chain with `{:#}` of `anyhow`, or with [`error_chain`] where there is no anyhow.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input file is malformed (annotation file, IDX file...): names the file and line.
    #[error("{path}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Malformed {
        /// The input file.
        path: PathBuf,
        /// 1-based line number, where the format has lines.
        line: Option<usize>,
        /// What is wrong.
        message: String,
        /// The underlying error, where a decoder reported one.
        #[source]
        source: Option<Cause>,
    },
    /// The input folder does not look like the dataset it was given as.
    #[error("{path}: {message}")]
    Input {
        /// The input folder.
        path: PathBuf,
        /// What is missing or wrong.
        message: String,
    },
    /// A local file or folder, or a storage location, could not be opened, read or written
    /// (see [`base::Error`]).
    #[error(transparent)]
    Storage(#[from] base::Error),
    /// There is no dataset at this URL (no `manifest.json`).
    #[error("no dataset at {url}: {url}/manifest.json does not exist (a pack that did not finish leaves no manifest)")]
    NoDataset {
        /// The dataset URL.
        url: String,
    },
    /// The manifest exists but cannot be used.
    #[error("{url}: invalid manifest: {message}")]
    Manifest {
        /// The manifest URL.
        url: String,
        /// What is wrong.
        message: String,
        /// The JSON error, when the manifest does not parse.
        #[source]
        source: Option<serde_json::Error>,
    },
    /// A shard is missing, truncated or does not decode.
    #[error("shard {url}: {message}")]
    Shard {
        /// The shard URL.
        url: String,
        /// What is wrong.
        message: String,
        /// The underlying error (Parquet, PNG), where there is one.
        #[source]
        source: Option<Cause>,
    },
    /// Parquet encoding failed while packing.
    #[error("cannot write Parquet shard {url}")]
    Parquet {
        /// The shard being written.
        url: String,
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },
    /// The requested condition does not fit the dataset.
    #[error("condition {condition:?}: {message}")]
    Condition {
        /// The condition as given.
        condition: String,
        /// What is wrong.
        message: String,
    },
    /// Reader or pack options are inconsistent.
    #[error("invalid option: {0}")]
    Options(String),
    /// Encoding an output image failed.
    #[error("cannot encode image {path}")]
    Image {
        /// The image path or URL.
        path: String,
        /// The underlying error.
        source: image::ImageError,
    },
    /// The work was interrupted (Ctrl-C); nothing that looks complete was left behind.
    #[error("interrupted")]
    Interrupted,
    /// A background task panicked: a bug, or input that reached an unchecked assumption.
    #[error("{task} panicked: {message}")]
    Panicked {
        /// Which task, e.g. "the data loader's decoding task".
        task: &'static str,
        /// The panic's message.
        message: String,
    },
}

/// Result with the data path's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns ([`base::Error::Io`]).
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Storage(base::Error::io(path, source))
    }

    /// A malformed-input error at `path`, line `line`.
    pub fn malformed(path: impl Into<PathBuf>, line: Option<usize>, message: impl Into<String>) -> Self {
        Error::Malformed {
            path: path.into(),
            line,
            message: message.into(),
            source: None,
        }
    }

    /// A shard error that is ours to describe.
    pub(crate) fn shard(url: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Shard {
            url: url.into(),
            message: message.into(),
            source: None,
        }
    }

    /// A shard error caused by `source`.
    pub(crate) fn shard_caused(url: impl Into<String>, message: impl Into<String>, source: impl Into<Cause>) -> Self {
        Error::Shard {
            url: url.into(),
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The error of `task`, which panicked with `payload` (as `catch_unwind` or a `JoinError`
    /// gives it back); the message is kept when the payload is a string, as `panic!` makes it.
    pub fn panicked(task: &'static str, payload: Box<dyn Any + Send>) -> Self {
        Error::Panicked {
            task,
            message: base::panic::message(payload.as_ref()),
        }
    }

    /// The error of a spawned `task` that did not finish: [`Error::Panicked`] with its panic, or
    /// [`Error::Interrupted`] when the runtime cancelled it (it is shutting down).
    pub(crate) fn joined(task: &'static str, error: tokio::task::JoinError) -> Self {
        match error.try_into_panic() {
            Ok(payload) => Self::panicked(task, payload),
            Err(_) => Error::Interrupted,
        }
    }
}

#[cfg(test)]
mod tests {
    use base::error_chain;

    use super::Error;

    #[test]
    fn a_storage_error_keeps_its_words_and_its_chain() {
        let not_found = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = Error::from(base::Error::io("/data/a.jpg", not_found));
        assert_eq!(error.to_string(), "I/O error on /data/a.jpg");
        assert_eq!(error_chain(&error), "I/O error on /data/a.jpg: no such file");
    }

    #[tokio::test]
    async fn a_panicking_task_becomes_an_error_with_its_message() {
        let task = "the test task";
        let formatted = tokio::task::spawn_blocking(|| -> u32 { panic!("row {} is corrupt", 7) })
            .await
            .unwrap_err();
        let error = Error::joined(task, formatted);
        assert!(matches!(&error, Error::Panicked { message, .. } if message == "row 7 is corrupt"));
        assert_eq!(error.to_string(), "the test task panicked: row 7 is corrupt");
        let literal = tokio::spawn(async { panic!("a literal") }).await.unwrap_err();
        assert_eq!(
            Error::joined(task, literal).to_string(),
            "the test task panicked: a literal"
        );
        let opaque = std::panic::catch_unwind(|| std::panic::panic_any(42)).unwrap_err();
        assert_eq!(
            Error::panicked(task, opaque).to_string(),
            "the test task panicked: a panic without a message"
        );
    }
}
