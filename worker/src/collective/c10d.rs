//! c10d process groups: the rendezvous through rank 0's `TCPStore`, then Gloo or NCCL.
//!
//! Store layout (every key under `gantry/<job>/`):
//! - `rendezvous`: set by rank 0 when it opens the store: `<attempt> <check>`, where `<check>`
//!   is a digest of (job, attempt, secret). A rank compares both with its own before touching
//!   anything else, so a process of another attempt or without the secret fails at once with
//!   an error saying which.
//! - `<namespace>/...`: the group's keys (Gloo's or NCCL's rendezvous, the barriers), where
//!   `<namespace>` is another digest of (job, attempt, secret): a process without the secret
//!   cannot write where the gang reads.
//!
//! This keeps out left-over ranks and misconfigured processes; it is no defence against an
//! attacker on the network, since c10d's store has no authentication (anyone who reaches it
//! can list its keys).

use std::time::Duration;

use sha2::{Digest, Sha256};
use tch::{Device, Tensor};

use super::error::{Error, Result};
use super::ffi::{self, CppError, Group, Store};
use super::{Collective, GroupSpec, check_tensors, fused, split_address};

/// Rank 0 hosts the store and waits this much longer at a barrier than the others, so that
/// their diagnosis of a timed-out barrier (which ranks are missing) still finds the store.
const HOST_GRACE: Duration = Duration::from_secs(1);

/// Digest of (purpose, job, attempt, secret), hex.
fn digest(purpose: &str, spec: &GroupSpec) -> String {
    let mut hash = Sha256::new();
    for part in [purpose, &spec.job, &spec.attempt.to_string(), &spec.secret] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    hex::encode(hash.finalize())
}

/// The store of a group being formed: open (rank 0) or reached (the others), with the job's
/// attempt and this process's secret checked.
pub struct Rendezvous {
    spec: GroupSpec,
    port: u16,
    /// The group's namespace in the store.
    group_store: Store,
    /// The TCPStore itself (on rank 0, its server), kept for the group's lifetime.
    tcp_store: Store,
}

/// How often a rank that found an earlier attempt's store looks again.
const RETRY_OLDER: Duration = Duration::from_millis(250);

