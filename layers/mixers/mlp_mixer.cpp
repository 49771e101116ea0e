#include "layers/mixers/mlp_mixer.h"

#include "layers/mixers/checks.h"

namespace engine {

MlpMixer::MlpMixer(int64_t dim, int64_t hidden, Rng& rng)
    : mlp_(dim, positive("mlp mixer: width", hidden), rng) {}

Tensor MlpMixer::forward(const Tensor& x, const ForwardContext&, Tensor*) { return mlp_.forward(x); }

}  // namespace engine
