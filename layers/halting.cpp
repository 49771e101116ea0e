#include "layers/halting.h"

#include <cmath>

#include "engine/ops/ops.h"

namespace engine {

void HaltingConfig::validate(const std::string& source) const {
  check(std::isfinite(gamma) && gamma > 0, "{}: halting gamma must be positive, got {}", source, gamma);
  check(std::isfinite(beta), "{}: halting beta must be finite, got {}", source, beta);
  check(eps > 0 && eps < 1, "{}: halting eps must be in (0, 1), got {}", source, eps);
}

Tensor halting_scores(const Tensor& block_output, const HaltingConfig& config) {
  return sigmoid(add(mul(select(block_output, -1, 0), config.gamma), config.beta));
}

Tensor forced_scores(const Tensor& scores, int64_t layer, int64_t depth, int64_t never_halting) {
  if (layer == depth - 1) return Tensor::ones(scores.shape(), scores.dtype(), scores.device());
  if (never_halting == 0) return scores;
  const int64_t batch = scores.size(0), tokens = scores.size(1);
  Tensor zeros = Tensor::zeros({batch, never_halting}, scores.dtype(), scores.device());
  return concat({zeros, narrow(scores, 1, never_halting, tokens - never_halting)}, 1);
}

HaltingState start_halting(int64_t batch, int64_t tokens, DType dtype, Device device) {
  return {Tensor::ones({batch, tokens}, dtype, device), Tensor::zeros({batch, tokens}, dtype, device)};
}

HaltingState advance_halting(const HaltingState& state, const Tensor& forced, double eps) {
  HaltingState next;
  next.cumulative = add(state.cumulative, forced.detach());
  next.active = mul(state.active, 1.0 - greater_equal(next.cumulative, 1.0 - eps));
  return next;
}

namespace {

// The tokens that can halt (after the prefix), [B, N - prefix].
Tensor halting_tokens(const Tensor& per_token, int64_t never_halting) {
  return narrow(per_token, 1, never_halting, per_token.size(1) - never_halting);
}

void check_trace(const HaltingTrace& trace) {
  check(!trace.scores.empty() && trace.scores.size() == trace.active.size() &&
            trace.raw_scores.size() == trace.scores.size(),
        "halting trace: {} scores, {} raw scores and {} masks (one of each per layer expected)", trace.scores.size(),
        trace.raw_scores.size(), trace.active.size());
}

}  // namespace

Tensor halting_depths(const HaltingTrace& trace) {
  check_trace(trace);
  Tensor depths = trace.active[0];
  for (size_t l = 1; l < trace.active.size(); ++l) depths = add(depths, trace.active[l]);
  return depths.detach();
}

Tensor remainders(const HaltingTrace& trace) {
  check_trace(trace);
  // Layer l's score counts iff the token is still active after it, i.e. l lies
  // before its halting layer. The last layer (h = 1) never counts.
  Tensor used;
  for (size_t l = 0; l + 1 < trace.scores.size(); ++l) {
    Tensor term = mul(trace.scores[l], trace.active[l + 1]);
    used = used.defined() ? add(used, term) : term;
  }
  if (!used.defined()) return Tensor::ones(trace.scores[0].shape(), trace.scores[0].dtype(), trace.scores[0].device());
  return 1.0 - used;
}

Tensor ponder_loss(const HaltingTrace& trace) {
  return mean(halting_tokens(add(halting_depths(trace), remainders(trace)), trace.never_halting));
}

std::vector<double> layer_retention(const HaltingTrace& trace) {
  std::vector<double> retention;
  for (const Tensor& active : trace.active) retention.push_back(mean(active).item<double>());
  return retention;
}

Tensor halting_distribution(const HaltingTrace& trace) {
  check_trace(trace);
  std::vector<Tensor> per_layer;
  for (size_t l = 0; l < trace.raw_scores.size(); ++l) {
    // Halted tokens count as 0 (their frozen state's score means nothing); a floor
    // keeps the normalisation and the log finite when every score underflows.
    Tensor running = mul(trace.raw_scores[l], trace.active[l]);
    per_layer.push_back(reshape(add(mean(halting_tokens(running, trace.never_halting)), 1e-12), {1}));
  }
  Tensor layers = concat(per_layer, 0);
  return div(layers, sum(layers));
}

std::vector<double> gaussian_depth_prior(int64_t depth, double target_depth, double std) {
  check(depth > 0 && std > 0, "depth prior: depth {} and std {} must be positive", depth, std);
  std::vector<double> prior(static_cast<size_t>(depth));
  double total = 0;
  for (int64_t l = 0; l < depth; ++l) {
    const double z = (static_cast<double>(l + 1) - target_depth) / std;
    prior[l] = std::exp(-0.5 * z * z);
    total += prior[l];
  }
  check(total > 0, "depth prior: target depth {} with std {} puts no mass on layers 1..{}", target_depth, std, depth);
  for (double& p : prior) p /= total;
  return prior;
}

Tensor prior_kl(const Tensor& distribution, const std::vector<double>& target) {
  check(distribution.dim() == 1 && distribution.size(0) == static_cast<int64_t>(target.size()),
        "prior KL: distribution {} against a target of {} layers", ShapeText{distribution.shape()}, target.size());
  double entropy_term = 0;  // sum t log t, a constant (0 log 0 = 0)
  for (double t : target) entropy_term += t > 0 ? t * std::log(t) : 0.0;
  Tensor t = Tensor::from_vector(target, {static_cast<int64_t>(target.size())})
                 .to(distribution.dtype())
                 .to(distribution.device());
  return add(neg(sum(mul(t, log(distribution)))), entropy_term);
}

}  // namespace engine
