//! Devices: parsing the configured device and reporting what libtorch sees on a machine.

use serde::Serialize;
use tch::Device;

use crate::config::DeviceSpec;
use crate::{Error, Result};

/// Parses `auto`, `cpu`, `cuda` or `cuda:N` (without checking availability).
pub fn parse_device(spec: &str) -> std::result::Result<Option<Device>, String> {
    Ok(match spec.parse::<DeviceSpec>()? {
        DeviceSpec::Auto => None,
        DeviceSpec::Cpu => Some(Device::Cpu),
        DeviceSpec::Cuda(i) => Some(Device::Cuda(i)),
    })
}

/// Resolves a device spec on this machine: `auto` picks CUDA when available; an unavailable CUDA
/// device is an error.
pub fn resolve_device(spec: &str) -> Result<Device> {
    let bad = |message: String| Error::Device {
        device: spec.to_string(),
        message,
    };
    match parse_device(spec).map_err(bad)? {
        None => Ok(Device::cuda_if_available()),
        Some(Device::Cuda(i)) => {
            let count = tch::Cuda::device_count();
            if (i as i64) < count {
                Ok(Device::Cuda(i))
            } else {
                Err(bad(format!(
                    "this machine has {count} CUDA device(s) usable by libtorch"
                )))
            }
        }
        Some(device) => Ok(device),
    }
}

/// Lowercase name of a device (`cpu`, `cuda:0`).
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
    }
}

/// The compute available to a worker.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    /// Whether libtorch can use CUDA.
    pub cuda_available: bool,
    /// Number of visible CUDA devices.
    pub cuda_devices: i64,
    /// Whether cuDNN is usable.
    pub cudnn_available: bool,
    /// Intra-op CPU threads libtorch uses.
    pub cpu_threads: i32,
    /// The device `auto` resolves to: `cuda:0` when CUDA is available, else `cpu`.
    pub auto_device: String,
    /// Sum of a small matrix product computed on `auto_device` (checks kernels actually run).
    pub matmul_check: f64,
}

/// Probes libtorch and runs one small computation on the automatically chosen device.
pub fn probe() -> DeviceReport {
    let device = Device::cuda_if_available();
    let a = tch::Tensor::ones([64, 64], (tch::Kind::Float, device));
    let matmul_check = a.matmul(&a).sum(tch::Kind::Double).double_value(&[]);
    DeviceReport {
        cuda_available: tch::Cuda::is_available(),
        cuda_devices: tch::Cuda::device_count(),
        cudnn_available: tch::Cuda::cudnn_is_available(),
        cpu_threads: tch::get_num_threads(),
        auto_device: device_name(device),
        matmul_check,
    }
}
