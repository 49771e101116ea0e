#include "layers/mlp.h"

#include "engine/ops/elementwise/elementwise.h"

namespace engine {

Tensor Mlp::forward(const Tensor& x) const { return fc2.forward(gelu(fc1.forward(x))); }

void Mlp::visit(const std::string& prefix, const ParamVisitor& fn) {
  fc1.visit(join_name(prefix, "fc1"), fn);
  fc2.visit(join_name(prefix, "fc2"), fn);
}

}  // namespace engine
