#include "layers/padded_layout.h"

#include "engine/ops/ops.h"

namespace engine {

Tensor PaddedLayout::pad(const Tensor& packed) const {
  const int64_t channels = packed.size(-1);
  return identity ? reshape(packed, {batch, width, channels})
                  : reshape(index_select(packed, 0, to_padded), {batch, width, channels});
}

Tensor PaddedLayout::unpad(const Tensor& padded) const {
  const Tensor slots = reshape(padded, {batch * width, padded.size(-1)});
  return identity ? slots : index_select(slots, 0, to_packed);
}

}  // namespace engine
