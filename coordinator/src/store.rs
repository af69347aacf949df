//! The job store: one JSON record per job, `jobs/<id>.json`, under the coordinator's `--state`
//! URL in object storage. Each write replaces a whole record (atomic on every backend), so a
//! coordinator that dies between writes leaves every record either old or new, never torn.
//!
//! Writes happen outside the coordinator's lock: a call stages the records it changed
//! ([`JobStore::stage`], under the lock, no I/O), releases the lock, then waits until each is
//! written ([`JobStore::flush`]). Writes of one record are serialised and carry its version:
//! a later version is never overwritten by an earlier one, and a write that finds a newer
//! version staged writes that one instead (calls that change one job in quick succession
//! share a write).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use base::Location;
use futures::{StreamExt, TryStreamExt};

use crate::core::JobRecord;
use crate::lease::Fence;
use crate::telemetry::{InternalEvent, Telemetry};
use crate::{Error, Result};

/// Records read at once when a coordinator starts.
const LOAD_CONCURRENCY: usize = 32;

/// Job records under a state prefix.
#[derive(Debug, Clone)]
pub struct JobStore {
    jobs: Location,
    slots: Arc<Mutex<HashMap<String, Arc<Slot>>>>,
    /// Where writes are counted ([`InternalEvent::RecordWritten`]); the core emits into it too.
    telemetry: Telemetry,
    fence: Option<Fence>,
}

/// One record's writes.
#[derive(Debug, Default)]
struct Slot {
    /// The newest version staged and not yet written.
    pending: Mutex<Option<JobRecord>>,
    /// Held while the record is written; the version last written.
    io: Arc<tokio::sync::Mutex<u64>>,
}

impl JobStore {
    /// The store at a state URL (a path, `file://`, `s3://`, `gs://`, `az://`, `memory://`).
    pub fn open(url: &str) -> Result<Self> {
        Ok(Self {
            jobs: Location::parse(url)?.join("jobs"),
            slots: Arc::default(),
            telemetry: Telemetry::default(),
            fence: None,
        })
    }

    /// The same store, writing only while `fence` says this coordinator holds the state's lease.
    pub fn fenced(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }

    /// Where the records live.
    pub fn url(&self) -> String {
        self.jobs.url().to_string()
    }

    /// Records written since this store was opened.
    pub fn records_written(&self) -> u64 {
        self.telemetry.records_written.get()
    }

    /// The telemetry its writes are counted in (the coordinator's core shares it).
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Writes a record now (no staging, no ordering with other writes of it).
    pub async fn save(&self, record: &JobRecord) -> Result<()> {
        if let Some(fence) = &self.fence {
            fence.check()?;
        }
        let json = serde_json::to_vec_pretty(record).expect("records serialise");
        self.jobs.put(&format!("{}.json", record.id), json).await?;
        InternalEvent::RecordWritten {
            job_id: &record.id,
            version: record.version,
        }
        .emit(&self.telemetry);
        Ok(())
    }

    fn slot(&self, id: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.entry(id.to_string()).or_default().clone()
    }

    /// The writes of record `id`, for tests that hold them up.
    #[cfg(test)]
    pub(crate) async fn hold_writes(&self, id: &str) -> tokio::sync::OwnedMutexGuard<u64> {
        self.slot(id).io.clone().lock_owned().await
    }

    /// Leaves a record to write (no I/O: cheap under the coordinator's lock). Returns its
    /// version, for [`JobStore::flush`].
    pub fn stage(&self, record: &JobRecord) -> u64 {
        let slot = self.slot(&record.id);
        let mut pending = slot.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.as_ref().is_none_or(|p| p.version < record.version) {
            *pending = Some(record.clone());
        }
        record.version
    }

    /// Returns once record `id` is stored at `version` or later: writes the newest staged
    /// version unless a write of it, or of a newer one, already succeeded.
    pub async fn flush(&self, id: &str, version: u64) -> Result<()> {
        let slot = self.slot(id);
        let mut written = slot.io.lock().await;
        if *written >= version {
            return Ok(());
        }
        let taken = slot.pending.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(record) = taken else {
            // Every version is staged before anyone flushes it, and only a successful write
            // (of that version or a newer one) consumes it.
            debug_assert!(false, "record {id} version {version} was never staged");
            return Ok(());
        };
        match self.save(&record).await {
            Ok(()) => {
                *written = record.version;
                Ok(())
            }
            Err(e) => {
                // Left for the next flush to try again, unless a newer version came meanwhile.
                let mut pending = slot.pending.lock().unwrap_or_else(PoisonError::into_inner);
                if pending.as_ref().is_none_or(|p| p.version < record.version) {
                    *pending = Some(record);
                }
                Err(e)
            }
        }
    }

