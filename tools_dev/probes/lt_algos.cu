// Scratch probe: for the CIFAR ViT-Ti's float32 GEMMs, the time per GEMM (in a
// graph of 100 back-to-back calls) of each algorithm cuBLASLt's heuristic offers.
#include <algorithm>
#include <cstdio>
#include <vector>
#include <cuda_runtime.h>
#include <cublasLt.h>
#define CK(x) do { auto e = (x); if (e != 0) { printf("%s failed %d\n", #x, (int)e); exit(1);} } while (0)

int main() {
  cublasLtHandle_t lt; CK(cublasLtCreate(&lt));
  cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  void* ws; const size_t ws_bytes = 32 << 20; CK(cudaMalloc(&ws, ws_bytes));
  float *x, *w, *d, *bias;
  CK(cudaMalloc(&x, 16640ull * 768 * 4)); CK(cudaMalloc(&w, 768ull * 768 * 4)); CK(cudaMalloc(&d, 16640ull * 768 * 4));
  CK(cudaMalloc(&bias, 768 * 4));
  CK(cudaMemset(x, 0, 16640ull * 768 * 4)); CK(cudaMemset(w, 0, 768ull * 768 * 4)); CK(cudaMemset(bias, 0, 768 * 4));
  struct Shape { const char* name; int M, N, K; } shapes[] = {
      {"qkv b1", 65, 576, 192}, {"proj b1", 65, 192, 192}, {"fc1 b1", 65, 768, 192}, {"fc2 b1", 65, 192, 768},
      {"in_proj half b1", 65, 192, 192}, {"x_proj b1", 65, 44, 192},
      {"qkv b256", 16640, 576, 192}, {"proj b256", 16640, 192, 192}, {"fc1 b256", 16640, 768, 192}, {"fc2 b256", 16640, 192, 768}};
  for (auto sh : shapes) {
    cublasLtMatmulDesc_t desc; CK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    int32_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    CK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    uint32_t epi = CUBLASLT_EPILOGUE_BIAS;
    CK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    CK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    cublasLtMatrixLayout_t la, lb, ld;
    CK(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, sh.K, sh.N, sh.K));
    CK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, sh.K, sh.M, sh.K));
    CK(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, sh.N, sh.M, sh.N));
    cublasLtMatmulPreference_t pref; CK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t wsb = ws_bytes;
    CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof(wsb)));
    cublasLtMatmulHeuristicResult_t res[32]; int found = 0;
    CK(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, ld, ld, pref, 32, res, &found));
    printf("%s [%d x %d x %d]: %d algorithms\n", sh.name, sh.M, sh.N, sh.K, found);
    const float one = 1, zero = 0;
    const int calls = sh.M < 1000 ? 100 : 20;
    for (int i = 0; i < found; ++i) {
      auto run = [&] { return cublasLtMatmul(lt, desc, &one, w, la, x, lb, &zero, d, ld, d, ld, &res[i].algo, ws, ws_bytes, s); };
      if (run() != CUBLAS_STATUS_SUCCESS) { printf("  #%d refused\n", i); continue; }
      cudaGraph_t g; cudaGraphExec_t ge;
      CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
      for (int c = 0; c < calls; ++c) run();
      CK(cudaStreamEndCapture(s, &g)); CK(cudaGraphInstantiate(&ge, g, 0));
      for (int r = 0; r < 2; ++r) CK(cudaGraphLaunch(ge, s));
      cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
      std::vector<float> ms;
      for (int r = 0; r < 5; ++r) {
        CK(cudaEventRecord(a, s)); CK(cudaGraphLaunch(ge, s)); CK(cudaEventRecord(b, s)); CK(cudaEventSynchronize(b));
        float t; cudaEventElapsedTime(&t, a, b); ms.push_back(t);
      }
      std::sort(ms.begin(), ms.end());
      int tile = 0, splitk = 0, stages = 0; size_t sz;
      cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof(tile), &sz);
      cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof(splitk), &sz);
      cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof(stages), &sz);
      printf("  #%2d %7.2f us  tile %d splitk %d stages %d ws %zu\n", i, ms[2] / calls * 1000, tile, splitk, stages, res[i].workspaceSize);
      cudaGraphExecDestroy(ge); cudaGraphDestroy(g);
    }
  }
  return 0;
}
