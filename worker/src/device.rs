//! What libtorch sees on this machine: its version, threads, and CUDA devices.

use serde::Serialize;

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
    let cuda_available = tch::Cuda::is_available();
    let device = tch::Device::cuda_if_available();
    let a = tch::Tensor::ones([64, 64], (tch::Kind::Float, device));
    let matmul_check = a.matmul(&a).sum(tch::Kind::Double).double_value(&[]);
    DeviceReport {
        cuda_available,
        cuda_devices: tch::Cuda::device_count(),
        cudnn_available: tch::Cuda::cudnn_is_available(),
        cpu_threads: tch::get_num_threads(),
        auto_device: match device {
            tch::Device::Cuda(i) => format!("cuda:{i}"),
            _ => "cpu".to_string(),
        },
        matmul_check,
    }
}
