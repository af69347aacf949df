//! Which storage a job may touch, and whether a prefix may be written into.
//!
//! - [`normalize`]: a storage URL or local path in one canonical, lexical form (`scheme://bucket
//!   /a/b`; local paths as `file:///a/b`): `..` and `.` resolved, duplicate slashes dropped,
//!   percent-encoding decoded, `file://` and plain paths alike. [`Prefixes`] compares URLs in
//!   that form, component by component (`s3://b/runs` does not allow `s3://b/runs-old`).
//! - [`Prefixes::resolved`]: the same after resolving the symlinks of a local path's existing
//!   part (what a worker checks before touching its storage).
//! - [`claim`]: a run or a dataset writes only into a prefix that is empty or already holds its
//!   kind's marker (written first, so an interrupted write can be resumed), never over foreign
//!   files.

use std::path::{Component, Path, PathBuf};

use crate::storage::Location;
use crate::{Error, Result};

/// `url` in canonical form, or why it is not a storage URL.
pub fn normalize(url: &str) -> std::result::Result<String, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("an empty URL".to_string());
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        let path = Path::new(url);
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| format!("no working folder to resolve {url:?} against: {e}"))?
                .join(path)
        };
        return Ok(format!("file://{}", lexical(&absolute.to_string_lossy())));
    };
    let scheme = scheme.to_ascii_lowercase();
    let decoded = percent_decode(rest).ok_or_else(|| format!("{url:?} has a malformed %-escape"))?;
    if scheme == "file" {
        // file:///abs/path, or file://localhost/abs/path.
        let path = decoded.strip_prefix("localhost").unwrap_or(&decoded);
        if !path.starts_with('/') {
            return Err(format!("{url:?} is not an absolute local path"));
        }
        return Ok(format!("file://{}", lexical(path)));
    }
    let (bucket, path) = decoded.split_once('/').unwrap_or((&decoded, ""));
    if bucket.is_empty() {
        return Err(format!("{url:?} names no bucket"));
    }
    let path = lexical(&format!("/{path}"));
    Ok(format!(
        "{scheme}://{}{}",
        bucket.to_ascii_lowercase(),
        path.trim_end_matches('/')
    ))
}

/// An absolute path with `.`, `..` and empty components resolved, without touching the file
/// system; always starts with `/`, no trailing slash (but `/` itself).
fn lexical(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `%XX` escapes decoded; None when one is malformed or the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A list of allowed storage prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefixes(Vec<String>);

impl Prefixes {
    /// The prefixes, normalised; names the first that is not a storage URL.
    pub fn new<S: AsRef<str>>(prefixes: &[S]) -> std::result::Result<Prefixes, String> {
        prefixes
            .iter()
            .map(|p| normalize(p.as_ref()).map_err(|e| format!("allowed prefix {:?}: {e}", p.as_ref())))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Prefixes)
    }

    /// Whether there are none (then nothing is restricted by this list).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the normalised `url` is one of the prefixes or lies below one.
    pub fn contains(&self, url: &str) -> bool {
        self.0.iter().any(|prefix| within(url, prefix))
    }

    /// The prefixes, for messages.
    pub fn list(&self) -> String {
        self.0.join(", ")
    }

    /// Whether `url` is allowed after resolving the symlinks of a local path's existing part
    /// (a link inside an allowed folder that points outside it is outside).
    pub fn allows_resolved(&self, url: &str) -> std::result::Result<bool, String> {
        let normal = normalize(url)?;
        let resolved = match normal.strip_prefix("file://") {
            Some(path) => format!("file://{}", resolve_existing(Path::new(path)).display()),
            None => normal,
        };
        Ok(self.contains(&resolved))
    }
}

/// A job URL outside the allowed prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The job key (`data.url`, `output.url`).
    pub key: &'static str,
    /// The URL as written.
    pub url: String,
    /// `read` or `write`.
    pub verb: &'static str,
    /// The prefixes that would have allowed it.
    pub allowed: String,
}

