#include "layers/mlp.h"

#include "engine/ops/matmul/matmul.h"

namespace engine {

// fc1, the exact GELU and fc2 as one fused op (biases in the GEMMs on CUDA,
// the GELU writing fc2's operand, its derivative fused into the backward's
// pass over the gradient).
Tensor Mlp::forward(const Tensor& x, const Tensor& residual) const {
  return fused_mlp(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias, residual);
}

void Mlp::visit(const std::string& prefix, const ParamVisitor& fn) {
  fc1.visit(join_name(prefix, "fc1"), fn);
  fc2.visit(join_name(prefix, "fc2"), fn);
}

}  // namespace engine
