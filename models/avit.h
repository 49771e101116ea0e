// A-ViT: a VisionTransformer whose config.halting is set, run with token halting
// (layers/halting.h). Two forwards:
//
// * the masked path (training, analysis): all N tokens stay in the tensors;
//   after block l a halted token's state is frozen (x <- where(active, block(x), x))
//   and halted tokens are masked as attention keys (ForwardContext::active).
// * the compacted path (inference): halted tokens are removed between blocks,
//   so later blocks really run on fewer tokens. The active tokens of all images
//   are packed into one sequence [T, D] for the per-token work (norms, MLP,
//   halting scores); for the mixer they are laid out per image, padded to the
//   batch's largest count with zero tokens marked halted (at batch 1, or when
//   every image keeps as many tokens, there is no padding), so an image's
//   logits do not depend on its batch.
//
// They compute the same logits when every mixer treats a halted token as
// absent: attention, gated_rnn and the per-token mixers do; a conv over tokens
// (the conv mixer, mamba's conv) reads its neighbours, which in the masked path
// include frozen halted tokens and in the compacted path do not.
//
// The head reads the class token (halting needs global_pool = token). A-ViT
// classifies from the halting-weighted sum of each token's block outputs; the
// class token never halts, so its weights are 0 until the last layer and 1
// there, and that sum is simply its final output: no sum is formed here.
#pragma once
#include <vector>

#include "layers/halting.h"
#include "models/vit.h"

namespace engine {

// The model's halting settings; an error when the model has none.
const HaltingConfig& halting_config(const VisionTransformer& model);

// Masked path: the tokens after the final norm, [B, N, D] (halted tokens hold
// their state from their halting layer). `halting` receives the per-layer
// scores and masks; `trace` works as in VisionTransformer::forward_tokens
// (per-block traces; last_block returns that block's output, frozen tokens
// included, without the final norm).
Tensor avit_forward_tokens(VisionTransformer& model, const Tensor& images, const ForwardContext& ctx,
                           HaltingTrace* halting, ForwardTrace* trace = nullptr);
// Masked path: logits [B, classes].
Tensor avit_forward(VisionTransformer& model, const Tensor& images, const ForwardContext& ctx = {},
                    HaltingTrace* halting = nullptr);

// Compacted path (no gradient): logits [B, classes]. active_tokens, if given,
// receives per layer the number of tokens entering it, summed over the images
// (padding not counted).
Tensor avit_forward_compact(VisionTransformer& model, const Tensor& images,
                            std::vector<int64_t>* active_tokens = nullptr);

}  // namespace engine
