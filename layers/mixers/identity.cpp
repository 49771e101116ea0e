#include "layers/mixers/identity.h"

namespace engine {

Tensor IdentityMixer::forward(const Tensor& x, const ForwardContext&, Tensor*) {
  return Tensor::zeros(x.shape(), x.dtype(), x.device());
}

Tensor IdentityMixer::forward_plus(const Tensor&, const Tensor& residual, const ForwardContext&) { return residual; }

Tensor IdentityMixer::forward_packed(const Tensor& x, const PaddedLayout&, ForwardContext ctx,
                                     const Tensor& residual) {
  return residual.defined() ? residual : forward(x, ctx, nullptr);
}

}  // namespace engine
