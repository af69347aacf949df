// The NCCL side of the collectives shim (see collective.cpp). Compiled with GANTRY_WITH_NCCL
// when the build found libtorch's CUDA backend and the CUDA and NCCL headers; otherwise a stub
// that refuses (the Rust side asks `gantry_nccl_built` first and says why from the build).
#include "collective.h"

#ifdef GANTRY_WITH_NCCL

#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

namespace gantry {

bool nccl_built() {
  return true;
}

c10::intrusive_ptr<c10d::Backend> make_nccl(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int size,
    int device,
    std::chrono::milliseconds timeout) {
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  auto group = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
  const at::Device bound(at::kCUDA, static_cast<c10::DeviceIndex>(device));
  group->setBoundDeviceId(bound);
  group->eagerConnectSingleDevice(bound);
  return group;
}

} // namespace gantry

#else

#include <stdexcept>

namespace gantry {

bool nccl_built() {
  return false;
}

c10::intrusive_ptr<c10d::Backend> make_nccl(
    const c10::intrusive_ptr<c10d::Store>&,
    int,
    int,
    int,
    std::chrono::milliseconds) {
  throw std::runtime_error("this build has no NCCL support (compiled without CUDA and NCCL headers)");
}

} // namespace gantry

#endif
