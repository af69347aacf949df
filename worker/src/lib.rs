//! gantry's trainer. For now: what libtorch sees on this machine ([`device`]), used to check a
//! GPU node before workers are launched on it.

pub mod device;
