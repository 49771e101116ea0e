// CUDA GEMM through cuBLAS (strided-batched, one call per product).
//
// cuBLAS is column-major. A row-major matrix with leading dimension ld is, in
// the same memory, its transpose in column-major with the same ld; so the
// row-major product C = op(A) op(B) is computed as the column-major product
// C^T = op(B)^T op(A)^T, with B passed first. A row-major operand stored as
// is (not transposed) is then read as-is (OP_N), a transposed one with OP_T.
#include <cublas_v2.h>

#include "engine/cuda/cuda_utils.cuh"
#include "engine/cuda/device_handles.cuh"
#include "engine/ops/copy/copy_kernels.h"
#include "engine/ops/matmul/matmul.h"
#include "engine/ops/matmul/matmul_kernels.h"

namespace engine {

namespace {

void cublas_check(cublasStatus_t status, const char* what) {
  check(status == CUBLAS_STATUS_SUCCESS, "cuBLAS error in {}: {}", what, cublasGetStatusString(status));
}

// The GPU's handle (see DeviceHandles) bound to the current stream, with a
// workspace of this call's own. cublasSetStream puts the handle back on
// cuBLAS's default workspace, one buffer whichever stream a kernel runs on,
// and run_branches may queue GEMMs on two streams at once; a workspace from
// the caching allocator is never shared by work the two streams run together
// (as cuBLASLt's, engine/ops/matmul/linear.cu). The default math mode keeps
// float32 GEMMs in full float32 (no TF32), like the CPU.
struct BoundCublas {
  cublasHandle_t handle;
  Tensor workspace;  // held until the GEMM is queued; stream order keeps the next owner's work after it
};

BoundCublas bind_cublas(int device) {
  static DeviceHandles<cublasHandle_t> handles(
      "cuBLAS", [](cublasHandle_t* handle) { cublas_check(cublasCreate(handle), "cublasCreate"); });
  BoundCublas bound{handles.get(device), Tensor::empty({kGemmWorkspaceBytes}, DType::U8, Device::cuda(device))};
  cublas_check(cublasSetStream(bound.handle, current_stream()), "cublasSetStream");
  cublas_check(cublasSetWorkspace(bound.handle, bound.workspace.raw_data(), kGemmWorkspaceBytes),
               "cublasSetWorkspace");
  return bound;
}

cublasOperation_t cublas_op(const GemmOperand& operand) { return operand.transposed ? CUBLAS_OP_T : CUBLAS_OP_N; }

// The memory an operand's GEMM reads, as a flat float32 view from its first
// element to its last (the gaps of a leading dimension above the row length
// come along): [batch - 1 strides] + [rows - 1 leading dims] + one row.
Tensor operand_span(const GemmOperand& x, int64_t batch) {
  const int64_t stored_rows = x.transposed ? x.cols : x.rows, stored_cols = x.transposed ? x.rows : x.cols;
  const int64_t span = (batch - 1) * x.batch_stride + (stored_rows - 1) * x.leading_dim + stored_cols;
  return make_view(x.tensor, {span}, {1}, x.tensor.offset());  // the offset is the storage's, not the view's
}

// Mixed precision: the operands rounded to bfloat16 (same layout), the
// product accumulated and written in float32 on the tensor cores.
void gemm_bf16_inputs(cublasHandle_t handle, const GemmOperand& a, const GemmOperand& b, float* c, int64_t m,
                      int64_t n, int64_t k, int64_t batch, float alpha, float beta) {
  const Tensor a16 = operand_span(a, batch).to(DType::BF16), b16 = operand_span(b, batch).to(DType::BF16);
  cublas_check(cublasGemmStridedBatchedEx_64(handle, cublas_op(b), cublas_op(a), n, m, k, &alpha, b16.raw_data(),
                                             CUDA_R_16BF, b.leading_dim, b.batch_stride, a16.raw_data(),
                                             CUDA_R_16BF, a.leading_dim, a.batch_stride, &beta, c, CUDA_R_32F, n,
                                             m * n, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "cublasGemmStridedBatchedEx (bf16 inputs)");
}

void gemm_cuda(const GemmOperand& a, const GemmOperand& b, const Tensor& c, int64_t batch, double alpha,
               double beta) {
  DeviceGuard guard(c);
  const int64_t m = c.shape()[1], n = c.shape()[2], k = a.cols;
  const int64_t c_stride = m * n;
  dispatch_float(c.dtype(), "matmul", [&](auto tag) {
    using T = decltype(tag);
    T* pc = mutable_data_of<T>(c);
    if (k == 0) {
      // An empty inner dimension: C = beta C. cuBLAS would reject the leading
      // dimensions of the empty operands, so do it here (beta is 0 in every
      // caller that can get here: linear's accumulating GEMM never has K = 0).
      check(beta == 0.0, "matmul: an empty inner dimension with beta != 0 is not supported on CUDA");
      fill_kernel.get(c.device())(c, 0.0);
      return;
    }
    const T alpha_t = static_cast<T>(alpha), beta_t = static_cast<T>(beta);
    const BoundCublas cublas = bind_cublas(c.device().index);
    const cublasHandle_t handle = cublas.handle;
    // Column-major C^T [n, m] = op(B)^T [n, k] x op(A)^T [k, m], ldc = n.
    if constexpr (std::is_same_v<T, float>) {
      if (gemm_precision() == GemmPrecision::BFloat16) {
        gemm_bf16_inputs(handle, a, b, pc, m, n, k, batch, alpha_t, beta_t);
        return;
      }
      cublas_check(cublasSgemmStridedBatched_64(handle, cublas_op(b), cublas_op(a), n, m, k, &alpha_t,
                                                data_of<T>(b.tensor), b.leading_dim, b.batch_stride,
                                                data_of<T>(a.tensor), a.leading_dim, a.batch_stride, &beta_t, pc,
                                                n, c_stride, batch),
                   "cublasSgemmStridedBatched");
    } else {
      cublas_check(cublasDgemmStridedBatched_64(handle, cublas_op(b), cublas_op(a), n, m, k, &alpha_t,
                                                data_of<T>(b.tensor), b.leading_dim, b.batch_stride,
                                                data_of<T>(a.tensor), a.leading_dim, a.batch_stride, &beta_t, pc,
                                                n, c_stride, batch),
                   "cublasDgemmStridedBatched");
    }
  });
}

const bool registered = [] {
  gemm_kernel.cuda = &gemm_cuda;
  return true;
}();

}  // namespace

}  // namespace engine
