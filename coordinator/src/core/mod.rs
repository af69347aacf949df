//! The coordinator's state machine, without I/O: jobs and their records, the worker pool, gang
//! scheduling, heartbeat deadlines and the job lifecycle.
//!
//! - [`record`]: the persisted schema ([`JobRecord`], [`AttemptRecord`], [`State`]), with its
//!   format version.
//! - [`plan`](mod@plan): the scheduler as a pure function, [`plan(pool, queue, now, previous)`](fn@plan)
//!   `-> actions`.
//! - [`Core`] (`machine`): the state machine that applies plans and the workers' news, and leaves
//!   what to persist and broadcast in an outbox ([`Event`]) for the service to drain.
//! - `view`: jobs as clients read them (what a queued job waits for, derived when read), the
//!   census for `/metrics` and the pool for the dashboard.
//! - [`clock`]: the wall clock and the source of ids and secrets the core is given, so that
//!   tests run it on a clock they move and a seeded source.

pub mod clock;
mod machine;
pub mod plan;
pub mod record;
mod view;

pub use clock::{Clock, Ids, ManualClock, OsIds, SeededIds, SystemClock, now_ms};
pub use machine::{Core, Environment, Event, Timing};
pub use plan::{Action, PoolWorker, QueuedJob, WaitCause, plan};
pub use record::{AttemptRecord, JobRecord, RECORD_FORMAT, State};
pub use view::{Census, WorkerInfo};

#[cfg(test)]
mod plan_properties;
#[cfg(test)]
mod tests;
