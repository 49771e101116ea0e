#include "models/avit.h"

#include <algorithm>
#include <numeric>
#include <optional>

#include "engine/ops/ops.h"

namespace engine {

const HaltingConfig& halting_config(const VisionTransformer& model) {
  check(model.config.halting.has_value(),
        "A-ViT forward: the model has no halting settings (engine.halting in its config.json)");
  return *model.config.halting;
}

namespace {

// Tokens [T, D] laid out per image in a [B, K] batch, and back: the compacted
// path's packed tokens padded to the largest count (padded_layout), or the
// masked path's tokens with each image's kept ones first (kept_first).
struct PaddedLayout {
  int64_t batch = 0, width = 0;
  bool identity = false;  // every image has K tokens: the packed order is the padded order
  // The index lists stay on the host: index_select checks them there and
  // uploads them without waiting for the GPU.
  Tensor to_padded;       // [B * K]: the token each slot reads (zeroed where `active` is 0)
  Tensor to_packed;       // [T]: the slot of each token
  Tensor active;          // [B, K] on the tokens' device: 1 = a token, 0 = padding or a halted token
};

// The mixer over tokens [T, D]: laid out per image (padding zeroed and marked
// halted in ctx.active), mixed, returned to the tokens' order.
Tensor mix_packed(TokenMixer& mixer, const Tensor& normed, const PaddedLayout& layout, ForwardContext ctx = {},
                  Tensor* probs = nullptr) {
  const int64_t batch = layout.batch, width = layout.width, dim = normed.size(-1);
  if (layout.identity) return reshape(mixer.forward(reshape(normed, {batch, width, dim}), ctx, probs), {-1, dim});
  ctx.active = layout.active;
  // The padding is zeroed, not merely masked: a conv (mamba's reverse one, the
  // 'same' conv mixer) reads the slots after an image's last token, where the
  // image alone would read the conv's zero padding. An image's result then does
  // not depend on the other images of its batch.
  Tensor padded =
      mul(reshape(index_select(normed, 0, layout.to_padded), {batch, width, dim}), unsqueeze(layout.active, -1));
  Tensor mixed = reshape(mixer.forward(padded, ctx, probs), {batch * width, dim});
  return index_select(mixed, 0, layout.to_packed);
}

// The masked path's [B, N] tokens (rows of the [B * N, D] view) with each
// image's kept tokens first, in token order, and its halted ones after them.
// Built on the host (the halting flags are copied there); nullopt when no
// token has halted.
std::optional<PaddedLayout> kept_first(const Tensor& active) {
  PaddedLayout layout;
  layout.batch = active.size(0);
  layout.width = active.size(1);
  const Tensor flags = active.to(Device::cpu()).to(DType::F32).contiguous();
  const float* kept = flags.data<float>();
  std::vector<int64_t> order, back(static_cast<size_t>(layout.batch * layout.width));
  std::vector<float> slot_active;
  for (int64_t b = 0; b < layout.batch; ++b) {
    for (bool want_kept : {true, false}) {
      for (int64_t t = b * layout.width; t < (b + 1) * layout.width; ++t) {
        if ((kept[t] != 0.0f) != want_kept) continue;
        back[static_cast<size_t>(t)] = static_cast<int64_t>(order.size());
        order.push_back(t);
        slot_active.push_back(want_kept ? 1.0f : 0.0f);
      }
    }
  }
  if (std::all_of(slot_active.begin(), slot_active.end(), [](float f) { return f != 0.0f; })) return std::nullopt;
  layout.to_padded = Tensor::from_vector(order, {layout.batch * layout.width});
  layout.to_packed = Tensor::from_vector(back, {layout.batch * layout.width});
  layout.active =
      Tensor::from_vector(slot_active, {layout.batch, layout.width}).to(active.dtype()).to(active.device());
  return layout;
}

// One block of the masked path. A mixer that skips halted tokens by itself
// keeps Block::forward (and its LN1-as-GEMM-operand shortcut).
Tensor masked_block(Block& block, const Tensor& x, const ForwardContext& ctx, BlockTrace* trace) {
  if (block.mixer->skips_halted_tokens()) return block.forward(x, ctx, trace);
  return block.forward_with(
      x, [&](const Tensor& normed, Tensor* probs) { return avit_mix(*block.mixer, normed, ctx, probs); }, ctx, trace);
}

}  // namespace

// For a mixer that reads its neighbours by position, the kept tokens of each
// image are laid out next to each other and the halted ones after them, zeroed
// and marked halted: a conv then sees the kept tokens as neighbours and the
// halted slots as its zero padding, which is the compacted path's input. The
// output returns to token order.
Tensor avit_mix(TokenMixer& mixer, const Tensor& normed, const ForwardContext& ctx, Tensor* probs) {
  if (!ctx.active.defined() || mixer.skips_halted_tokens()) return mixer.forward(normed, ctx, probs);
  const std::optional<PaddedLayout> layout = kept_first(ctx.active);
  if (!layout) return mixer.forward(normed, ctx, probs);
  const int64_t dim = normed.size(2);
  return reshape(mix_packed(mixer, reshape(normed, {-1, dim}), *layout, ctx, probs), normed.shape());
}

Tensor avit_forward_tokens(VisionTransformer& model, const Tensor& images, const ForwardContext& ctx,
                           HaltingTrace* halting, ForwardTrace* trace) {
  const HaltingConfig& config = halting_config(model);
  const int64_t prefix = model.config.num_prefix_tokens(), depth = model.config.depth;
  Tensor x = model.embed(images);
  const int64_t batch = x.size(0), tokens = x.size(1);
  HaltingState state = start_halting(batch, tokens, x.dtype(), x.device());
  HaltingTrace local;
  HaltingTrace& record = halting ? *halting : local;
  record = HaltingTrace{};
  record.never_halting = prefix;
  if (trace) trace->start(model.blocks.size());
  for (int64_t l = 0; l < depth; ++l) {
    ForwardContext layer_ctx = ctx;
    layer_ctx.active = state.active;
    Tensor out = masked_block(model.blocks[l], x, layer_ctx, trace ? &trace->blocks[l] : nullptr);
    // Halted tokens keep their state: no update and (masks being constants) no gradient through them.
    x = where(reshape(state.active.to(DType::U8), {batch, tokens, 1}), out, x);
    Tensor raw = halting_scores(x, config);
    Tensor scores = forced_scores(raw, l, depth, prefix);
    record.active.push_back(state.active);
    record.scores.push_back(scores);
    record.raw_scores.push_back(raw);
    state = advance_halting(state, scores, config.eps);
    if (trace && trace->last_block == l) return x;
  }
  return model.final_norm(x);
}

Tensor avit_forward(VisionTransformer& model, const Tensor& images, const ForwardContext& ctx, HaltingTrace* halting) {
  return model.head_forward(avit_forward_tokens(model, images, ctx, halting));
}

namespace {

// The compacted batch: every image's active tokens packed into one sequence
// [T, D], image by image in token order (the prefix tokens, which never halt,
// first in each image's group). Per-token work (norms, MLP, halting) runs on
// the T tokens; only the mixer needs the images apart.
struct PackedTokens {
  Tensor x;                    // [T, D]
  HaltingState state;          // [T] each
  std::vector<int64_t> count;  // per image: its tokens in x
};

// Where the packed tokens sit in a [B, K] batch padded to the largest count
// (padding slots read the image's first token, zeroed).
PaddedLayout padded_layout(const std::vector<int64_t>& count, DType dtype, Device device) {
  PaddedLayout layout;
  layout.batch = static_cast<int64_t>(count.size());
  layout.width = *std::max_element(count.begin(), count.end());
  layout.identity = std::all_of(count.begin(), count.end(), [&](int64_t c) { return c == layout.width; });
  if (layout.identity) return layout;
  std::vector<int64_t> to_padded(static_cast<size_t>(layout.batch * layout.width)), to_packed;
  std::vector<float> active(to_padded.size(), 0.0f);
  int64_t first = 0;
  for (int64_t b = 0; b < layout.batch; ++b) {
    for (int64_t j = 0; j < layout.width; ++j) {
      const int64_t slot = b * layout.width + j;
      to_padded[slot] = first + (j < count[b] ? j : 0);
      if (j < count[b]) {
        to_packed.push_back(slot);
        active[slot] = 1.0f;
      }
    }
    first += count[b];
  }
  layout.to_padded = Tensor::from_vector(to_padded, {static_cast<int64_t>(to_padded.size())});
  layout.to_packed = Tensor::from_vector(to_packed, {static_cast<int64_t>(to_packed.size())});
  layout.active = Tensor::from_vector(active, {layout.batch, layout.width}).to(dtype).to(device);
  return layout;
}

// Indices (into the packed tokens, on the host) of the first `per_image` tokens of every image.
Tensor leading_tokens(const std::vector<int64_t>& count, int64_t per_image) {
  std::vector<int64_t> index;
  int64_t first = 0;
  for (int64_t c : count) {
    for (int64_t j = 0; j < per_image; ++j) index.push_back(first + j);
    first += c;
  }
  return Tensor::from_vector(index, {static_cast<int64_t>(index.size())});
}

// The forced scores of packed tokens: 0 for each image's prefix tokens.
Tensor packed_forced_scores(const Tensor& scores, const std::vector<int64_t>& count, int64_t prefix) {
  std::vector<float> can_halt;
  for (int64_t c : count) {
    for (int64_t j = 0; j < c; ++j) can_halt.push_back(j < prefix ? 0.0f : 1.0f);
  }
  return mul(scores, Tensor::from_vector(can_halt, scores.shape()).to(scores.dtype()).to(scores.device()));
}

// Removes the tokens that halted (their state is no longer active).
void drop_halted(PackedTokens& tokens) {
  const Tensor active = tokens.state.active.to(Device::cpu()).to(DType::F32).contiguous();
  const float* flags = active.data<float>();
  std::vector<int64_t> kept;
  int64_t first = 0;
  for (int64_t& c : tokens.count) {
    const size_t before = kept.size();
    for (int64_t j = 0; j < c; ++j) {
      if (flags[first + j] != 0.0f) kept.push_back(first + j);
    }
    first += c;
    c = static_cast<int64_t>(kept.size() - before);
  }
  if (static_cast<int64_t>(kept.size()) == first) return;
  const Tensor index = Tensor::from_vector(kept, {static_cast<int64_t>(kept.size())});
  tokens.x = index_select(tokens.x, 0, index);
  tokens.state.cumulative = index_select(tokens.state.cumulative, 0, index);
  tokens.state.active = Tensor::ones({index.size(0)}, tokens.x.dtype(), tokens.x.device());
}

}  // namespace

Tensor avit_forward_compact(VisionTransformer& model, const Tensor& images, std::vector<int64_t>* active_tokens) {
  NoGradGuard no_grad;
  const HaltingConfig& halting = halting_config(model);
  const int64_t prefix = model.config.num_prefix_tokens(), depth = model.config.depth;
  Tensor embedded = model.embed(images);
  const int64_t batch = embedded.size(0), tokens = embedded.size(1), dim = embedded.size(2);
  const HaltingState start = start_halting(1, batch * tokens, embedded.dtype(), embedded.device());
  PackedTokens packed{reshape(embedded, {batch * tokens, dim}),
                      {reshape(start.active, {-1}), reshape(start.cumulative, {-1})},
                      std::vector<int64_t>(static_cast<size_t>(batch), tokens)};
  if (active_tokens) active_tokens->assign(model.blocks.size(), 0);
  for (int64_t l = 0; l < depth; ++l) {
    if (l > 0) drop_halted(packed);
    if (active_tokens) (*active_tokens)[l] = std::accumulate(packed.count.begin(), packed.count.end(), int64_t{0});
    const PaddedLayout layout = padded_layout(packed.count, embedded.dtype(), embedded.device());
    TokenMixer& mixer = *model.blocks[l].mixer;
    packed.x = model.blocks[l].forward_with(
        packed.x, [&](const Tensor& normed, Tensor*) { return mix_packed(mixer, normed, layout); }, {});
    if (l + 1 < depth) {
      Tensor forced = packed_forced_scores(halting_scores(packed.x, halting), packed.count, prefix);
      packed.state = advance_halting(packed.state, forced, halting.eps);
    }
  }
  Tensor heads = index_select(packed.x, 0, leading_tokens(packed.count, prefix));
  return model.head_forward(model.final_norm(reshape(heads, {batch, prefix, dim})));
}

}  // namespace engine
