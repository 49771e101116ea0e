// CUDA runtime glue: device discovery, memory and copies. Compiled whenever
// nvcc is present; a machine without a GPU (or driver) reports zero devices,
// so CUDA-enabled binaries still run on the CPU.
#include <cuda_runtime.h>

#include "engine/device.h"
#include "engine/error.h"

namespace engine {

namespace {
void check_cuda(cudaError_t status, const char* what) {
  check(status == cudaSuccess, "CUDA error in {}: {}", what, cudaGetErrorString(status));
}
}  // namespace

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

void* cuda_alloc(int index, size_t nbytes) {
  if (nbytes == 0) return nullptr;
  check_cuda(cudaSetDevice(index), "cudaSetDevice");
  void* ptr = nullptr;
  check_cuda(cudaMalloc(&ptr, nbytes), "cudaMalloc");
  return ptr;
}

void cuda_free(int index, void* ptr) {
  if (ptr == nullptr) return;
  cudaSetDevice(index);
  cudaFree(ptr);
}

void cuda_synchronize(int index) {
  check_cuda(cudaSetDevice(index), "cudaSetDevice");
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

void cuda_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  cudaMemcpyKind kind = dst_device.is_cpu() ? cudaMemcpyDeviceToHost
                        : src_device.is_cpu() ? cudaMemcpyHostToDevice
                                              : cudaMemcpyDeviceToDevice;
  check_cuda(cudaMemcpy(dst, src, nbytes, kind), "cudaMemcpy");
}

}  // namespace engine
