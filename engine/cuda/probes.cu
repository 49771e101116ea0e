// Throughput probes for ./bench_kernels' ceilings (declared in bench_timing.h).
#include <cuda_runtime.h>

#include "engine/bench_timing.h"
#include "engine/cuda/cuda_utils.cuh"

namespace engine {

namespace {

constexpr int kProbeChains = 8;  // independent exponentials per thread, to hide MUFU's latency
constexpr int kProbeThreads = 256;

// Each thread runs kProbeChains chains v <- 2^-v (v stays in [0.5, 1]), one
// hardware exponential (MUFU.EX2, the selective scan's) per link and nothing
// else, and writes the chains' sum so that none is optimised away.
__global__ void exp2_probe_kernel(int links, float* out) {
  float v[kProbeChains];
#pragma unroll
  for (int i = 0; i < kProbeChains; ++i) v[i] = 0.5f + 0.01f * i + 1e-7f * threadIdx.x;
  for (int k = 0; k < links; ++k) {
#pragma unroll
    for (int i = 0; i < kProbeChains; ++i) asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(v[i]) : "f"(-v[i]));
  }
  float sum = 0;
#pragma unroll
  for (int i = 0; i < kProbeChains; ++i) sum += v[i];
  out[blockIdx.x * blockDim.x + threadIdx.x] = sum;
}

}  // namespace

int64_t cuda_exp2_probe(int device, int64_t exponentials) {
  DeviceGuard guard(device);
  int sms = 0;
  cuda_check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "exp2 probe: SM count");
  const int64_t blocks = int64_t{sms} * 8;  // full occupancy: 2048 threads per SM
  const int64_t per_link = blocks * kProbeThreads * kProbeChains;
  const int links = static_cast<int>(std::max<int64_t>(1, exponentials / per_link));
  // The sink goes back to the caching allocator at once: it only reuses it for work queued later.
  Tensor sink = Tensor::empty({blocks * kProbeThreads}, DType::F32, Device::cuda(device));
  float* out = static_cast<float*>(sink.raw_data());
  exp2_probe_kernel<<<static_cast<unsigned>(blocks), kProbeThreads, 0, current_stream()>>>(links, out);
  CUDA_CHECK_LAUNCH();
  return links * per_link;
}

}  // namespace engine
