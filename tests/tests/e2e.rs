//! End-to-end tests: the real release binaries, driven as a user would.

mod util;

mod cluster;
mod control_plane;
mod dataprep_cli;
mod demo;
mod jobs;
mod layout;
mod linkage;
mod observability;
mod python_client;
mod storage;
mod tensorboard;
mod worker_cli;
