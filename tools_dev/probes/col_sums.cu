// Column sums of a [rows, n] matrix of partial sums (the layer norm's and
// linear's parameter gradients): layouts of the engine's split kernel
// (sum_partial_rows), time per call in a graph of 100 back-to-back calls.
#include "probe_common.cuh"

template <int Warps, int Unroll>
__global__ void __launch_bounds__(Warps * 32) split_sum(const float* part, int rows, int n, float* out) {
  __shared__ float warp_sums[Warps][32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int i = blockIdx.x * 32 + lane;
  float acc = 0;
  if (i < n) {
#pragma unroll Unroll
    for (int r = warp; r < rows; r += Warps) acc += part[(size_t)r * n + i];
  }
  warp_sums[warp][lane] = acc;
  __syncthreads();
  if (warp == 0 && i < n) {
    float total = warp_sums[0][lane];
    for (int w = 1; w < Warps; ++w) total += warp_sums[w][lane];
    out[i] = total;
  }
}

// Lanes as 8 columns x 4 rows: 4x the blocks.
template <int Warps, int Unroll>
__global__ void __launch_bounds__(Warps * 32) narrow_sum(const float* part, int rows, int n, float* out) {
  __shared__ float sums[Warps * 4][8];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, col = lane % 8, sub = lane / 8;
  const int i = blockIdx.x * 8 + col;
  float acc = 0;
  if (i < n) {
#pragma unroll Unroll
    for (int r = warp * 4 + sub; r < rows; r += Warps * 4) acc += part[(size_t)r * n + i];
  }
  sums[warp * 4 + sub][col] = acc;
  __syncthreads();
  if (threadIdx.x < 8 && i < n) {
    float total = 0;
    for (int w = 0; w < Warps * 4; ++w) total += sums[w][col];
    out[i] = total;
  }
}

__global__ void column_total(const float* partial, int chunks, int cols, float* out) {
  for (int col = blockIdx.x * blockDim.x + threadIdx.x; col < cols; col += gridDim.x * blockDim.x) {
    float sum = 0;
    for (int c = 0; c < chunks; ++c) sum += partial[(size_t)c * cols + col];
    out[col] = sum;
  }
}

int main() {
  cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  float *part, *out;
  CK(cudaMalloc(&part, 4096 * 1536 * 4)); CK(cudaMalloc(&out, 1536 * 4)); CK(cudaMemset(part, 0, 4096 * 1536 * 4));

  struct Shape { int rows, n; } shapes[] = {{1024, 192}, {1024, 384}, {1024, 768}, {65, 768}, {65, 1536}, {130, 384}};
  for (auto sh : shapes) {
    auto blocks = [&](int cols_per_block) { return (sh.n + cols_per_block - 1) / cols_per_block; };
    const int calls = 100;
    double v0 = per_call_us(s, [&] { split_sum<16, 4><<<blocks(32), 512, 0, s>>>(part, sh.rows, sh.n, out); }, calls);
    double v1 = per_call_us(s, [&] { split_sum<16, 16><<<blocks(32), 512, 0, s>>>(part, sh.rows, sh.n, out); }, calls);
    double v2 = per_call_us(s, [&] { split_sum<32, 8><<<blocks(32), 1024, 0, s>>>(part, sh.rows, sh.n, out); }, calls);
    double v3 = per_call_us(s, [&] { narrow_sum<16, 4><<<blocks(8), 512, 0, s>>>(part, sh.rows, sh.n, out); }, calls);
    double v4 = per_call_us(s, [&] { narrow_sum<16, 8><<<blocks(8), 512, 0, s>>>(part, sh.rows, sh.n, out); }, calls);
    double v5 = per_call_us(s, [&] { narrow_sum<8, 8><<<blocks(8), 256, 0, s>>>(part, sh.rows, sh.n, out); }, calls);
    double ct = per_call_us(s, [&] { column_total<<<(sh.n + 255) / 256, 256, 0, s>>>(part, sh.rows, sh.n, out); }, calls);
    double empty = per_call_us(s, [&] { column_total<<<1, 32, 0, s>>>(part, 0, 0, out); }, calls);
    printf("[%4d x %4d]: split16x4 %.2f  split16x16 %.2f  split32x8 %.2f  narrow16x4 %.2f  narrow16x8 %.2f  narrow8x8 %.2f  column_total %.2f  (empty kernel %.2f) us\n",
           sh.rows, sh.n, v0, v1, v2, v3, v4, v5, ct, empty);
  }
  return 0;
}