impl Rendezvous {
    /// Opens the store (rank 0) or connects to it (the others, retrying until the spec's
    /// timeout) and checks that it serves this attempt with this secret.
    pub fn new(spec: &GroupSpec) -> Result<Rendezvous> {
        spec.validate()?;
        let (host, port) = split_address(&spec.address)?;
        let store_error = |source: CppError| Error::Store {
            rank: spec.rank,
            address: spec.address.clone(),
            source,
        };
        let check = digest("gantry rendezvous check", spec);
        let deadline = std::time::Instant::now() + spec.timeout;
        let (tcp_store, port, job_store) = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let (tcp_store, port) =
                Store::open(&host, port, spec.rank == 0, left.max(Duration::from_millis(1))).map_err(store_error)?;
            let job_store = tcp_store
                .prefixed(&format!("gantry/{}", spec.job))
                .map_err(store_error)?;
            if spec.rank == 0 {
                job_store
                    .set("rendezvous", format!("{} {check}", spec.attempt).as_bytes())
                    .map_err(store_error)?;
                break (tcp_store, port, job_store);
            }
            let found = job_store.get("rendezvous", left).map_err(store_error)?;
            let found = String::from_utf8_lossy(&found).into_owned();
            let (attempt, their_check) = found.split_once(' ').unwrap_or((&found, ""));
            if attempt != spec.attempt.to_string() {
                // A rank 0 of an earlier attempt still holds the address while its process ends
                // (a restart found the gang's workers draining): wait for this attempt's.
                let older = attempt.parse::<u32>().is_ok_and(|a| a < spec.attempt);
                if older && std::time::Instant::now() + RETRY_OLDER < deadline {
                    drop((job_store, tcp_store));
                    std::thread::sleep(RETRY_OLDER);
                    continue;
                }
                return Err(Error::OtherAttempt {
                    rank: spec.rank,
                    job: spec.job.clone(),
                    attempt: spec.attempt,
                    found: attempt.to_string(),
                    address: spec.address.clone(),
                });
            }
            if their_check != check {
                return Err(Error::WrongSecret {
                    rank: spec.rank,
                    job: spec.job.clone(),
                    attempt: spec.attempt,
                    address: spec.address.clone(),
                });
            }
            break (tcp_store, port, job_store);
        };
        let group_store = job_store
            .prefixed(&digest("gantry group namespace", spec)[..32])
            .map_err(store_error)?;
        Ok(Rendezvous {
            spec: spec.clone(),
            port,
            group_store,
            tcp_store,
        })
    }

    /// The store's port: the one rank 0 bound when the address asked for port 0.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Forms the process group of the spec's device: Gloo on the CPU, NCCL on a CUDA device.
    /// Returns once every rank has joined; fails after the spec's timeout otherwise.
    pub fn into_group(self) -> Result<ProcessGroup> {
        let spec = &self.spec;
        let (backend, group) = match spec.device {
            Device::Cpu => {
                let group = Group::gloo(
                    &self.group_store,
                    spec.rank,
                    spec.world_size,
                    spec.bind_host.as_deref(),
                    spec.timeout,
                );
                (Backend::Gloo, group)
            }
            Device::Cuda(index) => {
                let count = tch::Cuda::device_count();
                if index as i64 >= count {
                    return Err(Error::NoCudaDevice { device: index, count });
                }
                if !ffi::nccl_built() {
                    return Err(Error::NcclNotBuilt {
                        reason: env!("GANTRY_NCCL_STATUS").to_string(),
                    });
                }
                let group = Group::nccl(&self.group_store, spec.rank, spec.world_size, index, spec.timeout);
                (Backend::Nccl, group)
            }
            other => {
                return Err(Error::Invalid {
                    message: format!("no collective backend for device {other:?} (CPU: Gloo, CUDA: NCCL)"),
                });
            }
        };
        let group = group.map_err(|source| Error::Group {
            rank: spec.rank,
            world_size: spec.world_size,
            backend: backend.name(),
            source,
        })?;
        Ok(ProcessGroup {
            group,
            store: self.group_store,
            _tcp_store: self.tcp_store,
            spec: self.spec,
            backend,
            collectives: 0,
            barriers: 0,
            failed: None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Gloo,
    Nccl,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }
}

/// A c10d process group (ProcessGroupGloo or ProcessGroupNCCL) and its store.
///
/// Any failure of an exchange leaves the group unusable: the ranks no longer agree on which
/// collective comes next, so every later call fails with [`Error::Broken`] naming the first
/// failure. On NCCL, a collective returns once it is queued on the device's current stream; a
/// peer that fails mid-way is detected by c10d's watchdog, which ends the process after the
/// timeout (the agent runs each attempt in a child process for this reason).
pub struct ProcessGroup {
    // Field order is drop order: the group before the stores it uses.
    group: Group,
    store: Store,
    _tcp_store: Store,
    spec: GroupSpec,
    backend: Backend,
    collectives: u64,
    barriers: u64,
    failed: Option<String>,
}

impl ProcessGroup {
    /// `gloo` or `nccl`.
    pub fn backend(&self) -> &'static str {
        self.backend.name()
    }

    /// The device whose tensors the group exchanges.
    pub fn device(&self) -> Device {
        self.spec.device
    }

    /// Fails when an earlier failure broke the group.
    fn usable(&self) -> Result<()> {
        match &self.failed {
            Some(first) => Err(Error::Broken {
                rank: self.spec.rank,
                first: first.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Remembers the first failure of an exchange.
    fn note<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result
            && self.failed.is_none()
        {
            self.failed = Some(base::error_chain(e));
        }
        result
    }

    fn collective_error(&self, op: &'static str, seq: u64, source: CppError) -> Error {
        Error::Collective {
            rank: self.spec.rank,
            world_size: self.spec.world_size,
            op,
            seq,
            backend: self.backend.name(),
            source,
        }
    }
}

impl Collective for ProcessGroup {
    fn rank(&self) -> usize {
        self.spec.rank
    }

    fn world_size(&self) -> usize {
        self.spec.world_size
    }

    fn all_reduce_mean(&mut self, tensors: &[&Tensor]) -> Result<()> {
        const OP: &str = "all-reduce";
        self.usable()?;
        check_tensors(OP, tensors, self.spec.device, true)?;
        let world = self.spec.world_size as f64;
        let result = fused(OP, tensors, true, |flat| {
            let seq = self.collectives;
            self.collectives += 1;
            self.group
                .all_reduce_sum(flat)
                .map_err(|source| self.collective_error(OP, seq, source))?;
            let _ = flat
                .f_div_scalar_(world)
                .map_err(|source| Error::Torch { op: OP, source })?;
            Ok(())
        });
        self.note(result)
    }

    fn broadcast(&mut self, tensors: &[&Tensor], root: usize) -> Result<()> {
        const OP: &str = "broadcast";
        self.usable()?;
        if root >= self.spec.world_size {
            return Err(Error::Tensors {
                op: OP,
                message: format!("root {root} is outside a world of {}", self.spec.world_size),
            });
        }
        check_tensors(OP, tensors, self.spec.device, false)?;
        let write_back = self.spec.rank != root;
        let result = fused(OP, tensors, write_back, |flat| {
            let seq = self.collectives;
            self.collectives += 1;
            self.group
                .broadcast(flat, root)
                .map_err(|source| self.collective_error(OP, seq, source))
        });
        self.note(result)
    }

    fn barrier(&mut self, timeout: Duration) -> Result<()> {
        self.usable()?;
        let (rank, world) = (self.spec.rank, self.spec.world_size);
        let barrier = self.barriers;
        self.barriers += 1;
        let key = |r: usize| format!("barrier/{barrier}/{r}");
        let store_error = |source: CppError| Error::Barrier {
            rank,
            barrier,
            address: self.spec.address.clone(),
            source,
        };
        let result = (|| {
            self.store.set(&key(rank), b"1").map_err(store_error)?;
            let keys: Vec<String> = (0..world).map(key).collect();
            let waited = if rank == 0 { timeout + HOST_GRACE } else { timeout };
            let Err(wait_error) = self.store.wait(&keys, waited) else {
                return Ok(());
            };
            // Timed out, or the store is gone: which ranks are missing tells the two apart.
            let mut missing = Vec::new();
            for r in 0..world {
                match self.store.has(&key(r)) {
                    Ok(true) => {}
                    Ok(false) => missing.push(r),
                    Err(_) => return Err(store_error(wait_error)),
                }
            }
            if missing.is_empty() {
                // The last rank arrived between the timeout and the check.
                return Ok(());
            }
            Err(Error::BarrierTimeout {
                rank,
                barrier,
                missing,
                timeout: waited,
            })
        })();
        self.note(result)
    }
}
