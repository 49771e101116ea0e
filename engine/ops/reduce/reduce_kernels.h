// Kernels of the reduce family. The autograd layer permutes the reduced
// dimensions to the end and makes the input contiguous, so kernels see a
// [rows, length] matrix and reduce each row.
#pragma once
#include "engine/dispatch.h"
#include "engine/tensor.h"

namespace engine {

enum class ReduceOp { Sum, Max };

// x: [rows, length] contiguous; out: [rows]; indices: [rows] int64 (argmax,
// filled for Max only, may be undefined for Sum).
using ReduceKernel = void (*)(ReduceOp op, const Tensor& x, const Tensor& out, const Tensor& indices);
// dx: [rows, length] zeroed by the caller; dx[r, indices[r]] = dy[r].
using ScatterRowsKernel = void (*)(const Tensor& indices, const Tensor& dy, const Tensor& dx);

extern KernelSlot<ReduceKernel> reduce_kernel;
extern KernelSlot<ScatterRowsKernel> scatter_rows_kernel;

}  // namespace engine
