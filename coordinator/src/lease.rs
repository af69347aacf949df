//! One writer per state prefix: the lease a coordinator holds on its `--state` while it serves.
//!
//! Two coordinators started on one state prefix (a rolling update does exactly this) must not
//! both write job records. The lease lives beside the records, as one object per epoch:
//! `<state>/lease/epoch-0000000007.json`, created only if absent (a conditional put, atomic on
//! every backend), so exactly one coordinator wins each epoch. The holder rewrites its epoch's
//! object every quarter of the time to live; the newest epoch is the lease.
//!
//! A coordinator takes the next epoch when the newest holder released it (a clean shutdown),
//! is a process of this machine that no longer exists (a crash or `kill -9` here), or has not
//! renewed it for a time to live as measured on the taker's own clock (or, by the wall clock,
//! for twice that). Otherwise it waits, saying who holds the lease, up to `--lease-wait`.
//!
//! Fencing: the job store writes only while its [`Fence`] holds: the holder's last renewal
//! began less than three quarters of a time to live ago (a taker waits a whole one), and no later
//! epoch has been seen. A holder that finds a later epoch stops serving with a clear error; a
//! holder paused past its lease (a stopped process, a long pause) refuses its late writes.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base::Location;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Who holds a lease: enough to tell whether that process still runs on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Random, per process.
    pub id: String,
    /// Host name.
    pub hostname: String,
    /// Process id.
    pub pid: u32,
    /// The process's start time (clock ticks since boot, `/proc/<pid>/stat`), against reused pids.
    pub started: u64,
    /// The kernel's boot id: the same machine, the same boot.
    pub boot_id: String,
    /// The address it serves on.
    pub address: String,
}

/// One epoch's object.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EpochRecord {
    epoch: u64,
    holder: Holder,
    /// Wall clock of the last renewal, Unix ms.
    renewed_ms: i64,
    /// Time to live, ms.
    ttl_ms: u64,
    /// Released by a clean shutdown.
    released: bool,
}

/// How a coordinator takes the lease.
#[derive(Debug, Clone, Copy)]
pub struct LeaseOptions {
    /// Time to live: a holder that stops renewing loses the lease after this long.
    pub ttl: Duration,
    /// How long to wait for a lease another coordinator holds; `None`: as long as it takes.
    pub wait: Option<Duration>,
}

/// The lease this coordinator holds on a state prefix.
#[derive(Debug, Clone)]
pub struct Lease {
    location: Location,
    record: Arc<Mutex<EpochRecord>>,
    fence: Fence,
    ttl: Duration,
}

fn epoch_name(epoch: u64) -> String {
    format!("epoch-{epoch:010}.json")
}

