//! The job file. It is the `gantry-job` crate, shared with the coordinator, which reads and
//! validates the same file without depending on the trainer.

pub use gantry_job::{
    DataConfig, DeviceSpec, JobConfig, JobError, ModelConfig, OutputConfig, ScheduleConfig, TrainConfig,
};
