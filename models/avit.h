// A-ViT: a VisionTransformer whose config.halting is set, run with token halting
// (layers/halting.h). Two forwards:
//
// * the masked path (training, analysis): all N tokens stay in the tensors;
//   after block l a halted token's state is frozen (x <- where(active, block(x), x))
//   and halted tokens are masked as attention keys (ForwardContext::active).
// * the compacted path (inference): halted tokens are removed between blocks,
//   so later blocks really run on fewer tokens (on a GPU one block after they
//   halt, see CompactionSync; and only once they are an eighth of the tokens
//   present: until then they are carried, masked). The tokens of all images
//   are packed into one sequence [T, D] for the per-token work (norms, MLP,
//   halting: halting_step); for the mixer they are laid out per image, padded
//   to the batch's largest count with slots marked halted (at batch 1, or when
//   every image keeps as many tokens, there is no padding), so an image's
//   logits do not depend on its batch. Attention and gated_rnn run their
//   projections on the packed tokens (TokenMixer::forward_packed).
//
// They compute the same logits (to rounding) with every mixer. Attention,
// gated_rnn, mamba's scan and the per-token mixers treat a halted token as
// absent by themselves (TokenMixer::skips_halted_tokens). A conv over tokens
// (the conv mixer, mamba's conv) reads its neighbours by position: for such a
// mixer the masked path lays each image's kept tokens out next to each other,
// the halted ones after them as zeros, as the compacted path does, so that a
// student distilled on the masked path is evaluated on the function it learnt.
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
// The masked path's mixer call: mixer(normed [B, N, D]) with the halting flags
// ctx.active [B, N] (or none). A mixer that reads its neighbours by position
// (TokenMixer::skips_halted_tokens false) runs on each image's kept tokens side
// by side, the halted ones after them as zeros; the output is in token order,
// and is what the compacted path gives at the kept tokens. Layer-wise
// distillation calls it for the students of an A-ViT teacher.
Tensor avit_mix(TokenMixer& mixer, const Tensor& normed, const ForwardContext& ctx, Tensor* probs = nullptr);

// Masked path: logits [B, classes].
Tensor avit_forward(VisionTransformer& model, const Tensor& images, const ForwardContext& ctx = {},
                    HaltingTrace* halting = nullptr);

// When the compacted path removes the tokens that halted. Their flags are
// copied to the host after a block when a compaction may read them (the
// shapes of what follows depend on them). Waiting for the last block's flags
// tells the host every halted token, but leaves the GPU idle while it then
// queues the next block; using those of the block before last, which reached
// the host while the GPU ran the last block, keeps it busy: the tokens that
// halted at the last block stay one block longer, masked (a mixer that reads
// its neighbours by position waits for the last flags anyway). The logits are
// the same.
enum class CompactionSync {
  last_block,
  block_before_last,
  by_device,  // block_before_last on a GPU, last_block on the CPU
};

// When halted tokens are worth removing. Until then they are carried, masked:
// a compaction costs the host an upload, a gather per per-token tensor and a
// new layout, and saves every later block the halted tokens' work. They are
// removed once they are at least an eighth of the tokens present and at least
// min_halted (a mixer that reads its neighbours by position gets them all
// removed).
struct CompactionPolicy {
  CompactionSync sync = CompactionSync::by_device;
  // 0: by device. On the CPU 1 (the eighth alone decides): the work follows
  // the token count down to one token. On a GPU as many as carry about a
  // GFLOP of an attention block's projections and MLP (1,130 tokens of the
  // CIFAR ViT-Ti, 71 of a ViT-B; the same count for blocks with other
  // mixers): below that the GPU's time hardly depends on them, and the host's
  // time to issue the compaction is what counts (bench/RESULTS.md "v16").
  int64_t min_halted = 0;
};

// What the compacted path reports per layer, summed over the images, when
// asked. Counting the active tokens makes it download every block's flags
// (its logits and compactions stay the same); without, it downloads only the
// flags that a compaction may read, as when no trace is asked for.
struct CompactTrace {
  bool count_active = true;
  std::vector<int64_t> active;   // tokens entering the layer still active (if counted)
  std::vector<int64_t> present;  // tokens it ran on: the active ones and the halted ones carried (no padding)
};

// Compacted path (no gradient): logits [B, classes].
Tensor avit_forward_compact(VisionTransformer& model, const Tensor& images, CompactTrace* trace = nullptr,
                            CompactionPolicy policy = {});

// What ./vit_forward writes for `input` [B, C, H, W]: "logits" and per block
// "blocks.{i}.out" and (for attention) "blocks.{i}.attn_probs". An A-ViT
// (config.halting set) runs with halting, on the masked path, whose logits are
// the ones ./eval_imagenet gets with tokens dropped: a halted token's output
// stays its state when it halted, it gets no attention as a key, and
// "blocks.{i}.active" [B, N] (1 or 0) marks the tokens entering block i active.
NamedTensors traced_forward(VisionTransformer& model, const Tensor& input);

}  // namespace engine
