//! Storage locations: one URL names an object store and a prefix inside it.
//!
//! Accepted: a plain path (absolute or relative, the local default), `file:///abs/path`,
//! `memory://name/prefix` (an in-process store shared by every [`Location`] with the same name;
//! for tests), `s3://bucket/prefix` (credentials, region and endpoint from the usual `AWS_*`
//! environment variables, so S3-compatible servers work too), `gs://bucket/prefix` and
//! `az://container/prefix` (from `GOOGLE_*` / `AZURE_*` variables).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use url::Url;

use crate::{Error, Result};

/// What identifies one version of an object: it changes whenever the object is written again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// The store's entity tag, where it gives one.
    pub e_tag: Option<String>,
    /// When it was last written, in milliseconds since the Unix epoch.
    pub modified_ms: i64,
    /// Its size in bytes.
    pub size: u64,
}

/// A prefix in an object store, named by a URL.
#[derive(Debug, Clone)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
}

fn memory_stores() -> &'static Mutex<HashMap<String, Arc<InMemory>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

impl Location {
    /// Checks that `url` is a storage URL [`Location::parse`] would accept, without opening it
    /// or creating anything (no client is built, no folder made).
    pub fn check(url: &str) -> Result<()> {
        let bad = |message: String| Error::Url {
            url: url.to_string(),
            message,
            source: None,
        };
        if url.trim().is_empty() {
            return Err(bad("empty".into()));
        }
        if !url.contains("://") {
            return Ok(());
        }
        let parsed = Url::parse(url).map_err(|e| Error::Url {
            url: url.to_string(),
            message: "not a valid URL".into(),
            source: Some(e.into()),
        })?;
        match parsed.scheme() {
            "file" => parsed
                .to_file_path()
                .map(|_| ())
                .map_err(|()| bad("not an absolute local path".into())),
            "memory" => Ok(()),
            "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss"
                if parsed.host_str().unwrap_or_default().is_empty() =>
            {
                Err(bad(format!("{}:// needs a bucket or container name", parsed.scheme())))
            }
            "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" => Ok(()),
            other => Err(bad(format!(
                "unsupported scheme {other:?} (use a path, file://, memory://, s3://, gs:// or az://)"
            ))),
        }
    }

