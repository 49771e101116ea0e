// CUDA runtime glue: device discovery, memory (a caching allocator per GPU)
// and copies. Compiled whenever nvcc is present; a machine without a GPU (or
// driver) reports zero devices, so CUDA-enabled binaries still run on the CPU.
#include <vector>

#include "engine/caching_allocator.h"
#include "engine/cuda/cuda_utils.cuh"
#include "engine/device.h"
#include "engine/error.h"

namespace engine {

void cuda_check(cudaError_t status, const char* what) {
  check(status == cudaSuccess, "CUDA error in {}: {}", what, cudaGetErrorString(status));
}

cudaStream_t current_stream() { return nullptr; }  // the legacy default stream of the current device

bool built_with_cuda() { return true; }

int cuda_device_count() {
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();  // clear the sticky "no driver" error
      return 0;
    }
    return n;
  }();
  return count;
}

namespace {

// The raw allocator works on the current device: cuda_alloc / cuda_free select it.
void* raw_cuda_alloc(size_t nbytes) {
  void* ptr = nullptr;
  if (cudaMalloc(&ptr, nbytes) != cudaSuccess) {
    cudaGetLastError();  // out of memory is not sticky: clear it so that later launch checks don't report it
    return nullptr;
  }
  return ptr;
}

// Reached from tensor destructors, which must not throw: an error here would
// be a sticky one from an earlier kernel, reported by the next check anyway.
void raw_cuda_free(void* ptr) { cudaFree(ptr); }

CachingAllocator& device_allocator(int index) {
  // One per GPU, never destroyed (like the host allocator): tensors held by
  // static objects may be freed after it would be. The cache may grow to the
  // whole memory of the GPU; an allocation that fails flushes it and retries.
  static const std::vector<CachingAllocator*> allocators = [] {
    std::vector<CachingAllocator*> list;
    for (int i = 0; i < cuda_device_count(); ++i) {
      cudaDeviceProp properties;
      cuda_check(cudaGetDeviceProperties(&properties, i), "cudaGetDeviceProperties");
      list.push_back(new CachingAllocator(raw_cuda_alloc, raw_cuda_free, properties.totalGlobalMem));
    }
    return list;
  }();
  check(index >= 0 && index < static_cast<int>(allocators.size()), "cuda:{} does not exist ({} GPU(s) visible)",
        index, allocators.size());
  return *allocators[index];
}

}  // namespace

void* cuda_alloc(int index, size_t nbytes) {
  if (nbytes == 0) return nullptr;
  DeviceGuard guard(index);
  void* ptr = device_allocator(index).allocate(nbytes);
  check(ptr != nullptr, "out of memory on cuda:{} allocating {} bytes", index, nbytes);
  return ptr;
}

CachingAllocator::Stats cuda_allocator_stats(int index) { return device_allocator(index).stats(); }

void cuda_free(int index, void* ptr) {
  if (ptr == nullptr) return;
  // Stream order makes reuse safe: kernels still reading the block were queued
  // before any kernel that the next owner of the block queues.
  int previous = 0;
  cudaGetDevice(&previous);
  cudaSetDevice(index);  // (not DeviceGuard: destructors must not throw)
  device_allocator(index).release(ptr);
  cudaSetDevice(previous);
}

void cuda_synchronize(int index) {
  cuda_check(cudaSetDevice(index), "cudaSetDevice");
  cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

double cuda_time_ms(int index, const std::function<void()>& run) {
  cuda_check(cudaSetDevice(index), "cudaSetDevice");
  cudaEvent_t start, stop;
  cuda_check(cudaEventCreate(&start), "cudaEventCreate");
  cuda_check(cudaEventCreate(&stop), "cudaEventCreate");
  cuda_check(cudaEventRecord(start, current_stream()), "cudaEventRecord");
  run();
  cuda_check(cudaEventRecord(stop, current_stream()), "cudaEventRecord");
  cuda_check(cudaEventSynchronize(stop), "cudaEventSynchronize");
  float ms = 0;
  cuda_check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms;
}

void cuda_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  if (dst_device.is_cuda() && src_device.is_cuda() && dst_device.index != src_device.index) {
    // Between two GPUs (explicit moves only): ordered after all work queued on either.
    cuda_check(cudaMemcpyPeer(dst, dst_device.index, src, src_device.index, nbytes), "cudaMemcpyPeer");
    return;
  }
  const cudaMemcpyKind kind = dst_device.is_cpu() ? cudaMemcpyDeviceToHost
                              : src_device.is_cpu() ? cudaMemcpyHostToDevice
                                                    : cudaMemcpyDeviceToDevice;
  DeviceGuard guard(dst_device.is_cuda() ? dst_device.index : src_device.index);
  cuda_check(cudaMemcpyAsync(dst, src, nbytes, kind, current_stream()), "cudaMemcpyAsync");
  // A device-to-host copy must be complete before the caller reads the data.
  // A host-to-device copy from pageable memory is not promised to have read
  // the source when cudaMemcpyAsync returns, and the host caching allocator
  // may hand that buffer out again at once: wait for it too.
  if (kind != cudaMemcpyDeviceToDevice) cuda_check(cudaStreamSynchronize(current_stream()), "cudaStreamSynchronize");
}

}  // namespace engine
