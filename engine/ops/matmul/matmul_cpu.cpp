// CPU GEMM through OpenBLAS (cblas_sgemm / cblas_dgemm), one call per batch entry.
#include <cblas.h>

#include "engine/ops/matmul/matmul_kernels.h"

namespace engine {

namespace {

void gemm_cpu(const GemmOperand& a, const GemmOperand& b, const Tensor& c, int64_t batch, double alpha,
              double beta) {
  const int64_t m = c.shape()[1];
  const int64_t n = c.shape()[2];
  const int64_t k = a.cols;
  const CBLAS_TRANSPOSE ta = a.transposed ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = b.transposed ? CblasTrans : CblasNoTrans;
  dispatch_float(c.dtype(), "matmul", [&](auto tag) {
    using T = decltype(tag);
    const T* pa = static_cast<const T*>(a.tensor.raw_data());
    const T* pb = static_cast<const T*>(b.tensor.raw_data());
    T* pc = static_cast<T*>(c.raw_data());
    for (int64_t i = 0; i < batch; ++i) {
      const T* ai = pa + i * a.batch_stride;
      const T* bi = pb + i * b.batch_stride;
      T* ci = pc + i * m * n;
      if constexpr (std::is_same_v<T, float>) {
        cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, static_cast<float>(alpha), ai, a.leading_dim, bi,
                    b.leading_dim, static_cast<float>(beta), ci, n);
      } else {
        cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, ai, a.leading_dim, bi, b.leading_dim, beta, ci, n);
      }
    }
  });
}

}  // namespace

KernelSlot<GemmKernel> gemm_kernel{"gemm", &gemm_cpu, nullptr};

}  // namespace engine
