//! gantry's trainer: the conditional WGAN-GP of the seed on libtorch.
//!
//! - [`config`]: the job file; [`model`]: generator and critic; [`adam`]: the optimiser with
//!   its state exposed; [`gan`]: both networks and the training step.
//! - [`train`]: a job in one process (data from [`dataprep`], exact resume from
//!   [`checkpoint`]s, sample grids and metrics); [`samples`]: grids and `worker generate`.
//! - [`bench`]: step throughput; [`device`]: device parsing and the node check.

pub mod adam;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod device;
mod error;
pub mod gan;
pub mod model;
pub mod samples;
pub mod train;

pub use error::{Error, Result};
