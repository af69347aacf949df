//! gantry's control plane.
//!
//! - [`core`]: the state machine: job records and their lifecycle, the worker pool, gang
//!   scheduling (priority, then FIFO; a pure planner whose actions the core applies), heartbeat
//!   deadlines and restarts from checkpoints.
//! - [`telemetry`]: typed events that log and count in one call.
//! - [`store`]: job records in object storage under `--state`, so a restarted coordinator
//!   recovers its queue and reconciles its running jobs with the workers that re-register;
//!   written outside the core's lock, in version order. [`lease`]: one writer per state prefix.
//! - [`service`]: the gRPC job and worker services over the core; [`server`]: `serve`, with
//!   bearer tokens, health, reflection and TLS.
//! - [`metrics`]: Prometheus metrics (read from the core at scrape time, the telemetry's
//!   counters, and a layer counting gRPC calls); [`web`]: the HTTP listener for `/metrics` and
//!   the live dashboard.
//! - [`cli`]: the client commands (`submit`, `status`, `list`, `cancel`, `watch`).
//!
//! The load generator of `coordinator bench` is not part of the library: it lives with the
//! binary (`src/bench/`), and drives a coordinator from outside, over gRPC and `/metrics`.

pub mod cli;
pub mod core;
mod error;
pub mod lease;
pub mod metrics;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod web;

pub use error::{Error, Result};
