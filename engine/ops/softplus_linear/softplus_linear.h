// softplus(x @ weight^T + bias) as one op: a linear layer with few inputs
// followed by softplus, such as Mamba's dt path (dt_proj: dt_rank = ceil(dim / 16)
// inputs to d_inner outputs, then softplus).
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace engine {

// The widest input (K) that the fused kernels take.
constexpr int64_t kSoftplusLinearMaxInputs = 64;

// softplus(x @ weight^T + bias) for x [..., K], weight [N, K], bias [N] (or
// undefined), one dtype and device; softplus as the engine's softplus op
// (x > 20 ? x : log1p(exp(x))). float32 and float64 inputs with
// 1 <= K <= kSoftplusLinearMaxInputs run as one kernel that reads x in place
// when its rows of K elements are contiguous and one stride apart (a
// contiguous tensor, or a narrow/split of a wider last dimension, such as
// Mamba's dt rows of x_proj's output), and writes the output once; the
// backward starts from that output (softplus'(pre) = sigmoid(pre) = 1 - exp(-y))
// and runs linear's backward GEMMs. Anything else (wider K, empty sizes,
// 16-bit dtypes) runs as softplus(linear(x, weight, bias)), the same values to
// rounding. The fused forward computes in the op's dtype also in the bf16
// GEMM mode (K is too small for the tensor cores to matter).
Tensor softplus_linear(const Tensor& x, const Tensor& weight, const Tensor& bias);

}  // namespace engine
