//! gantry control plane (job store, gang scheduler, gRPC job and worker services); lands with the coordinator.
