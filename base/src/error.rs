//! The errors of storage locations, and how a chain of causes is printed.

use std::path::PathBuf;

/// A cause of an [`Error`] whose type varies from one occurrence to the next.
pub(crate) type Cause = Box<dyn std::error::Error + Send + Sync>;

/// What can go wrong with a storage location.
///
/// Display says what failed where, in our words; an underlying error (I/O, object store, URL
/// syntax) is the [`source`](std::error::Error::source) and not repeated in the text. Print a
/// whole chain with `{:#}` of `anyhow`, or with [`error_chain`] where there is no anyhow.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A local file or folder could not be read or written.
    #[error("I/O error on {path}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A storage URL could not be understood or opened.
    #[error("storage URL {url:?}: {message}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        message: String,
        /// The underlying error (URL syntax, object store configuration), where there is one.
        #[source]
        source: Option<Cause>,
    },
    /// An object store operation failed.
    #[error("object store request for {url} failed")]
    Store {
        /// The object's full URL.
        url: String,
        /// The underlying error.
        source: object_store::Error,
    },
    /// A prefix to write into holds files gantry did not write.
    #[error(
        "{url} holds {entry:?}, which gantry did not write: refusing to write there (use an empty prefix, or one with {marker})"
    )]
    Foreign {
        /// The prefix.
        url: String,
        /// Its first foreign entry (a folder ends with `/`).
        entry: String,
        /// The marker a prefix of ours holds.
        marker: String,
    },
}

/// Result with the storage [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether the object or folder asked for does not exist (as opposed to a store that did not
    /// answer, or refused).
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::Store { source, .. } => matches!(source, object_store::Error::NotFound { .. }),
            Error::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

/// `error` and its causes joined by ": ", for people: what `{:#}` of `anyhow` prints, except that
/// a cause whose text already ends the message is left out (many libraries, `object_store`
/// among them, repeat their source in their own text).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let next = error.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = error.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{Error, error_chain};

    #[test]
    fn the_chain_names_each_cause_once() {
        let not_found = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let io = Error::io("/data/a.jpg", not_found());
        assert_eq!(io.to_string(), "I/O error on /data/a.jpg");
        assert_eq!(error_chain(&io), "I/O error on /data/a.jpg: no such file");
        assert!(io.is_not_found());
        // object_store repeats its source in its own text; the chain does not repeat it again.
        let store = Error::Store {
            url: "memory://x/a.json".into(),
            source: object_store::Error::NotFound {
                path: "a.json".into(),
                source: Box::new(not_found()),
            },
        };
        assert!(store.is_not_found());
        assert_eq!(
            error_chain(&store),
            "object store request for memory://x/a.json failed: Object at location a.json not found: no such file"
        );
        let refused = Error::Foreign {
            url: "file:///runs".into(),
            entry: "notes.txt".into(),
            marker: ".gantry-run".into(),
        };
        assert!(!refused.is_not_found());
    }
}
