// Kernels of the matmul family: batched GEMM, c[i] = alpha * op(a[i]) @ op(b[i]) + beta * c[i].
#pragma once
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

}  // namespace engine
