// gantry's collectives shim: c10d's TCPStore, PrefixStore and process groups (Gloo here, NCCL in
// collective_nccl.cpp) behind a flat C interface for `worker::collective`.
//
// Conventions, as in tch's torch_api.cpp: opaque handles; every function that can fail returns
// NULL on success or an error message allocated with malloc, which the caller frees with
// gantry_free; no C++ exception crosses the boundary. Tensors arrive as tch's `C_tensor*`, which
// is an `at::Tensor*`.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "collective.h"

namespace {

char* copy_message(const std::string& message) {
  char* out = static_cast<char*>(std::malloc(message.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, message.c_str(), message.size() + 1);
  }
  return out;
}

// Runs `body`; returns NULL, or the message of what it threw (c10's without its backtrace).
template <typename F>
char* guarded(F&& body) {
  try {
    body();
    return nullptr;
  } catch (const c10::Error& e) {
    return copy_message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return copy_message(e.what());
  } catch (...) {
    return copy_message("unknown C++ exception");
  }
}

std::vector<std::string> key_list(const char* const* keys, size_t count) {
  std::vector<std::string> out;
  out.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    out.emplace_back(keys[i]);
  }
  return out;
}

} // namespace

struct gantry_store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct gantry_group {
  c10::intrusive_ptr<c10d::Backend> backend;
  bool nccl;
};

extern "C" {

void gantry_free(void* p) {
  std::free(p);
}

int gantry_nccl_built() {
  return gantry::nccl_built() ? 1 : 0;
}

// Opens c10d's TCPStore at host:port: the server (and a client of it) when `is_server`, else a
// client that retries connecting until `timeout_ms`. Port 0 on the server binds a free port;
// `*bound_port` receives the port in use.
char* gantry_store_open(
    const char* host,
    uint16_t port,
    int is_server,
    int64_t timeout_ms,
    gantry_store** out,
    uint16_t* bound_port) {
  return guarded([&] {
    c10d::TCPStoreOptions options;
    options.port = port;
    options.isServer = is_server != 0;
    // The gang is checked by the process group's own rendezvous; a worker count would let any
    // client that connects (a stale or foreign process) count as a rank.
    options.numWorkers = std::nullopt;
    options.waitWorkers = false;
    options.timeout = std::chrono::milliseconds(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), options);
    *bound_port = store->getPort();
    *out = new gantry_store{store};
  });
}

// A view of `base` whose keys are all prefixed with `prefix` (c10d's PrefixStore).
char* gantry_store_prefixed(gantry_store* base, const char* prefix, gantry_store** out) {
  return guarded([&] {
    auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), base->store);
    *out = new gantry_store{store};
  });
}

void gantry_store_free(gantry_store* store) {
  delete store;
}

char* gantry_store_set(gantry_store* store, const char* key, const uint8_t* value, size_t len) {
  return guarded([&] {
    store->store->set(std::string(key), std::vector<uint8_t>(value, value + len));
  });
}

// Waits up to `timeout_ms` for `key`, then reads it into a malloc'd buffer (freed with gantry_free).
char* gantry_store_get(
    gantry_store* store,
    const char* key,
    int64_t timeout_ms,
    uint8_t** value,
    size_t* len) {
  return guarded([&] {
    const std::string name(key);
    store->store->wait({name}, std::chrono::milliseconds(timeout_ms));
    auto bytes = store->store->get(name);
    *len = bytes.size();
    *value = static_cast<uint8_t*>(std::malloc(bytes.empty() ? 1 : bytes.size()));
    if (*value == nullptr) {
      throw std::bad_alloc();
    }
    if (!bytes.empty()) {
      std::memcpy(*value, bytes.data(), bytes.size());
    }
  });
}

// Waits up to `timeout_ms` until every key exists.
char* gantry_store_wait(gantry_store* store, const char* const* keys, size_t count, int64_t timeout_ms) {
  return guarded([&] { store->store->wait(key_list(keys, count), std::chrono::milliseconds(timeout_ms)); });
}

// `*present` = 1 when every key exists, else 0, without waiting.
char* gantry_store_check(gantry_store* store, const char* const* keys, size_t count, int* present) {
  return guarded([&] { *present = store->store->check(key_list(keys, count)) ? 1 : 0; });
}

// A ProcessGroupGloo over `store`: returns once all `size` ranks have connected (a full mesh of
// TCP pairs), or fails after `timeout_ms`, which also bounds every later collective. `host` is the
// address this rank binds and its peers dial (NULL: c10d's default, this machine's host name or
// loopback).
char* gantry_group_gloo(
    gantry_store* store,
    int rank,
    int size,
    const char* host,
    int64_t timeout_ms,
    gantry_group** out) {
  return guarded([&] {
    auto options = c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(timeout_ms));
    if (host != nullptr) {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(std::string(host)));
    } else {
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store->store, rank, size, options);
    *out = new gantry_group{group, false};
  });
}

// A ProcessGroupNCCL over `store` on CUDA device `device` (see collective_nccl.cpp).
char* gantry_group_nccl(
    gantry_store* store,
    int rank,
    int size,
    int device,
    int64_t timeout_ms,
    gantry_group** out) {
  return guarded([&] {
    auto group = gantry::make_nccl(store->store, rank, size, device, std::chrono::milliseconds(timeout_ms));
    *out = new gantry_group{group, true};
  });
}

void gantry_group_free(gantry_group* group) {
  if (group == nullptr) {
    return;
  }
  if (group->nccl) {
    // NCCL's communicators are released by an explicit shutdown; a failure here (a group that
    // already failed) leaves nothing to do.
    try {
      group->backend->shutdown();
    } catch (...) {
    }
  }
  delete group;
}

// Sums `tensor` over all ranks, in place. On Gloo the call returns when the result is there; on
// NCCL when it is ordered before later work on the current CUDA stream.
char* gantry_group_all_reduce_sum(gantry_group* group, const void* tensor) {
  return guarded([&] {
    std::vector<at::Tensor> tensors{*static_cast<const at::Tensor*>(tensor)};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    group->backend->allreduce(tensors, options)->wait();
  });
}

// Copies rank `root`'s `tensor` into every other rank's, in place.
char* gantry_group_broadcast(gantry_group* group, const void* tensor, int root) {
  return guarded([&] {
    std::vector<at::Tensor> tensors{*static_cast<const at::Tensor*>(tensor)};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    options.rootTensor = 0;
    group->backend->broadcast(tensors, options)->wait();
  });
}

} // extern "C"
