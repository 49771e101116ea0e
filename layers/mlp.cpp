#include "layers/mlp.h"

#include "engine/ops/matmul/matmul.h"

namespace engine {

// fc1 and the exact GELU as one fused op (bias in the GEMM on CUDA, the
// GELU derivative fused into the backward's pass over the gradient).
Tensor Mlp::forward(const Tensor& x) const { return fc2.forward(linear_gelu(x, fc1.weight, fc1.bias)); }

void Mlp::visit(const std::string& prefix, const ParamVisitor& fn) {
  fc1.visit(join_name(prefix, "fc1"), fn);
  fc2.visit(join_name(prefix, "fc2"), fn);
}

}  // namespace engine
