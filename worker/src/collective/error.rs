//! What can go wrong in a collective group. As everywhere in gantry, an error's text says what
//! failed in our words and c10d's own message is its `source()`.

use std::time::Duration;

use super::ffi::CppError;

/// A failure of the gradient exchange or its rendezvous.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The group's settings are unusable.
    #[error("collective group settings: {message}")]
    Invalid {
        /// What is wrong.
        message: String,
    },
    /// Rank 0 could not host the rendezvous store, or another rank could not reach it in time.
    #[error("rank {rank}: {} the rendezvous store at {address} failed", if *.rank == 0 { "hosting" } else { "reaching" })]
    Store {
        /// This process's rank.
        rank: usize,
        /// The store's address (rank 0's).
        address: String,
        /// c10d's message.
        source: CppError,
    },
    /// The store at the address serves another attempt of the job: this process is left over
    /// from an earlier attempt (or started for a later one).
    #[error(
        "rank {rank} of attempt {attempt} of job {job:?}: the rendezvous store at {address} serves attempt {found}"
    )]
    OtherAttempt {
        /// This process's rank.
        rank: usize,
        /// The job.
        job: String,
        /// This process's attempt.
        attempt: u32,
        /// The attempt the store serves.
        found: String,
        /// The store's address.
        address: String,
    },
    /// The store serves this attempt of the job, but this process's secret is not the gang's.
    #[error("rank {rank} of attempt {attempt} of job {job:?}: its secret does not match the gang's at {address}")]
    WrongSecret {
        /// This process's rank.
        rank: usize,
        /// The job.
        job: String,
        /// The attempt.
        attempt: u32,
        /// The store's address.
        address: String,
    },
    /// An NCCL group was asked for a CUDA device this process does not have.
    #[error("no CUDA device cuda:{device} for an NCCL group: libtorch sees {count} CUDA device(s)")]
    NoCudaDevice {
        /// The device index asked for.
        device: usize,
        /// CUDA devices libtorch sees.
        count: i64,
    },
    /// This build of the worker has no NCCL backend.
    #[error("this worker was built without NCCL ({reason})")]
    NcclNotBuilt {
        /// Why the build left it out.
        reason: String,
    },
    /// The process group could not be formed (a rank did not arrive in time, a peer could not
    /// be reached, NCCL failed to initialise).
    #[error("rank {rank} of {world_size}: forming the {backend} process group failed")]
    Group {
        /// This process's rank.
        rank: usize,
        /// The group's size.
        world_size: usize,
        /// `gloo` or `nccl`.
        backend: &'static str,
        /// c10d's message.
        source: CppError,
    },
    /// A collective failed: a peer closed its connection (c10d names its address), did not take
    /// part within the timeout, or the backend failed.
    #[error("rank {rank} of {world_size}: {op} #{seq} over {backend} failed")]
    Collective {
        /// This process's rank.
        rank: usize,
        /// The group's size.
        world_size: usize,
        /// `all-reduce` or `broadcast`.
        op: &'static str,
        /// The collective's number in this group, from 0.
        seq: u64,
        /// `gloo` or `nccl`.
        backend: &'static str,
        /// c10d's message.
        source: CppError,
    },
    /// Tensors given to a collective are unusable; nothing was exchanged.
    #[error("{op}: {message}")]
    Tensors {
        /// The collective.
        op: &'static str,
        /// What is wrong.
        message: String,
    },
    /// libtorch failed on this rank's tensors (fusing them or copying the result back).
    #[error("{op}: libtorch failed on this rank's tensors")]
    Torch {
        /// The collective.
        op: &'static str,
        /// libtorch's error.
        source: tch::TchError,
    },
    /// Some ranks did not reach a store barrier in time.
    #[error(
        "rank {rank}: rank(s) {} did not reach barrier #{barrier} within {timeout:?}",
        join(missing)
    )]
    BarrierTimeout {
        /// This process's rank.
        rank: usize,
        /// The barrier's number in this group, from 0.
        barrier: u64,
        /// The ranks that had not arrived.
        missing: Vec<usize>,
        /// How long this rank waited.
        timeout: Duration,
    },
    /// A barrier's requests to the store failed (the store's host, rank 0, is gone).
    #[error("rank {rank}: barrier #{barrier} could not use the rendezvous store at {address}")]
    Barrier {
        /// This process's rank.
        rank: usize,
        /// The barrier's number.
        barrier: u64,
        /// The store's address.
        address: String,
        /// c10d's message.
        source: CppError,
    },
    /// An earlier failure left the group unusable (ranks no longer agree on what comes next).
    #[error("rank {rank}: the process group failed earlier and cannot be used again (first failure: {first})")]
    Broken {
        /// This process's rank.
        rank: usize,
        /// The first failure, with its causes.
        first: String,
    },
}

/// Result with the collectives' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn join(ranks: &[usize]) -> String {
    ranks.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
}
