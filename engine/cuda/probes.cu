// Throughput probes for ./bench_kernels' ceilings (declared in bench_timing.h).
#include <cuda_runtime.h>

#include "engine/bench_timing.h"
#include "engine/cuda/cuda_utils.cuh"

namespace engine {

namespace {

constexpr int kProbeChains = 16;  // independent chains per thread, to hide the pipe's latency
constexpr int kProbeThreads = 256;

// One link of a chain: a single instruction of the probed pipe and nothing
// else. The chains stay in a bounded range so that no value becomes special.
struct Exp2Link {  // MUFU.EX2, the selective scan's exponential: v <- 2^-v stays in [0.5, 1]
  __device__ static float step(float v) {
    float out;
    asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(out) : "f"(-v));
    return out;
  }
};
struct FmaLink {  // FFMA, the float32 kernels' pipe: v <- v * 0.9999 + 1e-4 tends to 1
  __device__ static float step(float v) {
    float out;
    asm volatile("fma.rn.f32 %0, %1, 0f3F7FF972, 0f38D1B717;" : "=f"(out) : "f"(v));
    return out;
  }
};

// Each thread runs kProbeChains chains of `links` links and writes the chains'
// sum so that none is optimised away. The links are unrolled so that the
// loop's own instructions take few issue slots.
template <typename Link>
__global__ void probe_kernel(int links, float* out) {
  float v[kProbeChains];
#pragma unroll
  for (int i = 0; i < kProbeChains; ++i) v[i] = 0.5f + 0.01f * i + 1e-7f * threadIdx.x;
#pragma unroll 8
  for (int k = 0; k < links; ++k) {
#pragma unroll
    for (int i = 0; i < kProbeChains; ++i) v[i] = Link::step(v[i]);
  }
  float sum = 0;
#pragma unroll
  for (int i = 0; i < kProbeChains; ++i) sum += v[i];
  out[blockIdx.x * blockDim.x + threadIdx.x] = sum;
}

// Queues about `instructions` links over the whole GPU (full occupancy) and
// returns how many exactly.
template <typename Link>
int64_t run_probe(int device, int64_t instructions, const char* name) {  // name: for an error
  DeviceGuard guard(device);
  int sms = 0;
  cuda_check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), name);
  const int64_t blocks = int64_t{sms} * 8;  // full occupancy: 2048 threads per SM
  const int64_t per_link = blocks * kProbeThreads * kProbeChains;
  const int links = static_cast<int>(std::max<int64_t>(1, instructions / per_link));
  // The sink goes back to the caching allocator at once: it only reuses it for work queued later.
  Tensor sink = Tensor::empty({blocks * kProbeThreads}, DType::F32, Device::cuda(device));
  float* out = static_cast<float*>(sink.raw_data());
  probe_kernel<Link><<<static_cast<unsigned>(blocks), kProbeThreads, 0, current_stream()>>>(links, out);
  CUDA_CHECK_LAUNCH();
  return links * per_link;
}

}  // namespace

int64_t cuda_exp2_probe(int device, int64_t exponentials) {
  return run_probe<Exp2Link>(device, exponentials, "exp2 probe");
}

int64_t cuda_fma_probe(int device, int64_t fmas) { return run_probe<FmaLink>(device, fmas, "fma probe"); }

}  // namespace engine
