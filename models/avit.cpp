#include "models/avit.h"

#include <algorithm>

#include "engine/ops/ops.h"

namespace engine {

const HaltingConfig& halting_config(const VisionTransformer& model) {
  check(model.config.halting.has_value(),
        "A-ViT forward: the model has no halting settings (engine.halting in its config.json)");
  return *model.config.halting;
}

namespace {

// The scores of the tokens in x after `layer`, forced as halting requires.
Tensor layer_scores(const VisionTransformer& model, const Tensor& x, int64_t layer, Tensor* raw) {
  *raw = halting_scores(x, halting_config(model));
  return forced_scores(*raw, layer, model.config.depth, model.config.num_prefix_tokens());
}

}  // namespace

Tensor avit_forward_tokens(VisionTransformer& model, const Tensor& images, const ForwardContext& ctx,
                           HaltingTrace* halting, ForwardTrace* trace) {
  const double eps = halting_config(model).eps;
  Tensor x = model.embed(images);
  const int64_t batch = x.size(0), tokens = x.size(1);
  HaltingState state = start_halting(batch, tokens, x.dtype(), x.device());
  HaltingTrace local;
  HaltingTrace& record = halting ? *halting : local;
  record = HaltingTrace{};
  record.never_halting = model.config.num_prefix_tokens();
  if (trace) trace->start(model.blocks.size());
  for (int64_t l = 0; l < model.config.depth; ++l) {
    ForwardContext layer_ctx = ctx;
    layer_ctx.active = state.active;
    Tensor out = model.blocks[l].forward(x, layer_ctx, trace ? &trace->blocks[l] : nullptr);
    // Halted tokens keep their state: no update and (masks being constants) no gradient through them.
    x = where(reshape(state.active.to(DType::U8), {batch, tokens, 1}), out, x);
    Tensor raw;
    Tensor scores = layer_scores(model, x, l, &raw);
    record.active.push_back(state.active);
    record.scores.push_back(scores);
    record.raw_scores.push_back(raw);
    state = advance_halting(state, scores, eps);
    if (trace && trace->last_block == l) return x;
  }
  return model.final_norm(x);
}

Tensor avit_forward(VisionTransformer& model, const Tensor& images, const ForwardContext& ctx, HaltingTrace* halting) {
  return model.head_forward(avit_forward_tokens(model, images, ctx, halting));
}

namespace {

// Gathers each image's active tokens to the front, in order (the class token,
// never halting, stays first), padding to the batch's largest count with
// inactive copies of token 0. Returns whether padding remains (then attention
// needs the mask); adds the active count to *active_tokens.
bool compact_tokens(Tensor& x, HaltingState& state, int64_t* active_tokens) {
  const int64_t batch = x.size(0), tokens = x.size(1), dim = x.size(2);
  const Tensor active = state.active.to(Device::cpu()).to(DType::F32).contiguous();
  const float* flags = active.data<float>();
  std::vector<std::vector<int64_t>> kept(static_cast<size_t>(batch));
  size_t longest = 0;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t k = 0; k < tokens; ++k) {
      if (flags[b * tokens + k] != 0.0f) kept[b].push_back(k);
    }
    longest = std::max(longest, kept[b].size());
    *active_tokens += static_cast<int64_t>(kept[b].size());
  }
  const auto width = static_cast<int64_t>(longest);
  std::vector<int64_t> index(static_cast<size_t>(batch * width), 0);
  std::vector<float> now_active(index.size(), 0.0f);
  bool padded = false;
  for (int64_t b = 0; b < batch; ++b) {
    std::copy(kept[b].begin(), kept[b].end(), index.begin() + b * width);
    std::fill_n(now_active.begin() + b * width, kept[b].size(), 1.0f);
    padded = padded || static_cast<int64_t>(kept[b].size()) < width;
  }
  const Device device = x.device();
  Tensor rows = Tensor::from_vector(index, {batch, width}).to(device);
  x = gather(x, 1, expand(unsqueeze(rows, -1), {batch, width, dim}).contiguous());
  state.cumulative = gather(state.cumulative, 1, rows);
  state.active = Tensor::from_vector(now_active, {batch, width}).to(x.dtype()).to(device);
  return padded;
}

}  // namespace

Tensor avit_forward_compact(VisionTransformer& model, const Tensor& images, std::vector<int64_t>* active_tokens) {
  NoGradGuard no_grad;
  const double eps = halting_config(model).eps;
  Tensor x = model.embed(images);
  HaltingState state = start_halting(x.size(0), x.size(1), x.dtype(), x.device());
  if (active_tokens) active_tokens->assign(model.blocks.size(), 0);
  bool padded = false;
  for (int64_t l = 0; l < model.config.depth; ++l) {
    int64_t entering = x.size(0) * x.size(1);
    if (l > 0) {
      entering = 0;
      padded = compact_tokens(x, state, &entering);
    }
    if (active_tokens) (*active_tokens)[l] = entering;
    ForwardContext ctx;
    if (padded) ctx.active = state.active;
    x = model.blocks[l].forward(x, ctx);
    if (l + 1 < model.config.depth) {
      Tensor raw;
      state = advance_halting(state, layer_scores(model, x, l, &raw), eps);
    }
  }
  return model.head_forward(model.final_norm(x));
}

}  // namespace engine
