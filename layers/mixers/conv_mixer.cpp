#include "layers/mixers/conv_mixer.h"

namespace engine {

namespace {
int64_t odd_kernel(int64_t kernel) {
  check(kernel > 0 && kernel % 2 == 1, "conv mixer: conv_kernel must be a positive odd number, got {}", kernel);
  return kernel;
}
}  // namespace

ConvMixer::ConvMixer(int64_t dim, int64_t kernel, bool bidirectional, Rng& rng)
    : bidirectional_(bidirectional), conv_(dim, odd_kernel(kernel), rng), proj_(dim, dim, true, rng) {}

Tensor ConvMixer::forward(const Tensor& x, const ForwardContext&, Tensor*) {
  const int64_t kernel = conv_.taps();
  const int64_t pad_left = bidirectional_ ? kernel / 2 : kernel - 1;
  return proj_.forward(conv_.forward(x, pad_left, /*reverse=*/false));
}

void ConvMixer::visit(const std::string& prefix, const ParamVisitor& fn) {
  conv_.visit(join_name(prefix, "conv"), fn);
  proj_.visit(join_name(prefix, "proj"), fn);
}

}  // namespace engine
