#include "layers/linear.h"

#include "engine/ops/matmul/matmul.h"

namespace engine {

Linear::Linear(int64_t in_features, int64_t out_features, bool with_bias, Rng& rng)
    : weight(trunc_normal({out_features, in_features}, rng, 0.02)) {
  if (with_bias) bias = Tensor::zeros({out_features});
}

Tensor Linear::forward(const Tensor& x, const Tensor& residual) const { return linear(x, weight, bias, residual); }

void Linear::visit(const std::string& prefix, const ParamVisitor& fn) {
  fn(join_name(prefix, "weight"), weight);
  if (bias.defined()) fn(join_name(prefix, "bias"), bias);
}

}  // namespace engine
