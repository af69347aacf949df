//! gantry's foundation: the contracts every other crate of the workspace shares, each written
//! once.
//!
//! - [`storage`]: a [`Location`] is a prefix in an object store named by one URL (local paths,
//!   `file://`, `memory://`, `s3://`, `gs://`, `az://`); [`access`] decides which locations a job
//!   may read and write, and whether a prefix may be written into at all.
//! - [`layout`]: where a run puts its outputs (config, metrics, samples, checkpoints, evaluations,
//!   TensorBoard events), for the worker that writes them and the dashboard that reads them.
//! - [`Error`] and [`error_chain`]: storage errors kept as sources, printed once for people;
//!   [`panic`]: a panic's payload turned into a message.
//! - [`logging`]: the `tracing` set-up of every binary; [`exposition`]: Prometheus metrics in the
//!   text format or OpenMetrics, as the scraper asks.
//! - [`seed`]: how every random stream is seeded, with one named tag per stream;
//!   [`address`]: `HOST:PORT` as peers and agents advertise it.
//!
//! This crate knows no other crate of the workspace, and no libtorch: the coordinator, the data
//! tools, the job file and the trainer all build on it.

pub mod access;
pub mod address;
mod error;
pub mod exposition;
pub mod layout;
pub mod logging;
pub mod panic;
pub mod seed;
pub mod storage;

pub use error::{Error, Result, error_chain};
pub use storage::{Location, ObjectVersion};
