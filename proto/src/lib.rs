//! gantry's wire contract.
//!
//! - [`pb`]: the messages and the tonic clients and servers of `gantry/v1/gantry.proto`
//!   (package `gantry.v1`): the job service that people and scripts call, and the worker service
//!   that `worker serve` agents call.
//! - [`auth`]: bearer tokens on both sides of a call; [`client`]: a channel to the coordinator
//!   (plain or TLS).
//!
//! The crate depends on no other crate of gantry's, so a client of the wire contract compiles
//! only tonic and prost. The job file that [`pb::JobSpec`] carries, with its defaults and
//! validation, is the `gantry-job` crate.

pub mod auth;
pub mod client;

/// Generated from `gantry/v1/gantry.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    tonic::include_proto!("gantry.v1");
}

/// The encoded file descriptor set of `gantry.v1`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/gantry_v1_descriptor.bin"));

impl pb::JobState {
    /// Whether a job in this state will not change again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The state in capitals, as people read it (`QUEUED`).
    pub fn label(self) -> &'static str {
        self.as_str_name().trim_start_matches("JOB_STATE_")
    }
}

impl pb::WorkerEvent {
    /// Whether this event ends its run: it finished, failed, stopped or was preempted. A run
    /// sends exactly one such event, its last.
    pub fn is_terminal(&self) -> bool {
        self.outcome().is_some()
    }

    /// How the run ended when this event ends it, in lowercase (`finished`, `failed`,
    /// `stopped`, `preempted`); None for the events of a run in progress.
    pub fn outcome(&self) -> Option<&'static str> {
        use pb::worker_event::Event;
        match self.event.as_ref()? {
            Event::Finished(_) => Some("finished"),
            Event::Failed(_) => Some("failed"),
            Event::Stopped(_) => Some("stopped"),
            Event::Preempted(_) => Some("preempted"),
            Event::Started(_) | Event::Metrics(_) | Event::Checkpoint(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pb;
    use super::pb::worker_event::Event;

    #[test]
    fn only_the_four_ends_of_a_run_are_terminal_events() {
        let event = |event| pb::WorkerEvent { event };
        for (end, outcome) in [
            (Event::Finished(pb::CheckpointInfo::default()), "finished"),
            (Event::Failed(pb::Failure::default()), "failed"),
            (Event::Stopped(3), "stopped"),
            (Event::Preempted(pb::CheckpointInfo::default()), "preempted"),
        ] {
            let end = event(Some(end));
            assert!(end.is_terminal(), "{end:?}");
            assert_eq!(end.outcome(), Some(outcome));
        }
        for progress in [
            Event::Started(0),
            Event::Metrics(pb::StepMetrics::default()),
            Event::Checkpoint(pb::CheckpointInfo::default()),
        ] {
            let progress = event(Some(progress));
            assert!(!progress.is_terminal(), "{progress:?}");
            assert_eq!(progress.outcome(), None);
        }
        assert!(!event(None).is_terminal());
    }
}
