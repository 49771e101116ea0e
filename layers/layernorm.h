// LayerNorm module over the last dimension (elementwise affine).
#pragma once
#include <vector>

#include "layers/module.h"

namespace engine {

struct LayerNorm {
  Tensor weight, bias;
  double eps = 1e-6;

  LayerNorm() = default;
  LayerNorm(int64_t dim, double eps);
  Tensor forward(const Tensor& x) const;
  // The output for linears that it alone feeds: in their GEMM operand's dtype
  // (bfloat16 on a GPU in bf16 mode, linear_operand_dtype), same values.
  Tensor forward_for_linear(const Tensor& x) const;
  // A residual stream's norm: {x passed on, the output} (for_linear: the
  // output as forward_for_linear writes it). x's two gradients, through the
  // norm and through the passed-on x, are summed by the norm's backward
  // (layer_norm_passing_input).
  std::vector<Tensor> forward_passing_input(const Tensor& x, bool for_linear) const;
  void visit(const std::string& prefix, const ParamVisitor& fn);
  bool defined() const { return weight.defined(); }
};

}  // namespace engine
