//! The job store: one JSON record per job, `jobs/<id>.json`, under the coordinator's `--state`
//! URL in object storage. Each write replaces a whole record (atomic on every backend), so a
//! coordinator that dies between writes leaves every record either old or new, never torn.

use dataprep::Location;

use crate::core::JobRecord;
use crate::{Error, Result};

/// Job records under a state prefix.
#[derive(Debug, Clone)]
pub struct JobStore {
    jobs: Location,
}

impl JobStore {
    /// The store at a state URL (a path, `file://`, `s3://`, `gs://`, `az://`, `memory://`).
    pub fn open(url: &str) -> Result<Self> {
        Ok(Self {
            jobs: Location::parse(url)?.join("jobs"),
        })
    }

    /// Where the records live.
    pub fn url(&self) -> String {
        self.jobs.url().to_string()
    }

    /// Writes a record.
    pub async fn save(&self, record: &JobRecord) -> Result<()> {
        let json = serde_json::to_vec_pretty(record).expect("records serialise");
        self.jobs.put(&format!("{}.json", record.id), json).await?;
        Ok(())
    }

    /// Every record in the store; an unreadable one is an error naming it (the coordinator
    /// refuses to start rather than forget a job).
    pub async fn load_all(&self) -> Result<Vec<JobRecord>> {
        let mut records = Vec::new();
        for name in self.jobs.list_names().await? {
            if !name.ends_with(".json") {
                continue;
            }
            let bytes = self.jobs.get(&name).await?;
            let record: JobRecord = serde_json::from_slice(&bytes).map_err(|source| Error::Record {
                path: self.jobs.url_of(&name),
                source,
            })?;
            records.push(record);
        }
        records.sort_by_key(|r| r.seq);
        Ok(records)
    }
}
