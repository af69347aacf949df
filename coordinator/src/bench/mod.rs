//! `coordinator bench`: a load generator for the control plane. It starts a real coordinator
//! (this binary's `serve`) on a fresh local state folder, then drives it over gRPC as a cluster
//! would:
//!
//! 1. `workers` simulated agents register, each on its own connection, and heartbeat at the
//!    interval the coordinator gives them; an agent given an assignment reports its start, a
//!    step (rank 0) at each heartbeat, a checkpoint every few steps, and its end after
//!    `run_seconds`, then takes the next job;
//! 2. `jobs` jobs are submitted as fast as `submitters` concurrent clients go (the submit rate);
//! 3. for `seconds`, every job that ends is replaced by a new one, so the queue stays full;
//! 4. the coordinator is killed (`SIGKILL`) under that load, started again on the same state, and
//!    timed until it answers; every job whose submission was acknowledged must be there, and
//!    every job whose every rank's end was acknowledged must be SUCCEEDED.
//!
//! It prints the submit rate, heartbeat and report latency percentiles, heartbeat errors, false
//! losses (workers the coordinator counted lost, read from its `/metrics`, and "register again"
//! answers: every simulated agent is alive throughout), job-record writes per second (from its
//! `/metrics` too), the coordinator's memory and the restart time. It measures;
//! `BenchReport::problems` lists what must never happen at any speed (lost workers, failed
//! calls, missing records).
//!
//! It is the binary's own module, not part of the server library: it knows the coordinator
//! only from outside (its command line, gRPC and `/metrics`).
//!
//! - `run`: the options, the coordinator child and the phases of a run.
//! - `simulate`: the simulated worker agents and submitters.
//! - `report`: latencies and the figures printed at the end.
//! - `scrape`: reading the coordinator's `/metrics` (the Prometheus text format).

mod report;
mod run;
mod scrape;
mod simulate;

pub(crate) use run::{BenchOptions, run};
