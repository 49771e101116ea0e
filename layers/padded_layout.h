// Tokens of images of different lengths packed into one sequence [T, C],
// image by image (A-ViT's compacted path), and the [B, K] slots that lay them
// out per image for a token mixer: each image's tokens first, in order,
// padded to the longest image's count K. (The masked path's avit_mix reuses
// it with T = B * N: each image's kept tokens first, its halted ones after
// them in slots marked 0.)
#pragma once
#include "engine/ops/index/index.h"
#include "engine/tensor.h"

namespace engine {

struct PaddedLayout {
  int64_t batch = 0, width = 0;  // B and K
  bool identity = false;  // every image has K tokens: the packed order is the padded order
  // Checked and uploaded once: every block pads and unpads by them.
  DeviceIndex to_padded;  // [B * K]: the token each slot reads (any, in a slot that `active` marks 0)
  DeviceIndex to_packed;  // [T]: the slot of each token
  Tensor active;           // [B, K] on the tokens' device: 1 = a token, 0 = padding or a halted token;
                           // undefined: every slot holds a running token

  Tensor pad(const Tensor& packed) const;    // [T, C] -> [B, K, C]
  Tensor unpad(const Tensor& padded) const;  // [B, K, C] -> [T, C]
};

}  // namespace engine
