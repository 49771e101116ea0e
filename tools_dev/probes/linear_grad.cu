// linear_gelu's backward pass, g = dy * gelu'(pre) with per-chunk column sums,
// with 1 or 4 columns a thread, against a copy that reads two tensors and
// writes one; time per call in a graph of 20 back-to-back calls.
#include "probe_common.cuh"

__device__ __forceinline__ float gelu_grad(float x) {
  return 0.5f * (1.0f + erff(x * 0.70710678118654752f)) + x * 0.39894228040143268f * expf(-0.5f * x * x);
}

template <int Cols, int Lanes, int Unroll>
__global__ void scalar_pass(const float* dy, const float* pre, int rows, int cols, int chunk, float* g, float* partial) {
  const int col = blockIdx.x * Cols + threadIdx.x;
  const int first = blockIdx.y * chunk, last = min(first + chunk, rows);
  float total = 0;
  if (col < cols) {
#pragma unroll Unroll
    for (int row = first + threadIdx.y; row < last; row += Lanes) {
      const size_t i = (size_t)row * cols + col;
      const float v = dy[i] * gelu_grad(pre[i]);
      g[i] = v;
      total += v;
    }
  }
  __shared__ float lanes[Lanes][Cols + 1];
  lanes[threadIdx.y][threadIdx.x] = total;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    float sum = 0;
    for (int l = 0; l < Lanes; ++l) sum += lanes[l][threadIdx.x];
    partial[blockIdx.y * cols + col] = sum;
  }
}

// Threads of 4 columns: Cols threads across (4 Cols columns), Lanes rows.
template <int Cols, int Lanes, int Unroll>
__global__ void vector_pass(const float* dy, const float* pre, int rows, int cols, int chunk, float* g, float* partial) {
  const int col = (blockIdx.x * Cols + threadIdx.x) * 4;
  const int first = blockIdx.y * chunk, last = min(first + chunk, rows);
  float4 total = make_float4(0, 0, 0, 0);
  if (col < cols) {
#pragma unroll Unroll
    for (int row = first + threadIdx.y; row < last; row += Lanes) {
      const size_t i = (size_t)row * cols + col;
      const float4 d = *reinterpret_cast<const float4*>(dy + i), p = *reinterpret_cast<const float4*>(pre + i);
      float4 v;
      v.x = d.x * gelu_grad(p.x); v.y = d.y * gelu_grad(p.y); v.z = d.z * gelu_grad(p.z); v.w = d.w * gelu_grad(p.w);
      *reinterpret_cast<float4*>(g + i) = v;
      total.x += v.x; total.y += v.y; total.z += v.z; total.w += v.w;
    }
  }
  __shared__ float4 lanes[Lanes][Cols];
  lanes[threadIdx.y][threadIdx.x] = total;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    float4 sum = make_float4(0, 0, 0, 0);
    for (int l = 0; l < Lanes; ++l) { sum.x += lanes[l][threadIdx.x].x; sum.y += lanes[l][threadIdx.x].y; sum.z += lanes[l][threadIdx.x].z; sum.w += lanes[l][threadIdx.x].w; }
    *reinterpret_cast<float4*>(partial + blockIdx.y * cols + col) = sum;
  }
}

__global__ void copy3(const float4* a, const float4* b, float4* c, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    float4 x = a[i], y = b[i]; c[i] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
  }
}

int main() {
  cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const size_t maxn = 50432ull * 1536;
  float *dy, *pre, *g, *partial;
  CK(cudaMalloc(&dy, maxn * 4)); CK(cudaMalloc(&pre, maxn * 4)); CK(cudaMalloc(&g, maxn * 4)); CK(cudaMalloc(&partial, 8192 * 1536 * 4));
  std::vector<float> h(maxn); for (size_t i = 0; i < maxn; ++i) h[i] = ((i * 2654435761u) % 2000) / 500.0f - 2.0f;
  CK(cudaMemcpy(dy, h.data(), maxn * 4, cudaMemcpyHostToDevice)); CK(cudaMemcpy(pre, h.data(), maxn * 4, cudaMemcpyHostToDevice));
  struct Shape { int rows, cols; } shapes[] = {{16640, 768}, {50432, 1536}};
  for (auto sh : shapes) {
    const int chunk = 256, chunks = (sh.rows + chunk - 1) / chunk;
    const size_t n = (size_t)sh.rows * sh.cols;
    const double bytes = 3.0 * n * 4;
    double t_copy = per_call_us(s, [&] { copy3<<<132 * 16, 256, 0, s>>>((const float4*)dy, (const float4*)pre, (float4*)g, n / 4); }, 20);
    double t_a = per_call_us(s, [&] { scalar_pass<32, 8, 4><<<dim3(sh.cols / 32, chunks), dim3(32, 8), 0, s>>>(dy, pre, sh.rows, sh.cols, chunk, g, partial); }, 20);
    double t_d = per_call_us(s, [&] { scalar_pass<32, 8, 8><<<dim3(sh.cols / 32, chunks), dim3(32, 8), 0, s>>>(dy, pre, sh.rows, sh.cols, chunk, g, partial); }, 20);
    double t_b = per_call_us(s, [&] { vector_pass<8, 32, 4><<<dim3(sh.cols / 32, chunks), dim3(8, 32), 0, s>>>(dy, pre, sh.rows, sh.cols, chunk, g, partial); }, 20);
    double t_c = per_call_us(s, [&] { vector_pass<32, 8, 4><<<dim3(sh.cols / 128, chunks), dim3(32, 8), 0, s>>>(dy, pre, sh.rows, sh.cols, chunk, g, partial); }, 20);
    double t_e = per_call_us(s, [&] { vector_pass<16, 16, 4><<<dim3(sh.cols / 64, chunks), dim3(16, 16), 0, s>>>(dy, pre, sh.rows, sh.cols, chunk, g, partial); }, 20);
    printf("[%d x %d]: read2+write1 copy %.1f us (%.0f GB/s) | scalar 32x8 u4 %.1f (%.0f%%)  scalar u8 %.1f (%.0f%%)  vec4 8x32 %.1f (%.0f%%)  vec4 32x8 %.1f (%.0f%%)  vec4 16x16 %.1f (%.0f%%)\n",
           sh.rows, sh.cols, t_copy, bytes / t_copy / 1e3, t_a, 100 * t_copy / t_a, t_d, 100 * t_copy / t_d, t_b, 100 * t_copy / t_b,
           t_c, 100 * t_copy / t_c, t_e, 100 * t_copy / t_e);
  }
  return 0;
}
