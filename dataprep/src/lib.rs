//! gantry's data format.
//!
//! - [`celeba`], [`fashion_mnist`], [`folder`]: scanners that turn an input folder into a
//!   [`source::Source`] (samples with labels); `synth` (feature `synth`, on by default) writes a
//!   synthetic CelebA folder.
//! - [`imaging`]: decode, crop, resize, pad; [`pack`] runs them on all cores and writes Parquet
//!   shards ([`schema`]) and the [`manifest`] to a [`base::Location`].
//! - [`reader`]: streams batches back with deterministic shuffling, rank partitioning and exact
//!   resume (its random streams seeded through [`base::seed`]); [`condition`] turns label or
//!   attribute columns into classes.
//! - [`inspect`] and [`grid`]: summaries and labelled preview grids; `bench` (feature `synth`):
//!   throughput figures.

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
pub mod manifest;
pub mod pack;
pub mod reader;
pub mod schema;
pub mod source;
#[cfg(feature = "synth")]
pub mod synth;

pub use condition::{Classes, Condition};
pub use error::{Error, Result};
pub use manifest::{Manifest, Split};
pub use reader::{Batch, BatchStream, Dataset, Loader, LoaderOptions, Position};
