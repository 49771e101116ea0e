// Time per dependent kernel in a CUDA graph, with and without programmatic
// dependent launch (PDL): a wait at the top of each kernel, and an early
// trigger; then a cuBLAS GEMM (a batch-1 qkv) followed by an element-wise kernel.
#include <cublas_v2.h>

#include "probe_common.cuh"

template <int Mode>  // 0 plain, 1 wait at top, 2 trigger then wait at top
__global__ void step(float* buf, int n) {
  if (Mode == 2) asm volatile("griddepcontrol.launch_dependents;");
  if (Mode >= 1) asm volatile("griddepcontrol.wait;" ::: "memory");
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) buf[i] = buf[i] * 0.5f + 1.0f;
}

template <int Mode>
void launch(cudaStream_t s, float* buf, int n, int blocks, int threads, bool pdl) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = blocks; cfg.blockDim = threads; cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = pdl ? 1 : 0;
  cfg.attrs = attr; cfg.numAttrs = 1;
  CK(cudaLaunchKernelEx(&cfg, step<Mode>, buf, n));
}

// Microseconds per kernel of body(), which launches `kernels` kernels.
template <typename Body>
double per_kernel_us(cudaStream_t s, Body body, int kernels) {
  return per_call_us(s, body, 1) / kernels;
}

int main() {
  cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  float *buf, *A, *B, *C;
  const int n = 1 << 20;
  CK(cudaMalloc(&buf, n * 4)); CK(cudaMemset(buf, 0, n * 4));
  CK(cudaMalloc(&A, 65 * 1536 * 4)); CK(cudaMalloc(&B, 1536 * 1536 * 4)); CK(cudaMalloc(&C, 65 * 1536 * 4));
  CK(cudaMemset(A, 0, 65 * 1536 * 4)); CK(cudaMemset(B, 0, 1536 * 1536 * 4));
  cublasHandle_t h; cublasCreate(&h); cublasSetStream(h, s);
  const int K = 200;
  struct Shape { int elems, blocks, threads; } shapes[] = {{128, 1, 128}, {65 * 192, 48, 256}, {65 * 768, 132, 256}, {256 * 65 * 192, 1024, 256}};
  for (auto sh : shapes) {
    double plain = per_kernel_us(s, [&] { for (int i = 0; i < K; ++i) launch<0>(s, buf, sh.elems, sh.blocks, sh.threads, false); }, K);
    double wait = per_kernel_us(s, [&] { for (int i = 0; i < K; ++i) launch<1>(s, buf, sh.elems, sh.blocks, sh.threads, true); }, K);
    double trig = per_kernel_us(s, [&] { for (int i = 0; i < K; ++i) launch<2>(s, buf, sh.elems, sh.blocks, sh.threads, true); }, K);
    printf("elementwise elems=%d blocks=%d: plain %.2f us, pdl+wait %.2f us, pdl+trigger+wait %.2f us per kernel\n", sh.elems, sh.blocks, plain, wait, trig);
  }
  // GEMM (65 x 576 x 192, a b1 qkv) followed by one element-wise kernel, repeated.
  const float one = 1, zero = 0;
  auto gemm = [&] { cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 576, 65, 192, &one, B, 576, A, 192, &zero, C, 576); };
  for (int mode = 0; mode < 3; ++mode) {
    double t = per_kernel_us(s, [&] {
      for (int i = 0; i < K / 2; ++i) {
        gemm();
        if (mode == 0) launch<0>(s, C, 65 * 576, 48, 256, false);
        else if (mode == 1) launch<1>(s, C, 65 * 576, 48, 256, true);
        else launch<2>(s, C, 65 * 576, 48, 256, true);
      }
    }, K);
    printf("gemm+elementwise pairs mode %d: %.2f us per kernel\n", mode, t);
  }
  double gemms = per_kernel_us(s, [&] { for (int i = 0; i < K; ++i) gemm(); }, K);
  printf("gemm chain: %.2f us per gemm\n", gemms);
  int v; cublasGetVersion(h, &v); int rt; cudaRuntimeGetVersion(&rt); int dr; cudaDriverGetVersion(&dr);
  printf("cublas %d runtime %d driver %d\n", v, rt, dr);
  return 0;
}
