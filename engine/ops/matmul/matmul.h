// Matrix products with autograd.
#pragma once
#include <string>

#include "engine/tensor.h"

namespace engine {

// a [..., M, K] @ b [K, N] -> [..., M, N]  (b shared by every leading index), or
// a [B..., M, K] @ b [B..., K, N] -> [B..., M, N]  (equal batch dims), or
// a [M, K] @ b [K, N].
Tensor matmul(const Tensor& a, const Tensor& b);

// x [..., in] @ weight[out, in]^T + bias[out]  (PyTorch's nn.Linear layout),
// plus residual [..., out] when given (a transformer block's residual stream).
// One fused op (engine/ops/matmul/linear.cpp): on CUDA the bias is added by
// the GEMM itself (the cuBLASLt BIAS epilogue), and so is the residual (read
// as the GEMM's C matrix), and the backward computes d(bias) with the weight
// gradient's GEMM (BGRADB) or in one fused pass.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              const Tensor& residual = Tensor());

// gelu(linear(x, weight, bias)) with the exact (erf) GELU, as one op: the
// transformer MLP's fc1 + activation. The pre-activation is kept for the
// backward, which applies GELU's derivative in the same pass that prepares
// the GEMMs' input and sums d(bias).
Tensor linear_gelu(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// linear(linear_gelu(x, fc1_weight, fc1_bias), fc2_weight, fc2_bias) as one
// op: the transformer MLP. Same values and gradients as the two ops; what it
// saves is the hidden activation: the GELU writes fc2's GEMM operand directly
// (on CUDA in bf16 mode, the bfloat16 rounding fc2 would otherwise make from a
// float32 copy), and only that and the pre-activation are kept.
// With a residual, fc2 adds it as linear does.
Tensor fused_mlp(const Tensor& x, const Tensor& fc1_weight, const Tensor& fc1_bias, const Tensor& fc2_weight,
                 const Tensor& fc2_bias, const Tensor& residual = Tensor());

// The dtype in which the linear kernels read a float32 x as their GEMM
// operand on x's device: bfloat16 on a GPU in the bf16 mode (cuBLASLt path),
// else x's own. A producer whose output only feeds linears (a layer norm
// before qkv or fc1) may write it so, sparing the linear the conversion:
// linear, linear_gelu and fused_mlp take such a bfloat16 x with float32
// weights, and their x gradient is float32.
DType linear_operand_dtype(const Tensor& x);

// Floating-point operations (2·M·N·K per product) of every GEMM run so far in
// this process, forward and backward. The difference over a forward pass is
// its matrix FLOPs, which dominate a ViT's (and the mixers') cost.
int64_t gemm_flops_so_far();

// How float32 GEMMs run on a GPU (the `precision` config key): Float32, in
// full float32 (the default); or BFloat16, the mixed-precision mode: operands
// rounded to bfloat16, products accumulated and written in float32 on the
// tensor cores (cuBLAS), which is where a ViT spends its time. Activations,
// reductions, losses and optimizer state stay float32. CPU GEMMs (and
// float64 ones) are unaffected.
enum class GemmPrecision { Float32, BFloat16 };
void set_gemm_precision(GemmPrecision precision);
GemmPrecision gemm_precision();
// "fp32" or "bf16"; anything else is an error naming the value.
GemmPrecision parse_gemm_precision(const std::string& name);
// The same, for GEMMs on `device`: bf16 there needs CUDA (the CPU kernels
// compute in float32 whatever the mode), else an error naming both.
GemmPrecision parse_gemm_precision(const std::string& name, Device device);

// Sets the GEMM precision for a scope (tests, tools), restoring the previous one.
class GemmPrecisionGuard {
 public:
  explicit GemmPrecisionGuard(GemmPrecision precision) : previous_(gemm_precision()) { set_gemm_precision(precision); }
  ~GemmPrecisionGuard() { set_gemm_precision(previous_); }
  GemmPrecisionGuard(const GemmPrecisionGuard&) = delete;
  GemmPrecisionGuard& operator=(const GemmPrecisionGuard&) = delete;

 private:
  GemmPrecision previous_;
};

}  // namespace engine
