//! gantry's control plane.
//!
//! - [`core`]: the state machine: job records and their lifecycle, the worker pool, gang
//!   scheduling (priority, then FIFO), heartbeat deadlines and restarts from checkpoints.
//! - [`store`]: job records in object storage under `--state`, so a restarted coordinator
//!   recovers its queue and reconciles its running jobs with the workers that re-register;
//!   written outside the core's lock, in version order. [`lease`]: one writer per state prefix.
//! - [`service`]: the gRPC job and worker services over the core; [`server`]: `serve`, with
//!   bearer tokens, health, reflection and TLS.
//! - [`metrics`]: Prometheus metrics (read from the core at scrape time, and a layer counting
//!   gRPC calls); [`web`]: the HTTP listener for `/metrics` and the live dashboard.
//! - [`cli`]: the client commands (`submit`, `status`, `list`, `cancel`, `watch`).
//! - [`bench`]: `coordinator bench`, a load generator: simulated workers and jobs over gRPC
//!   against a real coordinator, with latencies, false losses, writes and restart time.

pub mod bench;
pub mod cli;
pub mod core;
mod error;
pub mod lease;
pub mod metrics;
pub mod server;
pub mod service;
pub mod store;
pub mod web;

pub use error::{Error, Result};
