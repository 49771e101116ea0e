#include "layers/mixers/mlp_mixer.h"

#include "layers/mixers/checks.h"

namespace engine {

MlpMixer::MlpMixer(int64_t dim, int64_t hidden, Rng& rng)
    : mlp_(dim, positive("mlp mixer: width", hidden), rng) {}

Tensor MlpMixer::forward(const Tensor& x, const ForwardContext&, Tensor*) { return mlp_.forward(x); }

Tensor MlpMixer::forward_plus(const Tensor& x, const Tensor& residual, const ForwardContext&) {
  return mlp_.forward(x, residual);
}

Tensor MlpMixer::forward_packed(const Tensor& x, const PaddedLayout&, ForwardContext, const Tensor& residual) {
  return mlp_.forward(x, residual);
}

}  // namespace engine
