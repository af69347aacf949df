//! Devices, the worker's rules in one place: resolving the configured device ([`resolve`],
//! choosing one for `auto`), the device a coordinator's job runs on here ([`for_job`]), the
//! memory a rank may use here ([`rank_memory`], from `/proc/meminfo` or `nvidia-smi`), and
//! reporting what libtorch sees on a machine (`worker device`).

use std::path::PathBuf;

use serde::Serialize;
use tch::Device;

use crate::config::DeviceSpec;
use crate::{Error, Result};

/// File name of libtorch's CUDA backend library.
const CUDA_BACKEND_LIBRARY: &str = "libtorch_cuda.so";

/// Resolves a configured device on this machine: `auto` picks `cuda:0` when a CUDA device is
/// visible (and logs which device it chose and why); an unavailable CUDA device is an error.
pub fn resolve(spec: DeviceSpec) -> Result<Device> {
    let bad = |message: String| Error::Device {
        device: spec.to_string(),
        message,
    };
    match spec {
        DeviceSpec::Auto => {
            let choice = auto_device();
            tracing::info!(
                device = %device_name(choice.device),
                reason = choice.reason.as_str(),
                "device chosen"
            );
            Ok(choice.device)
        }
        DeviceSpec::Cuda(i) => {
            let count = tch::Cuda::device_count();
            if (i as i64) < count {
                Ok(Device::Cuda(i))
            } else if cuda_backend_library().is_none() {
                Err(bad(format!(
                    "libtorch's CUDA backend ({CUDA_BACKEND_LIBRARY}) is not loaded in this process; this worker has: {}",
                    available_devices().join(", ")
                )))
            } else {
                Err(bad(format!(
                    "no such device; this worker has: {}",
                    available_devices().join(", ")
                )))
            }
        }
        DeviceSpec::Cpu => Ok(Device::Cpu),
    }
}

/// The device a job runs on at a worker: the job's `train.device`, unless it is `auto`, which
/// takes the device the worker resolved its own setting to (`worker`).
pub fn for_job(job: DeviceSpec, worker: DeviceSpec) -> DeviceSpec {
    match job {
        DeviceSpec::Auto => worker,
        job => job,
    }
}

/// What a worker tells the coordinator a rank may use on `device`, bytes: `limit` when set,
/// else the GPU's memory (from `nvidia-smi`) for a CUDA device, else the host's total memory;
/// 0 when unknown.
pub fn rank_memory(device: DeviceSpec, limit: Option<u64>) -> u64 {
    if let Some(limit) = limit {
        return limit;
    }
    match device {
        DeviceSpec::Cuda(index) => gpu_memory(index).unwrap_or(0),
        _ => total_memory().unwrap_or(0),
    }
}

/// A GPU's total memory from `nvidia-smi`, bytes.
pub fn gpu_memory(index: usize) -> Option<u64> {
    let output = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=memory.total",
            "--format=csv,noheader,nounits",
            "-i",
            &index.to_string(),
        ])
        .output()
        .ok()?;
    let mib: u64 = String::from_utf8_lossy(&output.stdout).trim().parse().ok()?;
    Some(mib << 20)
}

/// Memory the host has available now (`MemAvailable` of `/proc/meminfo`), bytes.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Memory the host has in all (`MemTotal`), bytes.
pub fn total_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The devices this process can train on: `cpu`, then `cuda:0`, `cuda:1`, ...
pub fn available_devices() -> Vec<String> {
    let cuda = (0..tch::Cuda::device_count()).map(|i| format!("cuda:{i}"));
    std::iter::once("cpu".to_string()).chain(cuda).collect()
}

/// The configured form of a device that [`resolve`] returned (`cpu` or `cuda:N`).
pub fn spec_of(device: Device) -> DeviceSpec {
    match device {
        Device::Cuda(i) => DeviceSpec::Cuda(i),
        _ => DeviceSpec::Cpu,
    }
}

/// What `auto` resolves to on this machine, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoChoice {
    /// `cuda:0` when a CUDA device is visible, else the CPU.
    pub device: Device,
    /// Why, in words: no CUDA backend, no visible device, or how many devices are visible.
    pub reason: String,
}

