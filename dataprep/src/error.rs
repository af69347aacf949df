//! The one error type of the data path.

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
}