    /// Parses a storage URL or a local path. Local folders are created when missing.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |message: String| Error::Url {
            url: url.to_string(),
            message,
            source: None,
        };
        let failed = |message: &str, source: Box<dyn std::error::Error + Send + Sync>| Error::Url {
            url: url.to_string(),
            message: message.to_string(),
            source: Some(source),
        };
        if url.trim().is_empty() {
            return Err(bad("empty".into()));
        }
        if !url.contains("://") {
            return Self::local(PathBuf::from(url), url);
        }
        let parsed = Url::parse(url).map_err(|e| failed("not a valid URL", e.into()))?;
        let bucket = parsed.host_str().unwrap_or_default().to_string();
        let prefix =
            Path::parse(parsed.path().trim_matches('/')).map_err(|e| failed("not a valid object path", e.into()))?;
        let need_bucket = || {
            if bucket.is_empty() {
                Err(bad(format!("{}:// needs a bucket or container name", parsed.scheme())))
            } else {
                Ok(())
            }
        };
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "file" => {
                let path = parsed
                    .to_file_path()
                    .map_err(|()| bad("not an absolute local path".into()))?;
                return Self::local(path, url);
            }
            "memory" => {
                let mut stores = memory_stores().lock().expect("memory store registry poisoned");
                stores.entry(bucket).or_default().clone()
            }
            "s3" | "s3a" => {
                need_bucket()?;
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(&bucket);
                let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
                    .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
                    .or_else(|_| std::env::var("AWS_ENDPOINT"));
                if let Ok(endpoint) = endpoint {
                    if endpoint.starts_with("http://") {
                        builder = builder.with_allow_http(true);
                    }
                    builder = builder.with_endpoint(endpoint);
                }
                Arc::new(
                    builder
                        .build()
                        .map_err(|e| failed("cannot set up the S3 client", e.into()))?,
                )
            }
            "gs" => {
                need_bucket()?;
                Arc::new(
                    GoogleCloudStorageBuilder::from_env()
                        .with_bucket_name(&bucket)
                        .build()
                        .map_err(|e| failed("cannot set up the Google Cloud Storage client", e.into()))?,
                )
            }
            "az" | "azure" | "abfs" | "abfss" => {
                need_bucket()?;
                Arc::new(
                    MicrosoftAzureBuilder::from_env()
                        .with_container_name(&bucket)
                        .build()
                        .map_err(|e| failed("cannot set up the Azure client", e.into()))?,
                )
            }
            other => {
                return Err(bad(format!(
                    "unsupported scheme {other:?} (use a path, file://, memory://, s3://, gs:// or az://)"
                )));
            }
        };
        Ok(Self {
            store,
            prefix,
            url: url.trim_end_matches('/').to_string(),
        })
    }

    fn local(path: PathBuf, url: &str) -> Result<Self> {
        std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        let path = path.canonicalize().map_err(|e| Error::io(&path, e))?;
        let store = LocalFileSystem::new_with_prefix(&path).map_err(|e| Error::Url {
            url: url.to_string(),
            message: "cannot open the local folder".into(),
            source: Some(e.into()),
        })?;
        Ok(Self {
            store: Arc::new(store),
            prefix: Path::default(),
            url: url.trim_end_matches('/').to_string(),
        })
    }

    /// The URL this location was parsed from (without a trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The object store behind the location.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The full path of `name` (which may contain `/`) inside this location.
    pub fn path(&self, name: &str) -> Path {
        name.split('/')
            .filter(|part| !part.is_empty())
            .fold(self.prefix.clone(), |path, part| path.clone().join(part))
    }

    /// A location for the sub-folder `name`, sharing the same store.
    pub fn join(&self, name: &str) -> Self {
        Self {
            store: self.store.clone(),
            prefix: self.path(name),
            url: format!("{}/{}", self.url, name.trim_matches('/')),
        }
    }

    /// The URL of `name` inside this location, for messages.
    pub fn url_of(&self, name: &str) -> String {
        format!("{}/{}", self.url, name)
    }

    fn store_error(&self, name: &str, source: object_store::Error) -> Error {
        Error::Store {
            url: self.url_of(name),
            source,
        }
    }

    /// Reads the whole object `name`.
    pub async fn get(&self, name: &str) -> Result<Bytes> {
        let result = self
            .store
            .get(&self.path(name))
            .await
            .map_err(|e| self.store_error(name, e))?;
        result.bytes().await.map_err(|e| self.store_error(name, e))
    }

    /// Reads object `name`, or `None` when it does not exist.
    pub async fn get_opt(&self, name: &str) -> Result<Option<Bytes>> {
        match self.get(name).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(Error::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes object `name` in one piece (atomically on every backend).
    pub async fn put(&self, name: &str, bytes: impl Into<PutPayload>) -> Result<()> {
        self.store
            .put(&self.path(name), bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| self.store_error(name, e))
    }

    /// Deletes object `name`; a missing object is not an error.
    pub async fn delete(&self, name: &str) -> Result<()> {
        match self.store.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_error(name, e)),
        }
    }

    async fn listing(&self) -> Result<object_store::ListResult> {
        self.store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(|e| self.store_error("", e))
    }

    /// Names (relative to this location) of the objects directly inside it.
    pub async fn list_names(&self) -> Result<Vec<String>> {
        let objects = self.listing().await?.objects;
        Ok(objects
            .into_iter()
            .filter_map(|meta| meta.location.filename().map(str::to_string))
            .collect())
    }

    /// Names of the sub-folders directly inside this location (common prefixes).
    pub async fn list_dirs(&self) -> Result<Vec<String>> {
        let prefixes = self.listing().await?.common_prefixes;
        Ok(prefixes
            .into_iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }

    /// The version of object `name`, or `None` when it does not exist.
    pub async fn version(&self, name: &str) -> Result<Option<ObjectVersion>> {
        match self.store.head(&self.path(name)).await {
            Ok(meta) => Ok(Some(ObjectVersion {
                e_tag: meta.e_tag,
                modified_ms: meta.last_modified.timestamp_millis(),
                size: meta.size,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_error(name, e)),
        }
    }

    /// Writes object `name` only if it does not exist yet (atomically, where the store supports
    /// conditional writes: every backend gantry names does); `false` when it already existed.
    pub async fn create(&self, name: &str, bytes: impl Into<PutPayload>) -> Result<bool> {
        match self
            .store
            .put_opts(&self.path(name), bytes.into(), PutMode::Create.into())
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.store_error(name, e)),
        }
    }

    /// Size in bytes of object `name`.
    pub async fn size(&self, name: &str) -> Result<u64> {
        let meta = self
            .store
            .head(&self.path(name))
            .await
            .map_err(|e| self.store_error(name, e))?;
        Ok(meta.size)
    }
}
