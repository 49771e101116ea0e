#include "layers/layernorm.h"

#include "engine/ops/matmul/matmul.h"
#include "engine/ops/norm/layernorm.h"

namespace engine {

LayerNorm::LayerNorm(int64_t dim, double eps) : weight(Tensor::ones({dim})), bias(Tensor::zeros({dim})), eps(eps) {}

Tensor LayerNorm::forward(const Tensor& x) const { return layer_norm(x, weight, bias, eps); }

Tensor LayerNorm::forward_for_linear(const Tensor& x) const {
  return layer_norm(x, weight, bias, eps, linear_operand_dtype(x));
}

std::vector<Tensor> LayerNorm::forward_passing_input(const Tensor& x, bool for_linear) const {
  return layer_norm_passing_input(x, weight, bias, eps, for_linear ? linear_operand_dtype(x) : x.dtype());
}

void LayerNorm::visit(const std::string& prefix, const ParamVisitor& fn) {
  fn(join_name(prefix, "weight"), weight);
  fn(join_name(prefix, "bias"), bias);
}

}  // namespace engine
