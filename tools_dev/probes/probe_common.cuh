// What the probes share: error checks, the time per call of a CUDA graph of
// back-to-back calls, and a float32 cuBLASLt linear layer (out = x W^T + b in
// the engine's layout).
#pragma once
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <cublasLt.h>
#include <cuda_runtime.h>

#define CK(x)                                                              \
  do {                                                                     \
    const auto status = (x);                                               \
    if (status != 0) {                                                     \
      std::printf("%s failed (%d) at line %d\n", #x, (int)status, __LINE__); \
      std::exit(1);                                                        \
    }                                                                      \
  } while (0)

// Captures `calls` calls of run() as one graph, replays it twice to warm up,
// then five times timed; the median replay's microseconds per call.
template <typename Run>
double per_call_us(cudaStream_t stream, Run run, int calls) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
  for (int c = 0; c < calls; ++c) run();
  CK(cudaStreamEndCapture(stream, &graph));
  CK(cudaGraphInstantiate(&exec, graph, 0));
  for (int r = 0; r < 2; ++r) CK(cudaGraphLaunch(exec, stream));
  cudaEvent_t start, stop;
  CK(cudaEventCreate(&start));
  CK(cudaEventCreate(&stop));
  std::vector<float> ms;
  for (int r = 0; r < 5; ++r) {
    CK(cudaEventRecord(start, stream));
    CK(cudaGraphLaunch(exec, stream));
    CK(cudaEventRecord(stop, stream));
    CK(cudaEventSynchronize(stop));
    float t = 0;
    CK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  CK(cudaGraphExecDestroy(exec));
  CK(cudaGraphDestroy(graph));
  return ms[2] / calls * 1000.0;
}

// out [M, N] = x [M, K] W [N, K]^T + bias, row-major, through cuBLASLt with
// the BIAS epilogue (column-major: out^T = op_T(W) x^T), float32 throughout.
struct LtLinear {
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t w_layout, x_layout, out_layout;
  cublasLtMatmulPreference_t preference;

  LtLinear(int M, int N, int K, const float* bias, size_t workspace_bytes) {
    CK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const int32_t transpose = CUBLAS_OP_T, keep = CUBLAS_OP_N;
    CK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)));
    CK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &keep, sizeof(keep)));
    const uint32_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    CK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    CK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    CK(cublasLtMatrixLayoutCreate(&w_layout, CUDA_R_32F, K, N, K));
    CK(cublasLtMatrixLayoutCreate(&x_layout, CUDA_R_32F, K, M, K));
    CK(cublasLtMatrixLayoutCreate(&out_layout, CUDA_R_32F, N, M, N));
    CK(cublasLtMatmulPreferenceCreate(&preference));
    const uint64_t bytes = workspace_bytes;
    CK(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &bytes,
                                            sizeof(bytes)));
  }

  // The heuristic's algorithms, best first (at most `count`).
  std::vector<cublasLtMatmulHeuristicResult_t> algorithms(cublasLtHandle_t lt, int count) const {
    std::vector<cublasLtMatmulHeuristicResult_t> results(count);
    int found = 0;
    CK(cublasLtMatmulAlgoGetHeuristic(lt, desc, w_layout, x_layout, out_layout, out_layout, preference, count,
                                      results.data(), &found));
    results.resize(found);
    return results;
  }

  cublasStatus_t run(cublasLtHandle_t lt, const cublasLtMatmulAlgo_t& algo, const float* w, const float* x, float* out,
                     void* workspace, size_t workspace_bytes, cudaStream_t stream) const {
    const float one = 1, zero = 0;
    return cublasLtMatmul(lt, desc, &one, w, w_layout, x, x_layout, &zero, out, out_layout, out, out_layout, &algo,
                          workspace, workspace_bytes, stream);
  }
};