fn read_first_line(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Field 22 of `/proc/<pid>/stat`: the start time, in clock ticks after boot.
fn process_started(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // After the command: state is field 3, start time field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Holder {
    /// This process.
    pub fn this_process(address: &str) -> Self {
        let mut id = [0u8; 8];
        rand::fill(&mut id);
        let pid = std::process::id();
        Self {
            id: hex::encode(id),
            hostname: read_first_line("/proc/sys/kernel/hostname"),
            pid,
            started: process_started(pid).unwrap_or(0),
            boot_id: read_first_line("/proc/sys/kernel/random/boot_id"),
            address: address.to_string(),
        }
    }

    /// Whether this holder is known to be gone: a process of this machine and boot that no
    /// longer runs (or whose pid another process now has). A holder elsewhere is never known
    /// to be gone: only its silence tells.
    fn is_gone(&self, me: &Holder) -> bool {
        if self.boot_id.is_empty() || self.boot_id != me.boot_id || self.hostname != me.hostname {
            return false;
        }
        self.id != me.id && process_started(self.pid) != Some(self.started)
    }

    fn describe(&self) -> String {
        format!(
            "coordinator {} (pid {} on {}, serving {})",
            self.id, self.pid, self.hostname, self.address
        )
    }
}

impl Lease {
    /// Takes the lease on the state at `state`, waiting while another coordinator holds it
    /// (up to `options.wait`). `address` is where this coordinator serves, for the other's
    /// messages.
    pub async fn acquire(state: &str, address: &str, options: LeaseOptions) -> Result<Self> {
        let location = Location::parse(state)?.join("lease");
        let me = Holder::this_process(address);
        let ttl = options.ttl;
        let began = Instant::now();
        // The newest epoch's object as first seen, and when: unchanged for a time to live, it
        // is abandoned.
        let mut seen: Option<(Vec<u8>, Instant)> = None;
        let mut told = None::<Instant>;
        loop {
            let newest = newest_epoch(&location).await?;
            let (epoch, free, current) = match newest {
                None => (0, Some("no coordinator held it before".to_string()), None),
                Some(epoch) => {
                    let bytes = location.get_opt(&epoch_name(epoch)).await?;
                    match bytes {
                        // Created and not yet written (or removed by hand): take the next.
                        None => (epoch, Some(format!("epoch {epoch} has no holder")), None),
                        Some(bytes) => {
                            let record: EpochRecord =
                                serde_json::from_slice(&bytes).map_err(|source| Error::Record {
                                    path: location.url_of(&epoch_name(epoch)),
                                    source,
                                })?;
                            let now = Instant::now();
                            let unchanged_for = match &seen {
                                Some((known, since)) if known.as_slice() == bytes.as_ref() => now - *since,
                                _ => {
                                    seen = Some((bytes.to_vec(), now));
                                    Duration::ZERO
                                }
                            };
                            let holder_ttl = Duration::from_millis(record.ttl_ms);
                            let age_ms = crate::core::now_ms() - record.renewed_ms;
                            let free = if record.released {
                                Some(format!("{} released it", record.holder.describe()))
                            } else if record.holder.is_gone(&me) {
                                Some(format!("{} no longer runs", record.holder.describe()))
                            } else if unchanged_for >= holder_ttl {
                                Some(format!(
                                    "{} did not renew it for {:.1} s",
                                    record.holder.describe(),
                                    unchanged_for.as_secs_f64()
                                ))
                            } else if age_ms > 2 * record.ttl_ms as i64 {
                                Some(format!(
                                    "{} last renewed it {:.1} s ago",
                                    record.holder.describe(),
                                    age_ms as f64 / 1000.0
                                ))
                            } else {
                                None
                            };
                            (epoch, free, Some(record))
                        }
                    }
                }
            };
            if let Some(why) = free {
                let next = epoch + 1;
                let record = EpochRecord {
                    epoch: next,
                    holder: me.clone(),
                    renewed_ms: crate::core::now_ms(),
                    ttl_ms: ttl.as_millis() as u64,
                    released: false,
                };
                let renewing = Instant::now();
                let json = serde_json::to_vec_pretty(&record).expect("lease records serialise");
                // Another coordinator may take this epoch first: then look again.
                if !location.create(&epoch_name(next), json).await? {
                    seen = None;
                    continue;
                }
                tracing::info!(epoch = next, state = %state, %why, "lease taken: this coordinator writes the job store");
                return Ok(Self {
                    location,
                    record: Arc::new(Mutex::new(record)),
                    fence: Fence::new(next, renewing + ttl * 3 / 4),
                    ttl,
                });
            }
            let record = current.expect("a held lease has a record");
            let waited = began.elapsed();
            if options.wait.is_some_and(|limit| waited >= limit) {
                return Err(Error::LeaseHeld {
                    state: state.to_string(),
                    holder: record.holder.describe(),
                    epoch: record.epoch,
                    waited_s: waited.as_secs_f64(),
                });
            }
            if told.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                told = Some(Instant::now());
                tracing::warn!(
                    state = %state,
                    epoch = record.epoch,
                    holder = %record.holder.describe(),
                    renewed_s_ago = (crate::core::now_ms() - record.renewed_ms) as f64 / 1000.0,
                    "another coordinator holds this state's lease: waiting until it stops or releases it"
                );
            }
            let pause =
                (Duration::from_millis(record.ttl_ms) / 8).clamp(Duration::from_millis(50), Duration::from_secs(1));
            let pause = match options.wait {
                Some(limit) => pause.min(limit.saturating_sub(waited)).max(Duration::from_millis(1)),
                None => pause,
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// What the job store checks before each write.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// The epoch held.
    pub fn epoch(&self) -> u64 {
        self.fence.epoch()
    }

    /// Whether a later epoch exists: another coordinator took the lease.
    async fn taken_over(&self) -> Result<Option<Holder>> {
        let next = epoch_name(self.epoch() + 1);
        Ok(match self.location.get_opt(&next).await? {
            None => None,
            Some(bytes) => Some(
                serde_json::from_slice::<EpochRecord>(&bytes)
                    .map(|r| r.holder)
                    .map_err(|source| Error::Record {
                        path: self.location.url_of(&next),
                        source,
                    })?,
            ),
        })
    }

    /// Renews the lease every quarter of its time to live until it is lost; returns why it was.
    /// A renewal that fails is tried again; the fence runs out meanwhile.
    pub async fn keep(&self) -> Error {
        let period = self.ttl / 4;
        loop {
            tokio::time::sleep(period).await;
            let renewing = Instant::now();
            match self.renew().await {
                Ok(()) => self.fence.renewed(renewing + self.ttl * 3 / 4),
                Err(e @ Error::LeaseLost { .. }) => {
                    self.fence.lose(e.to_string());
                    return e;
                }
                Err(e) => tracing::error!(error = %base::error_chain(&e), "lease not renewed"),
            }
        }
    }

    async fn renew(&self) -> Result<()> {
        if let Some(holder) = self.taken_over().await? {
            return Err(Error::LeaseLost {
                epoch: self.epoch(),
                by: holder.describe(),
            });
        }
        let json = {
            let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
            record.renewed_ms = crate::core::now_ms();
            serde_json::to_vec_pretty(&*record).expect("lease records serialise")
        };
        self.location.put(&epoch_name(self.epoch()), json).await?;
        Ok(())
    }

    /// Gives the lease up (a clean shutdown): the next coordinator takes it at once. Nothing is
    /// written once the fence is closed.
    pub async fn release(&self) -> Result<()> {
        self.fence.lose("it released its lease".to_string());
        if self.taken_over().await?.is_some() {
            return Ok(());
        }
        let json = {
            let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
            record.released = true;
            serde_json::to_vec_pretty(&*record).expect("lease records serialise")
        };
        self.location.put(&epoch_name(self.epoch()), json).await?;
        tracing::info!(epoch = self.epoch(), "lease released");
        Ok(())
    }
}

/// The highest epoch under `location`, if any.
async fn newest_epoch(location: &Location) -> Result<Option<u64>> {
    Ok(location
        .list_names()
        .await?
        .iter()
        .filter_map(|n| n.strip_prefix("epoch-")?.strip_suffix(".json")?.parse::<u64>().ok())
        .max())
}

/// Whether this coordinator may write the state: it holds the lease until `valid_until` (its
/// last renewal plus a safety margin inside the lease's time to live), unless it learnt that
/// another coordinator took the lease.
#[derive(Debug, Clone)]
pub struct Fence {
    inner: Arc<Mutex<FenceState>>,
}

#[derive(Debug)]
struct FenceState {
    epoch: u64,
    valid_until: Instant,
    lost: Option<String>,
}

impl Fence {
    /// A fence for lease `epoch`, held until `valid_until`.
    pub fn new(epoch: u64, valid_until: Instant) -> Self {
        Self {
            inner: Arc::new(Mutex::new(FenceState {
                epoch,
                valid_until,
                lost: None,
            })),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FenceState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lease's epoch.
    pub fn epoch(&self) -> u64 {
        self.state().epoch
    }

    /// The lease was renewed: held until `valid_until`.
    pub fn renewed(&self, valid_until: Instant) {
        let mut state = self.state();
        state.valid_until = state.valid_until.max(valid_until);
    }

    /// The lease is gone for good (another coordinator holds a later epoch).
    pub fn lose(&self, why: String) {
        self.state().lost.get_or_insert(why);
    }

    /// Ok while the lease is held; else why this coordinator may not write.
    pub fn check(&self) -> Result<()> {
        let state = self.state();
        if let Some(why) = &state.lost {
            return Err(Error::Fenced {
                epoch: state.epoch,
                why: why.clone(),
            });
        }
        let now = Instant::now();
        if now > state.valid_until {
            return Err(Error::Fenced {
                epoch: state.epoch,
                why: format!(
                    "its lease was last renewed too long ago (expired {:.1} s ago)",
                    (now - state.valid_until).as_secs_f64()
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(wait: Option<Duration>) -> LeaseOptions {
        LeaseOptions {
            ttl: Duration::from_secs(30),
            wait,
        }
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_the_next_after_a_release() {
        let state = "memory://lease-test/state";
        let first = Lease::acquire(state, "a:1", options(None)).await.unwrap();
        assert_eq!(first.epoch(), 1);
        first.fence().check().unwrap();
        // A second coordinator of this (live) process does not get it.
        let err = Lease::acquire(state, "b:2", options(Some(Duration::ZERO)))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::LeaseHeld { epoch: 1, .. }), "{err}");
        assert!(err.to_string().contains("serving a:1"), "{err}");
        first.renew().await.unwrap();
        // Released: the next one takes the next epoch at once, and the first may not write.
        first.release().await.unwrap();
        assert!(first.fence().check().is_err());
        let second = Lease::acquire(state, "b:2", options(Some(Duration::ZERO)))
            .await
            .unwrap();
        assert_eq!(second.epoch(), 2);
        // A holder that finds a later epoch has lost the lease for good.
        let err = first.renew().await.unwrap_err();
        assert!(matches!(err, Error::LeaseLost { epoch: 1, .. }), "{err}");
        assert!(err.to_string().contains("serving b:2"), "{err}");
    }

    #[tokio::test]
    async fn a_lease_not_renewed_for_its_time_to_live_is_taken() {
        let state = "memory://lease-test/silent";
        let short = LeaseOptions {
            ttl: Duration::from_millis(300),
            wait: None,
        };
        let first = Lease::acquire(state, "a:1", short).await.unwrap();
        // The first never renews: the second takes over once the record sat still for a ttl.
        let began = Instant::now();
        let second = Lease::acquire(state, "b:2", short).await.unwrap();
        assert!(began.elapsed() >= Duration::from_millis(300));
        assert_eq!(second.epoch(), 2);
        // The first's fence ran out before the second could take over.
        assert!(first.fence().check().is_err());
    }

    #[test]
    fn a_holder_is_gone_only_when_its_process_is_known_to_have_ended() {
        let me = Holder::this_process("a:1");
        let mut other = me.clone();
        other.id = "other".into();
        // This very process, under another id: alive.
        assert!(!other.is_gone(&me));
        other.started += 1;
        assert!(other.is_gone(&me), "a reused pid is another process");
        other.hostname = "elsewhere".into();
        assert!(
            !other.is_gone(&me),
            "another machine's process is judged by its silence"
        );
    }
}
