//! End-to-end tests: the real release binaries, driven as a user would.

mod util;

mod cluster;
mod dataprep_cli;
mod jobs;
mod linkage;
mod worker_cli;