/// Who refused a job's storage, for the wording of a [`Refusal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The coordinator's `--allow-read`/`--allow-write`, at submission.
    Coordinator,
    /// A worker's own lists, before it opens the job's storage.
    Worker,
}

impl Refusal {
    /// The refusal in words: the key, the URL and the prefixes that would have allowed it. Every
    /// place that refuses a job's storage says it this way.
    pub fn message(&self, guard: Guard) -> String {
        let whose = match guard {
            Guard::Coordinator => "jobs may",
            Guard::Worker => "this worker lets jobs",
        };
        format!(
            "{} {} is outside the prefixes {whose} {}: {}",
            self.key, self.url, self.verb, self.allowed
        )
    }
}

/// Checks a job's dataset (`data_url`, read: under `read` or `write`; no `read` list: anywhere)
/// and output (`output_url`, under `write`; no `write` list: anywhere). With `resolve`, local
/// paths are compared with their symlinks resolved (what a worker does); otherwise lexically.
pub fn check_job(
    read: &Prefixes,
    write: &Prefixes,
    data_url: &str,
    output_url: &str,
    resolve: bool,
) -> std::result::Result<(), Refusal> {
    let inside = |prefixes: &Prefixes, url: &str| -> std::result::Result<bool, String> {
        if resolve {
            prefixes.allows_resolved(url)
        } else {
            normalize(url).map(|normal| prefixes.contains(&normal))
        }
    };
    let refuse = |key, url: &str, verb, allowed: String| Refusal {
        key,
        url: url.to_string(),
        verb,
        allowed,
    };
    let unparsable = |key, url: &str, e: String| refuse(key, url, "use", e);
    if !read.is_empty() {
        let ok = inside(read, data_url).and_then(|r| Ok(r || inside(write, data_url)?));
        match ok {
            Ok(true) => {}
            Ok(false) => {
                let lists = [read.list(), write.list()].into_iter().filter(|l| !l.is_empty());
                return Err(refuse(
                    "data.url",
                    data_url,
                    "read",
                    lists.collect::<Vec<_>>().join(", "),
                ));
            }
            Err(e) => return Err(unparsable("data.url", data_url, e)),
        }
    }
    if !write.is_empty() {
        match inside(write, output_url) {
            Ok(true) => {}
            Ok(false) => return Err(refuse("output.url", output_url, "write", write.list())),
            Err(e) => return Err(unparsable("output.url", output_url, e)),
        }
    }
    Ok(())
}

/// Whether normalised `url` equals `prefix` or lies below it (whole components).
pub fn within(url: &str, prefix: &str) -> bool {
    url == prefix || prefix.ends_with('/') && url.starts_with(prefix) || url.starts_with(&format!("{prefix}/"))
}

/// `path` with the symlinks of its longest existing ancestor resolved, the rest appended.
fn resolve_existing(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.components().filter(|c| !matches!(c, Component::CurDir)).collect(),
        }
    }
}

/// The marker a run writes first into its output prefix.
pub const RUN_MARKER: &str = ".gantry-run";
/// The marker `dataprep pack` writes first into a dataset prefix.
pub const DATASET_MARKER: &str = ".gantry-dataset";

