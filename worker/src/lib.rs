//! gantry's trainer: the conditional WGAN-GP of the seed on libtorch.
//!
//! - [`config`]: the job file; [`model`]: generator and critic; [`adam`]: the optimiser with
//!   its state exposed; [`gan`]: both networks and the training step.
//! - [`train`]: a job in one process (data from [`dataprep`], exact resume from
//!   [`checkpoint`]s, sample grids and metrics), with [`cadence`] deciding when it samples,
//!   checkpoints and evaluates; [`samples`]: grids and `worker generate`.
//! - [`eval`]: the generator's conditional control measured by a classifier trained on the
//!   real data (`worker eval`, and every `train.eval_every` steps of a run).
//! - Shared leaves: [`pixels`] (images as bytes and as tensors), [`torch_guard`] (libtorch's
//!   panics as errors), [`tensorboard`] (a run's event files). [`eval`] and [`samples`] import
//!   nothing from [`train`]: the trainer calls them.
//! - [`agent`]: `worker serve`, which runs a coordinator's assignments with [`train`], each in a
//!   child process; [`telemetry`]: its metrics and events; [`address`]: the address it advertises.
//! - [`bench`]: step throughput; [`device`]: the worker's device rules (parsing, `auto`, the node
//!   check, memory probing).
//! - [`collective`]: the gradient exchange between data-parallel ranks (c10d's Gloo and NCCL
//!   through a C++ shim), its rendezvous, `worker collective-check` and `worker bench-allreduce`;
//!   [`parallel_check`]: its guarantees, computed by real processes for the tests.

pub mod adam;
pub mod address;
pub mod agent;
pub mod bench;
pub mod cadence;
pub mod checkpoint;
pub mod collective;
pub mod config;
pub mod device;
mod error;
pub mod eval;
pub mod gan;
pub mod model;
pub mod parallel_check;
pub mod pixels;
pub mod samples;
pub mod telemetry;
pub mod tensorboard;
pub mod torch_guard;
pub mod train;

pub use error::{Error, Result};

/// Makes glibc's malloc keep freed memory for reuse: no `mmap` for large blocks and no trimming of
/// the heap. A training step allocates and frees the same large activations every time; by
/// default each is `mmap`ed, faulted in page by page and unmapped again, which costs about a
/// third of a CPU step (measured: 9.5 -> 12.5 images/s at the book's settings on 2 cores). The
/// process keeps its peak memory instead. Process-wide: called by the `worker` binary at start.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Serialises the unit tests that seed libtorch's global generator and then draw from it (tests
/// run on parallel threads, and the generator is process-wide).
#[cfg(test)]
pub(crate) fn global_generator_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
