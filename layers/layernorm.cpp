#include "layers/layernorm.h"

#include "engine/ops/norm/layernorm.h"

namespace engine {

LayerNorm::LayerNorm(int64_t dim, double eps) : weight(Tensor::ones({dim})), bias(Tensor::zeros({dim})), eps(eps) {}

Tensor LayerNorm::forward(const Tensor& x) const { return layer_norm(x, weight, bias, eps); }

void LayerNorm::visit(const std::string& prefix, const ParamVisitor& fn) {
  fn(join_name(prefix, "weight"), weight);
  fn(join_name(prefix, "bias"), bias);
}

}  // namespace engine
