// Host stand-in for engine/cuda/cuda_utils.cuh in the emulation harness: the
// few host helpers attention.cu uses, without any CUDA runtime.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "engine/dispatch.h"
#include "engine/tensor.h"

namespace engine {
namespace emu_shim {

inline void cuda_check(cudaError_t status, const char* what) {
  check(status == cudaSuccess, "emulated CUDA call failed: {}", what);
}
inline cudaStream_t current_stream() { return nullptr; }

class DeviceGuard {
 public:
  explicit DeviceGuard(const Tensor&) {}
};

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

template <typename T>
const T* data_of(const Tensor& t) {
  return static_cast<const T*>(t.raw_data());
}
template <typename T>
T* mutable_data_of(const Tensor& t) {
  return static_cast<T*>(t.raw_data());
}

}  // namespace emu_shim
using namespace emu_shim;
}  // namespace engine

#define CUDA_CHECK_LAUNCH() ::engine::cuda_check(cudaGetLastError(), "kernel launch")
