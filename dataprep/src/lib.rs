//! gantry's data format.
//!
//! - [`celeba`], [`fashion_mnist`], [`folder`]: scanners that turn an input folder into a
//!   [`source::Source`] (samples with labels); `synth` (feature `synth`, on by default) writes a
//!   synthetic CelebA folder.
//! - [`imaging`]: decode, crop, resize, pad; [`pack`] runs them on all cores and writes Parquet
//!   shards ([`schema`]) and the [`manifest`] to a [`storage::Location`].
//! - [`reader`]: streams batches back with deterministic shuffling, rank partitioning and exact
//!   resume; [`condition`] turns label or attribute columns into classes; [`seed`] derives the
//!   seed of every random stream.
//! - [`inspect`] and [`grid`]: summaries and labelled preview grids; `bench` (feature `synth`):
//!   throughput figures.

pub mod access;
#[cfg(feature = "synth")]
pub mod bench;
pub mod celeba;
pub mod condition;
mod error;
pub mod fashion_mnist;
pub mod folder;
pub mod grid;
pub mod imaging;
pub mod inspect;
pub mod logging;
pub mod manifest;
pub mod pack;
pub mod reader;
pub mod schema;
pub mod seed;
pub mod source;
pub mod storage;
#[cfg(feature = "synth")]
pub mod synth;

pub use condition::{Classes, Condition};
pub use error::{Error, Result, error_chain};
pub use manifest::{Manifest, Split};
pub use reader::{Batch, BatchStream, Dataset, Loader, LoaderOptions, Position};
pub use storage::Location;