/// Chooses the device for `auto`: `cuda:0` when libtorch's CUDA backend is loaded and sees a
/// device, else the CPU; the reason tells the two CPU cases apart.
pub fn auto_device() -> AutoChoice {
    if cuda_backend_library().is_none() {
        return AutoChoice {
            device: Device::Cpu,
            reason: format!("libtorch's CUDA backend ({CUDA_BACKEND_LIBRARY}) is not linked"),
        };
    }
    match tch::Cuda::device_count() {
        0 => AutoChoice {
            device: Device::Cpu,
            reason: "CUDA backend loaded but no CUDA device visible".to_string(),
        },
        count => AutoChoice {
            device: Device::Cuda(0),
            reason: format!("{count} CUDA device(s) visible"),
        },
    }
}

/// Path of libtorch's CUDA backend (`libtorch_cuda.so`) when it is loaded in this process.
///
/// libtorch splits its backends into libraries: `libtorch_cpu.so` holds the dispatcher and a stub
/// for CUDA, and `libtorch_cuda.so` replaces the stub with the real hooks from its static
/// initialisers when it is loaded. What tch exposes cannot tell "not loaded" from "no device":
/// `Cuda::is_available()` and `Cuda::device_count()` both ask the hooks for a device count, which
/// the stub answers with 0, and so does the real backend on a machine without a visible device
/// or driver. The hooks' own `isBuilt()` would tell, but reaching it takes C++ beyond tch's C API.
/// Whether the library is mapped into the process is exactly the condition ("the backend is
/// registered") and costs nothing to check: the dynamic loader's list of loaded objects
/// (`dl_iterate_phdr`, the list `/proc/self/maps` and `ldd` show) holds it by path. The worker
/// binaries link it as a direct dependency (see `build.rs`), so it is loaded before `main`.
pub fn cuda_backend_library() -> Option<PathBuf> {
    loaded_library(CUDA_BACKEND_LIBRARY)
}

/// Path of libtorch's main library (`libtorch_cpu.so`) as this process loaded it: which libtorch
/// a shipped binary found on a node.
pub fn libtorch_library() -> Option<PathBuf> {
    loaded_library("libtorch_cpu.so")
}

/// Path of the loaded shared object with this file name.
fn loaded_library(file_name: &str) -> Option<PathBuf> {
    loaded_objects()
        .into_iter()
        .find(|path| path.file_name().is_some_and(|name| name == file_name))
}

/// Paths of the shared objects loaded in this process, as the dynamic loader opened them.
#[cfg(target_os = "linux")]
fn loaded_objects() -> Vec<PathBuf> {
    use std::ffi::{CStr, OsStr};
    use std::os::unix::ffi::OsStrExt;

    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `Vec` passed to `dl_iterate_phdr` below, borrowed for the whole
        // iteration and touched by nobody else; `info` points to a valid entry whose `dlpi_name`
        // is null or a NUL-terminated string, both valid for the duration of this call.
        unsafe {
            let paths = &mut *data.cast::<Vec<PathBuf>>();
            let name = (*info).dlpi_name;
            if !name.is_null() {
                let name = CStr::from_ptr(name).to_bytes();
                if !name.is_empty() {
                    paths.push(PathBuf::from(OsStr::from_bytes(name)));
                }
            }
        }
        0
    }

    let mut paths: Vec<PathBuf> = Vec::new();
    // SAFETY: `visit` matches the callback type, never unwinds, and only writes to `paths`
    // through the pointer, which outlives the call.
    unsafe {
        libc::dl_iterate_phdr(Some(visit), (&raw mut paths).cast());
    }
    paths
}

/// Paths of the shared objects loaded in this process: not implemented off Linux, where the
/// worker does not run on CUDA.
#[cfg(not(target_os = "linux"))]
fn loaded_objects() -> Vec<PathBuf> {
    Vec::new()
}

/// Lowercase name of a device (`cpu`, `cuda:0`).
pub fn device_name(device: Device) -> String {
    spec_of(device).to_string()
}

/// The compute available to a worker.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    /// Where libtorch (`libtorch_cpu.so`) was loaded from.
    pub libtorch_library: Option<String>,
    /// Whether libtorch's CUDA backend (`libtorch_cuda.so`) is loaded in the process, whether or
    /// not a device is present.
    pub cuda_backend_loaded: bool,
    /// Where the CUDA backend was loaded from, when it is.
    pub cuda_backend_library: Option<String>,
    /// Whether libtorch can use CUDA: the backend is loaded and sees at least one device.
    pub cuda_available: bool,
    /// Number of visible CUDA devices.
    pub cuda_devices: i64,
    /// Whether cuDNN is usable.
    pub cudnn_available: bool,
    /// Intra-op CPU threads libtorch uses.
    pub cpu_threads: i32,
    /// The device `auto` resolves to: `cuda:0` when CUDA is available, else `cpu`.
    pub auto_device: String,
    /// Why `auto` resolves to `auto_device`.
    pub auto_reason: String,
    /// Sum of a small matrix product computed on `auto_device` (checks kernels actually run).
    pub matmul_check: f64,
}

