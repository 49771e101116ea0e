// For the CIFAR ViT-Ti's float32 GEMMs (batch 1 and 256, with mamba's x_proj),
// the time per GEMM of each algorithm cuBLASLt's heuristic offers, in a graph
// of back-to-back calls: is the heuristic's first choice the fastest?
#include "probe_common.cuh"

int main() {
  cublasLtHandle_t lt;
  CK(cublasLtCreate(&lt));
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const size_t ws_bytes = 32 << 20;
  void* ws;
  CK(cudaMalloc(&ws, ws_bytes));
  float *x, *w, *d, *bias;
  CK(cudaMalloc(&x, 16640ull * 768 * 4));
  CK(cudaMalloc(&w, 768ull * 768 * 4));
  CK(cudaMalloc(&d, 16640ull * 768 * 4));
  CK(cudaMalloc(&bias, 768 * 4));
  CK(cudaMemset(x, 0, 16640ull * 768 * 4));
  CK(cudaMemset(w, 0, 768ull * 768 * 4));
  CK(cudaMemset(bias, 0, 768 * 4));
  struct Shape {
    const char* name;
    int M, N, K;
  } shapes[] = {{"qkv b1", 65, 576, 192},         {"proj b1", 65, 192, 192},      {"fc1 b1", 65, 768, 192},
                {"fc2 b1", 65, 192, 768},         {"in_proj half b1", 65, 192, 192}, {"x_proj b1", 65, 44, 192},
                {"qkv b256", 16640, 576, 192},    {"proj b256", 16640, 192, 192}, {"fc1 b256", 16640, 768, 192},
                {"fc2 b256", 16640, 192, 768}};
  for (const Shape& sh : shapes) {
    const LtLinear linear(sh.M, sh.N, sh.K, bias, ws_bytes);
    const auto algorithms = linear.algorithms(lt, 32);
    std::printf("%s [%d x %d x %d]: %zu algorithms\n", sh.name, sh.M, sh.N, sh.K, algorithms.size());
    const int calls = sh.M < 1000 ? 100 : 20;
    for (size_t i = 0; i < algorithms.size(); ++i) {
      auto run = [&] { return linear.run(lt, algorithms[i].algo, w, x, d, ws, ws_bytes, s); };
      if (run() != CUBLAS_STATUS_SUCCESS) {
        std::printf("  #%zu refused\n", i);
        continue;
      }
      const double us = per_call_us(s, run, calls);
      int tile = 0, splitk = 0, stages = 0;
      size_t size = 0;
      cublasLtMatmulAlgoConfigGetAttribute(&algorithms[i].algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof(tile), &size);
      cublasLtMatmulAlgoConfigGetAttribute(&algorithms[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk,
                                           sizeof(splitk), &size);
      cublasLtMatmulAlgoConfigGetAttribute(&algorithms[i].algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages,
                                           sizeof(stages), &size);
      std::printf("  #%2zu %7.2f us  tile %d splitk %d stages %d ws %zu\n", i, us, tile, splitk, stages,
                  algorithms[i].workspaceSize);
    }
  }
  return 0;
}