    /// Every record in the store; an unreadable one is an error naming it (the coordinator
    /// refuses to start rather than forget a job). Records are read concurrently.
    pub async fn load_all(&self) -> Result<Vec<JobRecord>> {
        let names: Vec<String> = self
            .jobs
            .list_names()
            .await?
            .into_iter()
            .filter(|name| name.ends_with(".json"))
            .collect();
        let mut records: Vec<JobRecord> = futures::stream::iter(names)
            .map(|name| async move {
                let bytes = self.jobs.get(&name).await?;
                serde_json::from_slice::<JobRecord>(&bytes).map_err(|source| Error::Record {
                    path: self.jobs.url_of(&name),
                    source,
                })
            })
            .buffer_unordered(LOAD_CONCURRENCY)
            .try_collect()
            .await?;
        records.sort_by_key(|r| r.seq);
        // What is on disk is written: a flush of that version has nothing to do.
        for record in &records {
            let slot = self.slot(&record.id);
            *slot.io.try_lock().expect("no write runs before the store is loaded") = record.version;
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::core::{Core, Timing};

    fn record(core: &mut Core) -> JobRecord {
        let config =
            gantry_job::JobConfig::from_toml("[data]\nurl = \"memory://d\"\n[output]\nurl = \"memory://o\"\n", "test")
                .unwrap();
        core.submit(config)
    }

    fn core() -> Core {
        let timing = Timing {
            heartbeat_timeout: Duration::from_secs(3),
        };
        Core::recover(timing, Vec::new(), Instant::now())
    }

    #[tokio::test]
    async fn a_later_version_is_never_overwritten_by_an_earlier_one() {
        let store = JobStore::open("memory://store-order/state").unwrap();
        let mut core = core();
        let first = record(&mut core);
        let mut second = first.clone();
        second.version += 1;
        second.reason = "second".into();
        assert_eq!(store.stage(&first), first.version);
        store.stage(&second);
        // The flush of the first version writes the newest staged one, once.
        store.flush(&first.id, first.version).await.unwrap();
        store.flush(&second.id, second.version).await.unwrap();
        assert_eq!(store.records_written(), 1);
        // An older version staged late changes nothing.
        store.stage(&first);
        store.flush(&first.id, first.version).await.unwrap();
        let loaded = JobStore::open("memory://store-order/state")
            .unwrap()
            .load_all()
            .await
            .unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(
            (loaded[0].version, loaded[0].reason.as_str()),
            (second.version, "second")
        );
        // Concurrent flushes of successive versions leave the last one.
        let mut versions = Vec::new();
        for n in 0..20 {
            let mut next = second.clone();
            next.version = second.version + 1 + n;
            next.reason = format!("v{}", next.version);
            store.stage(&next);
            versions.push(next.version);
        }
        let flushes = versions.iter().rev().map(|&v| store.flush(&second.id, v));
        for result in futures::future::join_all(flushes).await {
            result.unwrap();
        }
        let loaded = JobStore::open("memory://store-order/state")
            .unwrap()
            .load_all()
            .await
            .unwrap();
        assert_eq!(loaded[0].version, *versions.last().unwrap());
        assert_eq!(store.records_written(), 2, "the twenty versions shared one write");
    }

    #[tokio::test]
    async fn a_store_without_its_lease_writes_nothing() {
        let fence = Fence::new(3, Instant::now() + Duration::from_secs(60));
        let store = JobStore::open("memory://store-fence/state")
            .unwrap()
            .fenced(fence.clone());
        let mut core = core();
        let job = record(&mut core);
        store.save(&job).await.unwrap();
        fence.lose("coordinator x took the lease (epoch 4)".into());
        let err = store.save(&job).await.unwrap_err();
        assert!(matches!(err, Error::Fenced { epoch: 3, .. }), "{err}");
        assert!(err.to_string().contains("took the lease (epoch 4)"), "{err}");
        // A fence that ran out (no renewal in time) refuses too.
        let stale = Fence::new(5, Instant::now());
        let store = JobStore::open("memory://store-fence/other").unwrap().fenced(stale);
        let err = store.save(&job).await.unwrap_err();
        assert!(err.to_string().contains("renewed too long ago"), "{err}");
        assert!(
            JobStore::open("memory://store-fence/other")
                .unwrap()
                .load_all()
                .await
                .unwrap()
                .is_empty()
        );
    }
}
