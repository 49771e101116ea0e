// Fully connected layer: y = x W^T + b, weight [out, in] as in PyTorch.
#pragma once
#include "layers/module.h"

namespace engine {

struct Linear {
  Tensor weight;
  Tensor bias;  // undefined when the layer has no bias

  Linear() = default;
  Linear(int64_t in_features, int64_t out_features, bool with_bias, Rng& rng);
  // residual, when given, is added to the output inside the GEMM (matmul.h).
  Tensor forward(const Tensor& x, const Tensor& residual = Tensor()) const;
  void visit(const std::string& prefix, const ParamVisitor& fn);
  int64_t in_features() const { return weight.size(1); }
  int64_t out_features() const { return weight.size(0); }
};

}  // namespace engine
