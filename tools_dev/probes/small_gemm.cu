// Small-M float32 GEMMs with bias (out = x W^T + b, M = 65: the CIFAR ViT-Ti
// at batch 1) as shared-memory tiles, against cuBLASLt's heuristic pick; time
// per call in a graph of 100 back-to-back calls.
#include <cmath>

#include "probe_common.cuh"

// Block: TM rows x TN cols of out; 256 threads, each RM x RN outputs. K in chunks of KC through shared memory.
template <int TM, int TN, int KC>
__global__ void __launch_bounds__(256) small_gemm(const float* __restrict__ x, const float* __restrict__ w,
                                                  const float* __restrict__ b, float* __restrict__ out, int M, int N, int K) {
  constexpr int RM = TM / 16, RN = TN / 16;  // 16 x 16 threads
  __shared__ float xs[KC][TM + 1], ws[KC][TN + 1];
  const int tr = threadIdx.x / 16, tc = threadIdx.x % 16;
  const int row0 = blockIdx.y * TM, col0 = blockIdx.x * TN;
  float acc[RM][RN] = {};
  for (int k0 = 0; k0 < K; k0 += KC) {
    for (int i = threadIdx.x; i < TM * KC; i += 256) {
      const int r = i / KC, k = i % KC;
      xs[k][r] = (row0 + r < M && k0 + k < K) ? x[(size_t)(row0 + r) * K + k0 + k] : 0.f;
    }
    for (int i = threadIdx.x; i < TN * KC; i += 256) {
      const int c = i / KC, k = i % KC;
      ws[k][c] = (col0 + c < N && k0 + k < K) ? w[(size_t)(col0 + c) * K + k0 + k] : 0.f;
    }
    __syncthreads();
#pragma unroll 8
    for (int k = 0; k < KC; ++k) {
      float xv[RM], wv[RN];
      for (int i = 0; i < RM; ++i) xv[i] = xs[k][tr + 16 * i];
      for (int j = 0; j < RN; ++j) wv[j] = ws[k][tc + 16 * j];
      for (int i = 0; i < RM; ++i)
        for (int j = 0; j < RN; ++j) acc[i][j] = fmaf(xv[i], wv[j], acc[i][j]);
    }
    __syncthreads();
  }
  for (int i = 0; i < RM; ++i)
    for (int j = 0; j < RN; ++j) {
      const int r = row0 + tr + 16 * i, c = col0 + tc + 16 * j;
      if (r < M && c < N) out[(size_t)r * N + c] = acc[i][j] + b[c];
    }
}

template <int TM, int TN, int KC>
void launch(cudaStream_t s, const float* x, const float* w, const float* b, float* o, int M, int N, int K) {
  dim3 grid((N + TN - 1) / TN, (M + TM - 1) / TM);
  small_gemm<TM, TN, KC><<<grid, 256, 0, s>>>(x, w, b, o, M, N, K);
}

int main() {
  cublasLtHandle_t lt; CK(cublasLtCreate(&lt));
  cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  void* ws; const size_t ws_bytes = 32 << 20; CK(cudaMalloc(&ws, ws_bytes));
  const int maxe = 256 * 768;
  std::vector<float> hx(maxe), hw(768 * 768), hb(768);
  for (auto& v : hx) v = (rand() % 2001 - 1000) / 1000.f;
  for (auto& v : hw) v = (rand() % 2001 - 1000) / 1000.f;
  for (auto& v : hb) v = (rand() % 2001 - 1000) / 1000.f;
  float *x, *w, *d, *o, *bias;
  CK(cudaMalloc(&x, maxe * 4)); CK(cudaMalloc(&w, 768 * 768 * 4)); CK(cudaMalloc(&d, maxe * 4 * 4)); CK(cudaMalloc(&o, maxe * 4 * 4));
  CK(cudaMalloc(&bias, 768 * 4));
  CK(cudaMemcpy(x, hx.data(), maxe * 4, cudaMemcpyHostToDevice)); CK(cudaMemcpy(w, hw.data(), 768 * 768 * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(bias, hb.data(), 768 * 4, cudaMemcpyHostToDevice));
  struct Shape { const char* name; int M, N, K; } shapes[] = {
      {"qkv b1", 65, 576, 192}, {"proj b1", 65, 192, 192}, {"fc1 b1", 65, 768, 192}, {"fc2 b1", 65, 192, 768},
      {"x_proj b1", 65, 44, 192}, {"ViT-S qkv b1", 197, 1152, 384}, {"ViT-S fc2 b1", 197, 384, 1536}};
  for (auto sh : shapes) {
    if (sh.M * sh.K > maxe || sh.N * sh.K > 768 * 768) {
      // ViT-S shapes need bigger buffers
      cudaFree(x); cudaFree(w); CK(cudaMalloc(&x, sh.M * sh.K * 4)); CK(cudaMalloc(&w, sh.N * sh.K * 4));
      CK(cudaMemset(x, 0, sh.M * sh.K * 4)); CK(cudaMemset(w, 0, sh.N * sh.K * 4));
      cudaFree(bias); CK(cudaMalloc(&bias, sh.N * 4)); CK(cudaMemset(bias, 0, sh.N * 4));
      cudaFree(d); cudaFree(o); CK(cudaMalloc(&d, sh.M * sh.N * 4)); CK(cudaMalloc(&o, sh.M * sh.N * 4));
    }
    const LtLinear linear(sh.M, sh.N, sh.K, bias, ws_bytes);
    const cublasLtMatmulAlgo_t algo = linear.algorithms(lt, 1).at(0).algo;
    auto lt_run = [&] { linear.run(lt, algo, w, x, d, ws, ws_bytes, s); };
    const double t_lt = per_call_us(s, lt_run, 100);
    const double t_a = per_call_us(s, [&] { launch<32, 32, 32>(s, x, w, bias, o, sh.M, sh.N, sh.K); }, 100);
    const double t_b = per_call_us(s, [&] { launch<16, 32, 32>(s, x, w, bias, o, sh.M, sh.N, sh.K); }, 100);
    const double t_c = per_call_us(s, [&] { launch<32, 64, 32>(s, x, w, bias, o, sh.M, sh.N, sh.K); }, 100);
    const double t_d = per_call_us(s, [&] { launch<16, 16, 64>(s, x, w, bias, o, sh.M, sh.N, sh.K); }, 100);
    // check
    std::vector<float> r1(sh.M * sh.N), r2(sh.M * sh.N);
    lt_run(); launch<32, 32, 32>(s, x, w, bias, o, sh.M, sh.N, sh.K); CK(cudaStreamSynchronize(s));
    CK(cudaMemcpy(r1.data(), d, r1.size() * 4, cudaMemcpyDeviceToHost)); CK(cudaMemcpy(r2.data(), o, r2.size() * 4, cudaMemcpyDeviceToHost));
    double err = 0; for (size_t i = 0; i < r1.size(); ++i) err = std::max(err, (double)std::fabs(r1[i] - r2[i]));
    printf("%-14s [%4d x %4d x %4d]  cuBLASLt %.2f us | 32x32 %.2f  16x32 %.2f  32x64 %.2f  16x16/k64 %.2f us  (max diff %.2e)\n",
           sh.name, sh.M, sh.N, sh.K, t_lt, t_a, t_b, t_c, t_d, err);
  }
  return 0;
}
