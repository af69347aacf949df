//! gantry's wire contract. The `.proto` files of the job and worker services (package
//! `gantry.v1`) and their tonic/prost code land here with the coordinator; nothing else in the
//! workspace speaks gRPC yet.
