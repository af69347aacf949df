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
