// The arithmetic floor of the selective scan's forward on a GPU: a kernel that
// does only the forward's arithmetic at the bench row's shape ([B, L, C] =
// [128, 197, 384], S = 16) and loads no input. Per (step, channel, state) it
// runs exactly what any float32 forward must: FMUL (dt A), MUFU.EX2 (the
// decay), FMUL (dt x Bm), FFMA (decay h + that), FFMA (Cm h into y); per
// channel-step one y store. Bm, Cm and A stay in registers; dt and x are
// advanced in registers. It is timed at 1, 2, 4 and 8 lanes per channel (16,
// 8, 4, 2 states per lane, the parts of y summed by shuffles) and reported as
// the GB/s that the real kernel's bytes (x, dt, y, Bm, Cm) would give at that
// time: a kernel that also loads its inputs cannot be faster.
//
// It also times the same kernels with 1 to 4 of a lane's exponentials moved
// from the MUFU to the FMA pipe (exp2_fma_pipe: a polynomial as accurate as
// ex2.approx, 11 instructions instead of 1), the trick that relieves a
// saturated MUFU when the schedulers have issue slots to spare; and it
// checks that polynomial's error against double exp2.
//
//   nvcc -O3 -gencode=arch=compute_90a,code=sm_90a -o scan_forward_floor scan_forward_floor.cu && ./scan_forward_floor
#include <cuda_runtime.h>

#include <cstdio>

namespace {

constexpr int kBatch = 128, kLength = 197, kChannels = 384, kStates = 16, kThreads = 128;

// 2^t for t <= 0 on the FMA pipe instead of the MUFU: t = j + f with j an
// integer and |f| <= 1/2 (rounding by the 1.5 * 2^23 trick), 2^f by a degree-5
// minimax polynomial (relative error 2e-7 in float32, as ex2.approx), and j
// added to the result's exponent bits. t is clamped at -125 so that the
// exponent stays normal (2^-125 instead of 0 below: no state can tell).
__device__ __forceinline__ float exp2_fma_pipe(float t) {
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  t = fmaxf(t, -125.0f);
  const float r = t + kRound;
  const float j = r - kRound;
  const float f = t - j;
  float p = 0.00132764725f;
  p = fmaf(p, f, 0.00967554096f);
  p = fmaf(p, f, 0.0555071309f);
  p = fmaf(p, f, 0.240221202f);
  p = fmaf(p, f, 0.693146944f);
  p = fmaf(p, f, 1.00000012f);
  return __int_as_float(__float_as_int(p) + (__float_as_int(r) << 23));
}

// kSoft of a lane's states take their exponential from exp2_fma_pipe; C h is
// summed in kSums independent partial sums (a shorter dependent chain).
template <int kLanes, int kSoft, int kSums>
__global__ void __launch_bounds__(kThreads) floor_kernel(const float* __restrict__ seed, float* __restrict__ y) {
  constexpr int N = kStates / kLanes;
  const int part = threadIdx.x % kLanes;
  const long channel = static_cast<long>(blockIdx.x) * (kThreads / kLanes) + threadIdx.x / kLanes;  // of B C
  if (channel >= static_cast<long>(kBatch) * kChannels) return;
  float scaled_a[N], b[N], c[N], h[N];
#pragma unroll
  for (int s = 0; s < N; ++s) {
    scaled_a[s] = -0.14426950408889634f * (1 + s + part * N);  // A log2(e) for A = -(n + 1) / 10
    b[s] = 0.01f * (s + 1);
    c[s] = 0.02f * (s + 1);
    h[s] = 0;
  }
  float x = seed[channel % 1024], dt = 0.05f + 1e-3f * x;
#pragma unroll 8
  for (int t = 0; t < kLength; ++t) {
    const float input = dt * x;
    float sums[kSums] = {};
#pragma unroll
    for (int s = 0; s < N; ++s) {
      float decay;
      if (s < kSoft) {
        decay = exp2_fma_pipe(dt * scaled_a[s]);
      } else {
        asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(decay) : "f"(dt * scaled_a[s]));
      }
      h[s] = decay * h[s] + input * b[s];
      sums[s % kSums] += c[s] * h[s];
    }
    float out = sums[0];
#pragma unroll
    for (int i = 1; i < kSums; ++i) out += sums[i];
#pragma unroll
    for (int offset = kLanes / 2; offset > 0; offset /= 2) out += __shfl_xor_sync(0xffffffff, out, offset);
    if (part == 0) y[static_cast<long>(t) * kBatch * kChannels + channel] = out;  // coalesced over channels
    dt = dt * 0.999f + 1e-4f;  // the next step's inputs, in registers
    x = x * 0.998f + 1e-3f;
  }
}

