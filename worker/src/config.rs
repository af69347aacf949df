//! The job file. It is defined in `gantry-proto` beside the wire message it converts to, so the
//! coordinator reads and validates the same file without depending on the trainer.

pub use gantry_proto::job::{
    DataConfig, DeviceSpec, JobConfig, JobError, ModelConfig, OutputConfig, ScheduleConfig, TrainConfig,
};
