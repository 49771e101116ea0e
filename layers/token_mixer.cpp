#include "layers/token_mixer.h"

#include "engine/ops/ops.h"

namespace engine {

Tensor TokenMixer::forward_packed(const Tensor& x, const PaddedLayout& layout, ForwardContext ctx,
                                  const Tensor& residual) {
  ctx.active = layout.active;
  Tensor padded = layout.pad(x);
  // The padding (and any halted token) is zeroed, not merely masked: a conv
  // (mamba's reverse one, the 'same' conv mixer) reads the slots after an
  // image's last token, where the image alone would read the conv's zero
  // padding. An image's result then does not depend on the other images of
  // its batch.
  if (layout.active.defined()) padded = mul(padded, unsqueeze(layout.active, -1));
  const Tensor mixed = layout.unpad(forward(padded, ctx, nullptr));
  return residual.defined() ? add(residual, mixed) : mixed;
}

}  // namespace engine
