// Shared between the two translation units of the collectives shim: the NCCL backend lives in
// its own file so that a machine without CUDA headers still builds the Gloo side.
#pragma once

#include <chrono>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

namespace gantry {

// Whether this build can create NCCL groups (false: built without CUDA or NCCL headers).
bool nccl_built();

// A ProcessGroupNCCL of `size` ranks over `store`, bound to CUDA device `device` and connected
// eagerly (its NCCL communicator exists on return). Throws when NCCL is not built in.
c10::intrusive_ptr<c10d::Backend> make_nccl(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int size,
    int device,
    std::chrono::milliseconds timeout);

} // namespace gantry