/// Makes sure `location` is empty or already holds `marker` (or, for prefixes written before
/// markers, an entry that `legacy` recognises), then writes the marker. Anything else is refused
/// naming the first foreign entry; `force` skips the check.
pub async fn claim(location: &Location, marker: &str, legacy: impl Fn(&str) -> bool, force: bool) -> Result<()> {
    let names = location.list_names().await?;
    let dirs = location.list_dirs().await?;
    let ours = names.iter().any(|n| n == marker) || names.iter().chain(&dirs).any(|n| legacy(n));
    if !ours && !force {
        let mut entries: Vec<String> = names
            .into_iter()
            .chain(dirs.into_iter().map(|d| format!("{d}/")))
            .collect();
        entries.sort();
        if let Some(first) = entries.first() {
            return Err(Error::Foreign {
                url: location.url().to_string(),
                entry: first.clone(),
                marker: marker.to_string(),
            });
        }
    }
    location.put(marker, b"gantry\n".to_vec()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_normalise_lexically() {
        assert_eq!(
            normalize("s3://Bucket/runs/../datasets//celeba/").unwrap(),
            "s3://bucket/datasets/celeba"
        );
        assert_eq!(normalize("s3://b/runs/%2e%2e/secrets").unwrap(), "s3://b/secrets");
        assert_eq!(normalize("s3://b/runs/a%20b").unwrap(), "s3://b/runs/a b");
        assert_eq!(normalize("file:///data/./runs/x").unwrap(), "file:///data/runs/x");
        assert_eq!(normalize("/data/runs/../../etc").unwrap(), "file:///etc");
        assert_eq!(normalize("file://localhost/data/runs").unwrap(), "file:///data/runs");
        assert_eq!(
            normalize("FILE:///data//runs").unwrap(),
            normalize("/data/runs").unwrap()
        );
        assert!(normalize("s3://b/%zz").is_err());
        assert!(normalize("s3:///path").is_err());
    }

    #[test]
    fn prefixes_match_whole_components() {
        let allowed = Prefixes::new(&["s3://b/runs/", "/data/runs"]).unwrap();
        for ok in [
            "s3://b/runs",
            "s3://b/runs/x",
            "s3://B/runs//x/",
            "/data/runs/a",
            "file:///data/runs/a/../b",
        ] {
            assert!(allowed.contains(&normalize(ok).unwrap()), "{ok}");
        }
        for refused in [
            "s3://b/runs-old/x",
            "s3://b/runs/../secrets",
            "s3://b/runs/%2e%2e/secrets",
            "s3://c/runs/x",
            "gs://b/runs/x",
            "/data/runs/../etc",
            "/data/runsx",
            "file:///data/runs/../../etc",
        ] {
            assert!(!allowed.contains(&normalize(refused).unwrap()), "{refused}");
        }
    }

    #[test]
    fn a_refusal_names_the_key_the_url_and_what_would_have_allowed_it() {
        let read = Prefixes::new(&["s3://b/data"]).unwrap();
        let write = Prefixes::new(&["s3://b/runs"]).unwrap();
        assert_eq!(
            check_job(&read, &write, "s3://b/data/x", "s3://b/runs/r", false),
            Ok(())
        );
        let refused = check_job(&read, &write, "s3://b/data/x", "s3://b/elsewhere", false).unwrap_err();
        assert_eq!(
            refused.message(Guard::Coordinator),
            "output.url s3://b/elsewhere is outside the prefixes jobs may write: s3://b/runs"
        );
        let refused = check_job(&read, &write, "s3://c/x", "s3://b/runs/r", false).unwrap_err();
        assert_eq!(
            refused.message(Guard::Worker),
            "data.url s3://c/x is outside the prefixes this worker lets jobs read: s3://b/data, s3://b/runs"
        );
    }

    #[test]
    fn a_symlink_out_of_an_allowed_folder_is_outside() {
        let dir = tempfile::tempdir().unwrap();
        let allowed_dir = dir.path().join("runs");
        let outside = dir.path().join("secrets");
        std::fs::create_dir_all(&allowed_dir).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, allowed_dir.join("link")).unwrap();
        let allowed = Prefixes::new(&[allowed_dir.canonicalize().unwrap().to_string_lossy()]).unwrap();
        let through_link = allowed_dir.join("link/new-run");
        assert!(
            allowed.contains(&normalize(&through_link.to_string_lossy()).unwrap()),
            "lexically inside"
        );
        assert_eq!(allowed.allows_resolved(&through_link.to_string_lossy()), Ok(false));
        assert_eq!(
            allowed.allows_resolved(&allowed_dir.join("new-run").to_string_lossy()),
            Ok(true)
        );
    }
}