/// Probes libtorch and runs one small computation on the automatically chosen device.
pub fn probe() -> DeviceReport {
    let backend = cuda_backend_library();
    let choice = auto_device();
    let a = tch::Tensor::ones([64, 64], (tch::Kind::Float, choice.device));
    let matmul_check = a.matmul(&a).sum(tch::Kind::Double).double_value(&[]);
    DeviceReport {
        libtorch_library: libtorch_library().map(|path| path.display().to_string()),
        cuda_backend_loaded: backend.is_some(),
        cuda_backend_library: backend.map(|path| path.display().to_string()),
        cuda_available: tch::Cuda::is_available(),
        cuda_devices: tch::Cuda::device_count(),
        cudnn_available: tch::Cuda::cudnn_is_available(),
        cpu_threads: tch::get_num_threads(),
        auto_device: device_name(choice.device),
        auto_reason: choice.reason,
        matmul_check,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The libtorch folder this crate was linked against (from `build.rs`).
    fn libtorch_lib() -> &'static Path {
        Path::new(env!("GANTRY_LIBTORCH_LIB"))
    }

    /// This test binary links libtorch like the `worker` binary: with the backend when the
    /// libtorch it was built against has one.
    #[test]
    fn the_cuda_backend_is_loaded_exactly_when_libtorch_has_one() {
        let lib = libtorch_lib();
        let has_backend = lib.join(CUDA_BACKEND_LIBRARY).is_file();
        let loaded = cuda_backend_library();
        assert_eq!(
            loaded.is_some(),
            has_backend,
            "libtorch folder {} {} {CUDA_BACKEND_LIBRARY}, but this process has {}",
            lib.display(),
            if has_backend { "has" } else { "lacks" },
            match &loaded {
                Some(path) => format!("it loaded from {}", path.display()),
                None => "not loaded it".to_string(),
            }
        );
        if let Some(path) = loaded {
            assert_eq!(
                std::fs::canonicalize(path).unwrap(),
                std::fs::canonicalize(lib.join(CUDA_BACKEND_LIBRARY)).unwrap()
            );
        }
    }

    #[test]
    fn auto_gives_its_reason_and_agrees_with_libtorch() {
        let choice = auto_device();
        let count = tch::Cuda::device_count();
        match (cuda_backend_library().is_some(), count) {
            (false, _) => {
                assert_eq!(choice.device, Device::Cpu);
                assert!(choice.reason.contains("not linked"), "{}", choice.reason);
            }
            (true, 0) => {
                assert_eq!(choice.device, Device::Cpu);
                assert!(choice.reason.contains("no CUDA device visible"), "{}", choice.reason);
            }
            (true, count) => {
                assert_eq!(choice.device, Device::Cuda(0));
                assert_eq!(choice.reason, format!("{count} CUDA device(s) visible"));
            }
        }
        assert_eq!(choice.device, Device::cuda_if_available());
        assert_eq!(resolve(DeviceSpec::Auto).unwrap(), choice.device);
    }

    #[test]
    fn a_job_on_auto_takes_the_worker_s_device_and_others_keep_theirs() {
        let worker = DeviceSpec::Cuda(1);
        assert_eq!(for_job(DeviceSpec::Auto, worker), worker);
        assert_eq!(for_job(DeviceSpec::Cpu, worker), DeviceSpec::Cpu);
        assert_eq!(for_job(DeviceSpec::Cuda(0), DeviceSpec::Cpu), DeviceSpec::Cuda(0));
    }

    #[test]
    fn a_rank_s_memory_is_the_limit_else_the_host_s_for_the_cpu() {
        assert_eq!(rank_memory(DeviceSpec::Cpu, Some(123)), 123);
        assert_eq!(rank_memory(DeviceSpec::Cuda(0), Some(456)), 456);
        let total = total_memory().expect("Linux has /proc/meminfo");
        assert!(total > 0);
        assert_eq!(rank_memory(DeviceSpec::Cpu, None), total);
    }

    #[test]
    fn libtorch_is_loaded_from_the_folder_it_was_linked_against() {
        let loaded = libtorch_library().unwrap_or_else(|| panic!("{:?}", loaded_objects()));
        assert_eq!(
            std::fs::canonicalize(loaded).unwrap(),
            std::fs::canonicalize(libtorch_lib().join("libtorch_cpu.so")).unwrap()
        );
    }
}
