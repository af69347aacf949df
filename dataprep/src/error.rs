//! The one error type of the data path.

use std::any::Any;
use std::path::PathBuf;

/// Everything that can go wrong while packing, reading or inspecting a dataset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A local file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An input file is malformed (annotation file, IDX file...): names the file and line.
    #[error("{path}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Malformed {
        /// The input file.
        path: PathBuf,
        /// 1-based line number, where the format has lines.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// The input folder does not look like the dataset it was given as.
    #[error("{path}: {message}")]
    Input {
        /// The input folder.
        path: PathBuf,
        /// What is missing or wrong.
        message: String,
    },
    /// A storage URL could not be understood or opened.
    #[error("storage URL {url:?}: {message}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// An object store operation failed.
    #[error("{url}: {source}")]
    Store {
        /// The object's full URL.
        url: String,
        /// The underlying error.
        source: object_store::Error,
    },
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
    },
    /// A shard is missing, truncated or does not decode.
    #[error("shard {url}: {message}")]
    Shard {
        /// The shard URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// Parquet encoding failed while packing.
    #[error("writing {url}: {source}")]
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
    #[error("{path}: {source}")]
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
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A malformed-input error at `path`, line `line`.
    pub fn malformed(path: impl Into<PathBuf>, line: Option<usize>, message: impl Into<String>) -> Self {
        Error::Malformed {
            path: path.into(),
            line,
            message: message.into(),
        }
    }

    /// The error of `task`, which panicked with `payload` (as `catch_unwind` or a `JoinError`
    /// gives it back); the message is kept when the payload is a string, as `panic!` makes it.
    pub(crate) fn panicked(task: &'static str, payload: Box<dyn Any + Send>) -> Self {
        let message = match payload.downcast::<String>() {
            Ok(message) => *message,
            Err(payload) => match payload.downcast::<&'static str>() {
                Ok(message) => (*message).to_string(),
                Err(_) => "a panic without a message".to_string(),
            },
        };
        Error::Panicked { task, message }
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
    use super::Error;

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
