//! gantry's control plane: job store, gang scheduler and the gRPC job and worker services.
//! It depends on `gantry-proto` only; the crate fills in with the coordinator.
