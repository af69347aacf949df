//! `worker serve`: the agent that joins a coordinator's pool. It registers (device, address),
//! heartbeats, runs each assignment's attempt in a child process of its own, streams the run's
//! start, metrics, checkpoints and end back, and stops a run within one step when told to. When
//! the coordinator restarts, the agent registers again under the same id and says what it is
//! running, so the job carries on.
//!
//! The child is the worker binary itself (`worker attempt`, hidden), as torchrun's agent runs
//! its ranks: a stop order, a peer lost mid-collective, an abort inside libtorch or an
//! out-of-memory kill ends the child, never the agent, which reports how the child ended (its
//! exit status or signal and its last error). The pipes between them:
//! - agent -> child stdin: the [`pb::Assignment`](gantry_proto::pb::Assignment),
//!   length-delimited; then one byte per order: `s` stops the run at once, `p` (the agent is
//!   shutting down) stops it at the next step boundary after a checkpoint. The child stops when
//!   stdin closes too, and the kernel kills it when the agent dies, `kill -9` included
//!   (`PR_SET_PDEATHSIG`), so no orphan keeps a GPU or a collective port;
//! - child stdout -> agent: [`pb::WorkerEvent`](gantry_proto::pb::WorkerEvent)s,
//!   length-delimited;
//! - child stderr -> agent: the child's log lines (JSON), logged again by the agent with the
//!   job, attempt and rank.
//!
//! Stopping is saving: SIGTERM to the agent (a Kubernetes eviction, the end of a Slurm
//! allocation, a spot preemption) or to its child makes the gang agree on a step, rank 0 saves a
//! checkpoint there, every rank reports the run preempted, and the agent leaves the pool; the
//! coordinator queues the job again without counting a restart, and the next gang resumes from
//! that checkpoint.
//!
//! The package, by concern:
//! - `control`: [`serve`], the loop that talks to the coordinator, with [`AgentOptions`] and
//!   [`AgentError`];
//! - `supervisor`: the parent side of a run: starts the child, passes orders on, forwards
//!   events and log lines, kills a child that does not stop in time, reports how it died;
//! - `attempt`: the child side, [`run_attempt`]: reads the assignment, trains, writes events,
//!   obeys orders;
//! - `pipe`: the protocol between the two: the order bytes and the framing of messages, with a
//!   limit on a frame's size.

mod attempt;
mod control;
mod pipe;
mod supervisor;
#[cfg(test)]
mod tests;

pub use attempt::run_attempt;
pub use control::{AgentError, AgentOptions, SHUTDOWN_GRACE, serve};
