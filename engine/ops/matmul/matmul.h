// Matrix products with autograd.
#pragma once
#include "engine/tensor.h"

namespace engine {

// a [..., M, K] @ b [K, N] -> [..., M, N]  (b shared by every leading index), or
// a [B..., M, K] @ b [B..., K, N] -> [B..., M, N]  (equal batch dims), or
// a [M, K] @ b [K, N].
Tensor matmul(const Tensor& a, const Tensor& b);

// x [..., in] @ weight[out, in]^T + bias[out]  (PyTorch's nn.Linear layout).
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// Floating-point operations (2·M·N·K per product) of every GEMM run so far in
// this process, forward and backward. The difference over a forward pass is
// its matrix FLOPs, which dominate a ViT's (and the mixers') cost.
int64_t gemm_flops_so_far();

}  // namespace engine