template <int kLanes, int kSoft = 0, int kSums = 1>
void time_floor(const float* seed, float* y, double copy_gbps) {
  const int blocks = (kBatch * kChannels * kLanes + kThreads - 1) / kThreads;
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  for (int i = 0; i < 3; ++i) floor_kernel<kLanes, kSoft, kSums><<<blocks, kThreads>>>(seed, y);
  const int calls = 50;
  cudaEventRecord(start);
  for (int i = 0; i < calls; ++i) floor_kernel<kLanes, kSoft, kSums><<<blocks, kThreads>>>(seed, y);
  cudaEventRecord(stop);
  cudaEventSynchronize(stop);
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  ms /= calls;
  const double bytes = 4.0 * (3.0 * kBatch * kLength * kChannels + 2.0 * kBatch * kLength * kStates);
  const double gbps = bytes / ms / 1e6;
  std::printf("%d lanes per channel (%2d states, %d on the FMA pipe, %d sums, %5.1f warps per SM): %.4f ms, %5.0f GB/s, %4.1f%% of copy\n", kLanes,
              kStates / kLanes, kSoft, kSums, kBatch * kChannels * kLanes / 32.0 / 132, ms, gbps, 100 * gbps / copy_gbps);
}

// Device-to-device copy of 1 GiB, bytes read + written per second.
double copy_gbps() {
  const size_t bytes = size_t{1} << 30;
  void *src, *dst;
  cudaMalloc(&src, bytes);
  cudaMalloc(&dst, bytes);
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice);
  cudaEventRecord(start);
  for (int i = 0; i < 10; ++i) cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice);
  cudaEventRecord(stop);
  cudaEventSynchronize(stop);
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  cudaFree(src);
  cudaFree(dst);
  return 2.0 * bytes * 10 / ms / 1e6;
}

// worst[0]: the largest relative error of exp2_fma_pipe against double exp2
// over t in [-125, 0] (steps of 2^-14); worst[1]: the largest value it gives
// below -125, where the clamp holds it at 2^-125.5.
__global__ void exp2_error_kernel(float* worst) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const float t = -static_cast<float>(i) / 16384.0f;
  if (t < -130.0f) return;
  const float value = exp2_fma_pipe(t);
  const float error = t < -125.0f ? value : static_cast<float>(fabs(value - exp2(double{t})) / exp2(double{t}));
  atomicMax(reinterpret_cast<int*>(worst + (t < -125.0f ? 1 : 0)), __float_as_int(error));  // non-negative floats order as ints
}

bool check_exp2_fma_pipe() {
  float* worst;
  cudaMalloc(&worst, 2 * sizeof(float));
  cudaMemset(worst, 0, 2 * sizeof(float));
  const int points = 130 * 16384 + 1;
  exp2_error_kernel<<<(points + 255) / 256, 256>>>(worst);
  float host[2] = {0, 0};
  cudaMemcpy(host, worst, sizeof(host), cudaMemcpyDeviceToHost);
  cudaFree(worst);
  std::printf("exp2_fma_pipe: worst relative error %.3g over [-125, 0] (float32's ulp: 1.19e-07), at most %.3g below\n",
              host[0], host[1]);
  return host[0] < 5e-7f && host[1] <= 2.36e-38f;  // 2^-125
}

}  // namespace

int main() {
  const double copy = copy_gbps();
  std::printf("copy %.0f GB/s\n", copy);
  float *seed, *y;
  cudaMalloc(&seed, 1024 * sizeof(float));
  cudaMemset(seed, 0, 1024 * sizeof(float));
  cudaMalloc(&y, sizeof(float) * kBatch * kLength * kChannels);
  time_floor<1>(seed, y, copy);
  time_floor<1, 1>(seed, y, copy);
  time_floor<1, 2>(seed, y, copy);
  time_floor<1, 3>(seed, y, copy);
  time_floor<1, 4>(seed, y, copy);
  time_floor<1, 0, 2>(seed, y, copy);
  time_floor<1, 0, 4>(seed, y, copy);
  time_floor<2>(seed, y, copy);
  time_floor<2, 0, 2>(seed, y, copy);
  time_floor<2, 0, 4>(seed, y, copy);
  time_floor<2, 1>(seed, y, copy);
  time_floor<2, 2>(seed, y, copy);
  time_floor<4>(seed, y, copy);
  time_floor<4, 0, 2>(seed, y, copy);
  time_floor<4, 1>(seed, y, copy);
  time_floor<8>(seed, y, copy);
  if (!check_exp2_fma_pipe()) return 1;
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) {
    std::printf("CUDA error: %s\n", cudaGetErrorString(status));
    return 1;
  }
  return 0;
}
