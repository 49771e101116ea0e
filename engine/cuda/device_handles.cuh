// One library handle per GPU (cuBLAS, cuBLASLt, ...), made on first use.
#pragma once
#include <mutex>
#include <vector>

#include "engine/cuda/cuda_utils.cuh"

namespace engine {

// Handles of one library, one per GPU, each created on that device the first
// time it is asked for.
//
// Thread safety: get() may be called from any thread (a mutex guards the
// table); the handle it returns is shared by all threads using that GPU, so
// a setting changed on it (cublasSetStream, say) is seen by every thread.
// That is sound here because one thread queues a device's work, and each call
// sets the stream it queues on (current_stream(): run_branches may make it a
// side stream). cuBLAS and cuBLASLt calls take their workspace from the
// caching allocator, which run_branches keeps from being shared by the two
// streams.
//
// Lifetime: a handle lives until the process exits and is never destroyed:
// a static destructor could run after the CUDA runtime has shut down, and the
// driver frees it with the process anyway. Keep the table a function-local
// static, built on first use.
template <typename Handle>
class DeviceHandles {
 public:
  // create(&handle) makes a handle on the current device or throws.
  using Create = void (*)(Handle*);

  DeviceHandles(const char* library, Create create)
      : library_(library), create_(create), handles_(cuda_device_count(), Handle{}) {}
  DeviceHandles(const DeviceHandles&) = delete;
  DeviceHandles& operator=(const DeviceHandles&) = delete;

  Handle get(int device) {
    std::lock_guard<std::mutex> lock(mutex_);
    check(device >= 0 && device < static_cast<int>(handles_.size()), "{}: no GPU cuda:{}", library_, device);
    if (handles_[device] == Handle{}) {
      const DeviceGuard on_device(device);
      create_(&handles_[device]);
    }
    return handles_[device];
  }

 private:
  const char* library_;
  Create create_;
  std::mutex mutex_;
  std::vector<Handle> handles_;
};

}  // namespace engine
