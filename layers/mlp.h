// The transformer MLP: fc1 -> exact GELU -> fc2.
#pragma once
#include "layers/linear.h"

namespace engine {

struct Mlp {
  Linear fc1, fc2;

  Mlp() = default;
  Mlp(int64_t dim, int64_t hidden, Rng& rng) : fc1(dim, hidden, true, rng), fc2(hidden, dim, true, rng) {}
  // residual, when given, is added to the output inside fc2's GEMM.
  Tensor forward(const Tensor& x, const Tensor& residual = Tensor()) const;
  void visit(const std::string& prefix, const ParamVisitor& fn);
};

}  // namespace engine
