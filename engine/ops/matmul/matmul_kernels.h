// Kernels of the matmul family: batched GEMM, c[i] = alpha * op(a[i]) @ op(b[i]) + beta * c[i],
// and the fused linear layer (GEMM + bias, optionally + exact GELU), forward and backward.
#pragma once
#include <atomic>
#include <cstdint>

#include "engine/dispatch.h"
#include "engine/tensor.h"

namespace engine {

// One operand of a batched GEMM: a [batch, rows, cols] row-major matrix stack
// (batch_stride 0 repeats one matrix for every batch entry), optionally read
// transposed, which is how transposed views reach the kernel without a copy.
struct GemmOperand {
  Tensor tensor;             // data pointer = tensor.raw_data()
  bool transposed = false;   // use op(x) = x^T
  int64_t rows = 0, cols = 0;  // of op(x), the matrix the product uses
  int64_t leading_dim = 0;     // elements between consecutive stored rows
  int64_t batch_stride = 0;    // elements between consecutive matrices
};

// c: contiguous [batch, M, N]; op(a): [M, K]; op(b): [K, N].
using GemmKernel = void (*)(const GemmOperand& a, const GemmOperand& b, const Tensor& c, int64_t batch,
                            double alpha, double beta);

extern KernelSlot<GemmKernel> gemm_kernel;

// The operands that a linear's GEMMs read: x [M, K] and weight [N, K] as the
// op passed them or, in the CUDA kernels' bf16 GEMM mode, their bfloat16
// roundings. The forward kernel returns the ones it made and the op keeps them
// for the backward kernel, which so reads the forward's values without
// rounding them again (and without x's float32 copy, which may then be freed).
struct LinearOperands {
  Tensor x, weight;
};

// out [M, N] = x [M, K] @ weight [N, K]^T + bias [N] + residual [M, N]
// (bias and residual may be undefined; residual is not out). All contiguous,
// one dtype (out the weight's), except that on CUDA x may be the bfloat16
// operand of float32 weights (linear_operand_dtype); M, N, K > 0 (the op
// handles empty sizes).
// Returns the operands for the backward (see LinearOperands).
// CUDA: one cuBLASLt matmul whose BIAS epilogue adds the bias and which reads
// the residual as its C matrix (beta = 1): a block's residual add costs no
// pass of its own.
using LinearForwardKernel = LinearOperands (*)(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                               const Tensor& residual, const Tensor& out);

// The gradients of out = f(x @ weight^T + bias) given dy = d(loss)/d(out)
// [M, N], where f is the identity (pre undefined) or the exact GELU applied to
// pre [M, N], the saved pre-activation: with g = dy * f'(pre),
//   dx [M, K] = g @ weight,  dweight [N, K] = g^T @ x,  dbias [N] = column sums of g.
// x and weight are what the forward kernel returned (saved.x may be undefined
// when dweight is). An undefined output is not computed. All contiguous, the
// outputs freshly allocated by the caller in dy's dtype; M, N, K > 0.
using LinearBackwardKernel = void (*)(const LinearOperands& saved, const Tensor& pre, const Tensor& dy,
                                      const Tensor& dx, const Tensor& dweight, const Tensor& dbias);

// The exact GELU of pre [M, H] (contiguous) as the x operand of a following
// linear, freshly allocated: in pre's dtype, or, in the CUDA kernels' bf16
// GEMM mode, straight as the bfloat16 rounding that the linear kernels would
// make of the float32 GELU (the same values: GELU in float32, then rounded to
// nearest even). The linear kernels take such an operand as they take their
// own roundings.
using GeluOperandKernel = Tensor (*)(const Tensor& pre);

// The workspace a CUDA GEMM gets from the caching allocator, per call (cuBLAS)
// or at most (cuBLASLt's heuristics): what NVIDIA advises for Hopper.
constexpr int64_t kGemmWorkspaceBytes = int64_t{32} << 20;

extern KernelSlot<LinearForwardKernel> linear_forward_kernel;
extern KernelSlot<LinearBackwardKernel> linear_backward_kernel;
extern KernelSlot<GeluOperandKernel> gelu_operand_kernel;

// Adds to gemm_flops_so_far() (the fused linear counts its GEMMs itself).
void add_gemm_flops(int64_t flops);

// How the CUDA linears ran, for the tests (process totals).
struct LinearPathCounters {
  std::atomic<int64_t> lt_matmuls{0};        // cuBLASLt matmuls run
  std::atomic<int64_t> lt_bias{0};           // ... of which with the BIAS epilogue
  std::atomic<int64_t> lt_bias_grad{0};      // ... of which with the BGRADB epilogue
  std::atomic<int64_t> lt_plans{0};          // heuristic queries: new shape/dtype/epilogue/alignment
  std::atomic<int64_t> lt_rejected{0};       // GEMMs cuBLASLt had no algorithm for (run by cuBLAS)
};
LinearPathCounters& linear_path_counters();

// For a GPU test of the finding in linear.cu: cuBLASLt's GELU epilogue
// applied to x (float32 [512] on a GPU, values exact in bfloat16), or an
// undefined tensor when cuBLASLt offers no algorithm for it. Null in builds
// without CUDA.
extern Tensor (*cublaslt_gelu_epilogue_probe)(const Tensor& x);

// cuBLASLt on (the default) or off (every linear GEMM through the cuBLAS
// path, the bias added and summed by separate kernels): tests run both.
void set_cublaslt_enabled(bool enabled);
bool cublaslt_enabled();

}  // namespace engine
