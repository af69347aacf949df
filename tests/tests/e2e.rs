//! End-to-end tests: the real release binaries, driven as a user would.

mod util;

mod dataprep_cli;
mod worker_cli;
