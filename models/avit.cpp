#include "models/avit.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <memory>
#include <numeric>
#include <optional>
#include <tuple>

#include "engine/ops/ops.h"

namespace engine {

const HaltingConfig& halting_config(const VisionTransformer& model) {
  check(model.config.halting.has_value(),
        "A-ViT forward: the model has no halting settings (engine.halting in its config.json)");
  return *model.config.halting;
}

namespace {

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
  layout.to_padded = DeviceIndex(Tensor::from_vector(order, {layout.batch * layout.width}), active.device());
  layout.to_packed = DeviceIndex(Tensor::from_vector(back, {layout.batch * layout.width}), active.device());
  layout.active =
      Tensor::from_vector(slot_active, {layout.batch, layout.width}).to(active.dtype()).to(active.device());
  return layout;
}

// A block's output where its tokens were active ([B, N] flags), its input
// where they had halted: halted tokens keep their state (no update and, the
// flags being constants, no gradient through them).
Tensor keep_halted_state(const Tensor& active, const Tensor& out, const Tensor& in) {
  return where(reshape(active.to(DType::U8), {active.size(0), active.size(1), 1}), out, in);
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
  return reshape(mixer.forward_packed(reshape(normed, {-1, dim}), *layout, ctx, Tensor()), normed.shape());
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
    x = keep_halted_state(state.active, out, x);
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

// The compacted batch: every image's tokens still running packed into one
// sequence [T, D], image by image in token order (the prefix tokens, which
// never halt, first in each image's group). Per-token work (norms, MLP,
// halting) runs on the T tokens; only the mixer needs the images apart.
struct PackedTokens {
  Tensor x;                    // [T, D]
  HaltingState state;          // [T] each
  Tensor can_halt;             // [T]: 0 for each image's prefix tokens, else 1
  std::vector<int64_t> count;  // per image: its tokens in x
  // Per token: its place b * N + n in the batch. Shared with the downloads
  // taken in this packing; a compaction makes a new list.
  std::shared_ptr<const std::vector<int64_t>> origin;
  int64_t size() const { return static_cast<int64_t>(origin->size()); }
};

// PackedTokens::can_halt for images of `count` tokens.
Tensor can_halt_mask(const std::vector<int64_t>& count, int64_t prefix, DType dtype, Device device) {
  std::vector<float> can_halt;
  for (int64_t c : count) {
    for (int64_t j = 0; j < c; ++j) can_halt.push_back(j < prefix ? 0.0f : 1.0f);
  }
  return Tensor::from_vector(can_halt, {static_cast<int64_t>(can_halt.size())}).to(dtype).to(device);
}

// Every token of the embedded batch [B, N, D], packed image by image, all running.
PackedTokens pack_all(const Tensor& embedded, int64_t prefix) {
  const int64_t batch = embedded.size(0), tokens = embedded.size(1);
  PackedTokens packed;
  packed.x = reshape(embedded, {batch * tokens, embedded.size(2)});
  const HaltingState start = start_halting(1, batch * tokens, embedded.dtype(), embedded.device());
  packed.state = {reshape(start.active, {-1}), reshape(start.cumulative, {-1})};
  packed.count.assign(static_cast<size_t>(batch), tokens);
  packed.can_halt = can_halt_mask(packed.count, prefix, embedded.dtype(), embedded.device());
  auto origin = std::make_shared<std::vector<int64_t>>(static_cast<size_t>(batch * tokens));
  std::iota(origin->begin(), origin->end(), int64_t{0});
  packed.origin = std::move(origin);
  return packed;
}

// Where the packed tokens sit in a [B, K] batch padded to the largest count
// (a padding slot reads its image's first token).
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
  layout.to_padded = DeviceIndex(Tensor::from_vector(to_padded, {static_cast<int64_t>(to_padded.size())}), device);
  layout.to_packed = DeviceIndex(Tensor::from_vector(to_packed, {static_cast<int64_t>(to_packed.size())}), device);
  layout.active = Tensor::from_vector(active, {layout.batch, layout.width}).to(dtype).to(device);
  return layout;
}

// The layout's slots marked halted where their token has halted too: the
// flags [T] of packed tokens among which some halted after the last
// compaction (they stay in the tensors, masked, until the next one).
void mark_halted_slots(PaddedLayout& layout, const Tensor& token_active) {
  const Tensor slots =
      layout.identity ? token_active : index_select(token_active, 0, layout.to_padded);
  const Tensor flags = reshape(slots, {layout.batch, layout.width});
  layout.active = layout.identity ? flags : mul(layout.active, flags);
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

// The halting decisions on their way to the host: after a block the packed
// tokens' flags start downloading (PendingDownload) when a compaction may
// read them (FlagSchedule), and before each block the host reads those that
// the schedule says it needs.
class HaltingDecisions {
 public:
  explicit HaltingDecisions(int64_t tokens) : halted_(static_cast<size_t>(tokens), false) {}

  // The flags after `block`, for the packing `origin`.
  void start_download(int64_t block, const Tensor& active, std::shared_ptr<const std::vector<int64_t>> origin) {
    const Tensor flags = active.to(DType::F32).contiguous();
    PendingDownload download(flags.raw_data(), flags.device(), origin->size() * sizeof(float));
    in_flight_.push_back({block, std::move(download), std::move(origin)});
  }
  // Reads the downloads of blocks up to `last_block`, waiting for them to land.
  void read_through(int64_t last_block) {
    while (!in_flight_.empty() && in_flight_.front().block <= last_block) {
      InFlight& next = in_flight_.front();
      const auto* flags = static_cast<const float*>(next.flags.wait());
      const std::vector<int64_t>& origin = *next.origin;
      int64_t active = 0;
      for (size_t i = 0; i < origin.size(); ++i) {
        if (flags[i] != 0.0f) {
          ++active;
        } else if (!halted_[static_cast<size_t>(origin[i])]) {
          halted_[static_cast<size_t>(origin[i])] = true;
          ++halted_present_;
        }
      }
      active_counts_.push_back(active);
      last_block_read_ = next.block;
      in_flight_.pop_front();
    }
  }
  bool halted(int64_t origin) const { return halted_[static_cast<size_t>(origin)]; }
  // How many tokens known to have halted are still packed: those learnt since
  // the last compaction (which removed every one known then).
  int64_t halted_present() const { return halted_present_; }
  void compacted() { halted_present_ = 0; }
  // The block whose flags the host read last (-1: none yet). A token halted
  // since is still flagged halted in every later download: halted tokens stay
  // packed, flags 0, until a compaction removes them.
  int64_t last_block_read() const { return last_block_read_; }
  // Per download read, in order: how many tokens were still active.
  const std::vector<int64_t>& active_counts() const { return active_counts_; }

 private:
  struct InFlight {
    int64_t block;
    PendingDownload flags;                               // float per packed token
    std::shared_ptr<const std::vector<int64_t>> origin;  // the packing they were taken in
  };
  std::deque<InFlight> in_flight_;
  std::vector<bool> halted_;  // per token of the batch, as far as read
  int64_t halted_present_ = 0;
  int64_t last_block_read_ = -1;
  std::vector<int64_t> active_counts_;
};

// Removes the tokens known to have halted: one index, checked and uploaded
// once, for every per-token tensor.
void drop_halted(PackedTokens& tokens, HaltingDecisions& decisions) {
  std::vector<int64_t> kept;
  auto origin = std::make_shared<std::vector<int64_t>>();
  int64_t first = 0;
  for (int64_t& c : tokens.count) {
    const size_t before = kept.size();
    for (int64_t j = first; j < first + c; ++j) {
      const int64_t place = (*tokens.origin)[static_cast<size_t>(j)];
      if (decisions.halted(place)) continue;
      kept.push_back(j);
      origin->push_back(place);
    }
    first += c;
    c = static_cast<int64_t>(kept.size() - before);
  }
  const DeviceIndex index(Tensor::from_vector(kept, {static_cast<int64_t>(kept.size())}), tokens.x.device());
  tokens.x = index_select(tokens.x, 0, index);
  tokens.state.cumulative = index_select(tokens.state.cumulative, 0, index);
  tokens.state.active = index_select(tokens.state.active, 0, index);
  tokens.can_halt = index_select(tokens.can_halt, 0, index);
  tokens.origin = std::move(origin);
  decisions.compacted();
}

// Which halting flags the host needs when: CompactionPolicy's rules for one
// model on one device.
class FlagSchedule {
 public:
  FlagSchedule(const VisionTransformer& model, const CompactionPolicy& policy, Device device)
      : model_(model), sync_(policy.sync), min_halted_(policy.min_halted) {
    if (sync_ == CompactionSync::by_device) {
      sync_ = device.is_cuda() ? CompactionSync::block_before_last : CompactionSync::last_block;
    }
    if (min_halted_ == 0) min_halted_ = device.is_cuda() ? tokens_per_gflop(model.config) : 1;
  }

  int64_t min_halted() const { return min_halted_; }
  // A block whose mixer reads its neighbours by position needs every halted token gone.
  bool needs_halted_gone(int64_t block) const { return !model_.blocks[block].mixer->skips_halted_tokens(); }
  // The last block whose flags the host reads before `block`: the one just
  // before when `block` waits for the newest flags, else the one before that.
  int64_t read_through(int64_t block) const { return block - (reads_newest_flags(block) ? 1 : 2); }
  // Whether to download the flags after `block` (not the last), of which
  // `may_halt` tokens could have halted: only if the block that reads them
  // may compact. A block that needs halted tokens gone reads the flags just
  // before it, which flag every halted token still packed, and no earlier ones.
  bool download_after(int64_t block, int64_t may_halt) const {
    if (needs_halted_gone(block + 1)) return true;
    const int64_t reader = reads_newest_flags(block + 1) ? block + 1 : block + 2;
    if (reader >= model_.config.depth || needs_halted_gone(reader)) return false;
    return may_halt >= min_halted_;
  }

 private:
  bool reads_newest_flags(int64_t block) const {
    return sync_ == CompactionSync::last_block || needs_halted_gone(block);
  }
  // The tokens whose qkv, proj, fc1 and fc2 take a GFLOP.
  static int64_t tokens_per_gflop(const VitConfig& config) {
    const double dim = static_cast<double>(config.embed_dim), hidden = static_cast<double>(config.mlp_hidden);
    return std::max<int64_t>(1, std::llround(1e9 / (2 * (4 * dim * dim + 2 * dim * hidden))));
  }

  const VisionTransformer& model_;
  CompactionSync sync_;
  int64_t min_halted_;
};

// Before a block: removes the tokens known to have halted if they are worth a
// compaction (then compacted_layout, the layout of the packed tokens, follows),
// and returns the block's layout, whose slots also mark the halted tokens still
// present: those the host knows of and, when the flags of the block just
// before are not read yet (flags_unread), any that halted there.
PaddedLayout prepare_block(PackedTokens& packed, HaltingDecisions& decisions, PaddedLayout& compacted_layout,
                           int64_t min_halted, bool needs_halted_gone, bool flags_unread) {
  const int64_t halted = decisions.halted_present();
  const bool worth_it = 8 * halted >= packed.size() && halted >= min_halted;
  const bool compact = halted > 0 && (needs_halted_gone || worth_it);
  if (compact) {
    drop_halted(packed, decisions);
    compacted_layout = padded_layout(packed.count, packed.x.dtype(), packed.x.device());
  }
  PaddedLayout block_layout = compacted_layout;
  if ((halted > 0 && !compact) || flags_unread) mark_halted_slots(block_layout, packed.state.active);
  return block_layout;
}

}  // namespace

Tensor avit_forward_compact(VisionTransformer& model, const Tensor& images, CompactTrace* trace,
                            CompactionPolicy policy) {
  NoGradGuard no_grad;
  const HaltingConfig& halting = halting_config(model);
  const int64_t prefix = model.config.num_prefix_tokens(), depth = model.config.depth;
  Tensor embedded = model.embed(images);
  const int64_t batch = embedded.size(0), tokens = embedded.size(1), dim = embedded.size(2);
  PackedTokens packed = pack_all(embedded, prefix);
  const FlagSchedule schedule(model, policy, embedded.device());
  HaltingDecisions decisions(batch * tokens);
  PaddedLayout layout = padded_layout(packed.count, embedded.dtype(), embedded.device());
  const bool count_active = trace && trace->count_active;
  if (trace) {
    trace->active.clear();
    trace->present.clear();
  }
  for (int64_t l = 0; l < depth; ++l) {
    decisions.read_through(schedule.read_through(l));
    const bool flags_unread = l > 0 && decisions.last_block_read() != l - 1;
    const PaddedLayout block_layout = prepare_block(packed, decisions, layout, schedule.min_halted(),
                                                    schedule.needs_halted_gone(l), flags_unread);
    if (trace) trace->present.push_back(packed.size());
    // Halted tokens still present are not frozen, unlike on the masked path:
    // nothing reads them any more (the mixers mask or skip them, the head
    // reads the prefix tokens) and a later compaction drops them.
    packed.x = model.blocks[l].forward_packed(packed.x, block_layout);
    if (l + 1 < depth) {
      std::tie(packed.state.cumulative, packed.state.active) =
          halting_step(packed.x, packed.can_halt, packed.state.cumulative, packed.state.active, halting.gamma,
                       halting.beta, halting.eps);
      // (Prefix tokens never halt.)
      if (count_active || schedule.download_after(l, packed.size() - batch * prefix)) {
        decisions.start_download(l, packed.state.active, packed.origin);
      }
    }
  }
  Tensor heads = index_select(packed.x, 0, leading_tokens(packed.count, prefix));
  Tensor logits = model.head_forward(model.final_norm(reshape(heads, {batch, prefix, dim})));
  if (count_active) {
    decisions.read_through(depth);
    trace->active.assign(1, batch * tokens);
    const std::vector<int64_t>& after = decisions.active_counts();
    trace->active.insert(trace->active.end(), after.begin(), after.end());
  }
  return logits;
}

NamedTensors traced_forward(VisionTransformer& model, const Tensor& input) {
  NoGradGuard no_grad;
  ForwardTrace trace;
  trace.want_probs = true;
  HaltingTrace halting;
  const bool halts = model.config.halting.has_value();
  const Tensor logits = halts ? model.head_forward(avit_forward_tokens(model, input, {}, &halting, &trace))
                              : model.forward(input, {}, &trace);
  NamedTensors outputs{{"logits", logits}};
  for (size_t i = 0; i < trace.blocks.size(); ++i) {
    const BlockTrace& block = trace.blocks[i];
    Tensor out = block.output;
    if (halts) {
      // (The trace holds what the block computed for the halted tokens too.)
      out = keep_halted_state(halting.active[i], out, block.input);
      outputs.emplace_back(fmt::format("blocks.{}.active", i), halting.active[i].to(DType::F32));
    }
    outputs.emplace_back(fmt::format("blocks.{}.out", i), out);
    if (block.attn_probs.defined()) outputs.emplace_back(fmt::format("blocks.{}.attn_probs", i), block.attn_probs);
  }
  return outputs;
}

}  // namespace engine
