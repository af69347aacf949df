//! gantry's control plane.
//!
//! - [`core`]: the state machine: job records and their lifecycle, the worker pool, gang
//!   scheduling (priority, then FIFO), heartbeat deadlines and restarts from checkpoints.
//! - [`store`]: job records in object storage under `--state`, so a restarted coordinator
//!   recovers its queue and reconciles its running jobs with the workers that re-register.
//! - [`service`]: the gRPC job and worker services over the core; [`server`]: `serve`, with
//!   bearer tokens, health, reflection and TLS.
//! - [`cli`]: the client commands (`submit`, `status`, `list`, `cancel`, `watch`).

pub mod cli;
pub mod core;
mod error;
pub mod server;
pub mod service;
pub mod store;

pub use error::{Error, Result};
