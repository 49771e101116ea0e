// CPU GEMM through OpenBLAS (cblas_sgemm / cblas_dgemm), one call per batch entry,
// and the linear layer's kernels on top of it (the reference for the CUDA ones).
#include <cblas.h>

#include <vector>

#include "engine/ops/elementwise/elementwise_kernels.h"
#include "engine/ops/elementwise/elementwise_math.h"
#include "engine/ops/matmul/matmul_kernels.h"
#include "engine/ops/strided.h"
#include "engine/ops/vector_math.h"

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

// Row-major c [m, n] = op(a) [m, k] @ op(b) [k, n], float or double.
template <typename T>
void blas_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
               int64_t ldb, T* c) {
  const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
  } else {
    cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, 1.0, a, lda, b, ldb, 0.0, c, n);
  }
}

// The same BLAS call and then the same float additions as matmul(x,
// weight^T) followed by add(., bias) and add(., residual), so the result is
// identical to theirs.
// The backward reads the operands as they are.
LinearOperands linear_forward_cpu(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& residual,
                                  const Tensor& out) {
  const int64_t m = x.shape()[0], k = x.shape()[1], n = weight.shape()[0];
  dispatch_float(x.dtype(), "linear", [&](auto tag) {
    using T = decltype(tag);
    T* po = static_cast<T*>(out.raw_data());
    blas_gemm<T>(false, true, m, n, k, static_cast<const T*>(x.raw_data()), k,
                 static_cast<const T*>(weight.raw_data()), k, po);
    const T* pb = data_or_null<const T>(bias);
    const T* pr = data_or_null<const T>(residual);
    if (!pb && !pr) return;
#pragma omp parallel for if (m * n >= kParallelElements)
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        if (pb) po[i * n + j] += pb[j];
        if (pr) po[i * n + j] += pr[i * n + j];
      }
    }
  });
  return {x, weight};
}

void linear_backward_cpu(const LinearOperands& saved, const Tensor& pre, const Tensor& dy, const Tensor& dx,
                         const Tensor& dweight, const Tensor& dbias) {
  const Tensor &x = saved.x, &weight = saved.weight;
  const int64_t m = dy.shape()[0], n = dy.shape()[1], k = weight.shape()[1];
  dispatch_float(dy.dtype(), "linear_backward", [&](auto tag) {
    using T = decltype(tag);
    const T* g = static_cast<const T*>(dy.raw_data());
    Tensor scaled;  // dy * gelu'(pre), as the gelu op's backward computes it
    if (pre.defined()) {
      scaled = Tensor::empty({m, n}, dy.dtype(), dy.device());
      const T* pp = static_cast<const T*>(pre.raw_data());
      T* ps = static_cast<T*>(scaled.raw_data());
#pragma omp parallel for simd if (m * n >= kParallelElements)
      for (int64_t i = 0; i < m * n; ++i) {
        ps[i] = g[i] * elementwise_math::unary_derivative(UnaryOp::Gelu, pp[i], T(0));
      }
      g = ps;
    }
    if (dx.defined()) {  // dx [m, k] = g [m, n] @ weight [n, k]
      blas_gemm<T>(false, false, m, k, n, g, n, static_cast<const T*>(weight.raw_data()), k,
                   static_cast<T*>(dx.raw_data()));
    }
    if (dweight.defined()) {  // dweight [n, k] = g^T [n, m] @ x [m, k]
      blas_gemm<T>(true, false, n, k, m, g, n, static_cast<const T*>(x.raw_data()), k,
                   static_cast<T*>(dweight.raw_data()));
    }
    if (dbias.defined()) {
      // Column sums accumulated in double, row after row, like sum(g, {0}).
      T* pb = static_cast<T*>(dbias.raw_data());
      constexpr int64_t kColumns = 64;
#pragma omp parallel for if (m * n >= kParallelElements)
      for (int64_t first = 0; first < n; first += kColumns) {
        const int64_t count = std::min(kColumns, n - first);
        std::vector<double> totals(count, 0.0);
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t j = 0; j < count; ++j) totals[j] += g[i * n + first + j];
        }
        for (int64_t j = 0; j < count; ++j) pb[first + j] = static_cast<T>(totals[j]);
      }
    }
  });
}

Tensor gelu_operand_cpu(const Tensor& pre) {
  Tensor out = Tensor::empty_like(pre);
  unary_kernel.get(pre.device())(UnaryOp::Gelu, pre, out);
  return out;
}

}  // namespace

KernelSlot<GemmKernel> gemm_kernel{"gemm", &gemm_cpu, nullptr};
KernelSlot<LinearForwardKernel> linear_forward_kernel{"linear_forward", &linear_forward_cpu, nullptr};
KernelSlot<GeluOperandKernel> gelu_operand_kernel{"gelu_operand", &gelu_operand_cpu, nullptr};
KernelSlot<LinearBackwardKernel> linear_backward_kernel{"linear_backward", &linear_backward_cpu, nullptr};

}  // namespace engine
