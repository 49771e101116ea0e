// A-ViT token halting (Yin et al., CVPR 2022), as pure tensor arithmetic.
//
// After block l every token k gets a halting score from the first channel of
// the block's output (no new parameters):
//   h_k^l = sigmoid(gamma * t_k^l[0] + beta)
// with two forced cases: at the last block h = 1 (every token halts), and the
// prefix tokens (class, DeiT distillation) get h = 0 before it, so they never
// halt and always reach the head. The cumulative score c_k^l = sum_{j<=l} h_k^j
// decides: token k is active entering layer l while c_k^{l-1} < 1 - eps; its
// halting layer is the first l where c_k^l >= 1 - eps. Counting layers from 1,
//   N_k = the number of layers the token passes through (= sum_l active_k^l),
//   r_k = 1 - sum_{l < halting layer} h_k^l          (the remainder),
//   ponder = mean over tokens of (N_k + r_k)
// which is A-ViT's rho (rho += mask every layer, + remainder at the halting
// layer). The masks are decisions, not differentiable; gradients reach h through
// r and through the distributional prior.
#pragma once
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace engine {

struct HaltingConfig {
  double gamma = 10.0;  // scale of the first channel (A-ViT's gate_scale)
  double beta = -30.0;  // shift (A-ViT's -gate_center)
  double eps = 0.01;    // a token halts once its cumulative score reaches 1 - eps
  // Errors name `source` and the bad key (gamma must be positive, 0 < eps < 1).
  void validate(const std::string& source) const;
};

// h = sigmoid(gamma * x[..., 0] + beta): [B, N] from block outputs [B, N, D].
Tensor halting_scores(const Tensor& block_output, const HaltingConfig& config);

// The scores halting uses at `layer` of `depth`: all ones at the last layer,
// else `scores` with the first `never_halting` tokens (prefix tokens) set to 0.
Tensor forced_scores(const Tensor& scores, int64_t layer, int64_t depth, int64_t never_halting);

// Which tokens are still running. Both fields are [B, N], no gradient: active
// is 0/1 (1 = still updated and attended to), cumulative is c (detached).
struct HaltingState {
  Tensor active, cumulative;
};

// Every token active, c = 0, in `dtype` on `device`.
HaltingState start_halting(int64_t batch, int64_t tokens, DType dtype, Device device);
// Adds the (forced) scores of a layer; a token stops being active once c >= 1 - eps.
HaltingState advance_halting(const HaltingState& state, const Tensor& forced, double eps);

// What the losses need, one entry per layer.
struct HaltingTrace {
  int64_t never_halting = 1;        // prefix tokens, excluded from ponder and prior
  std::vector<Tensor> scores;       // forced h^l [B, N], with gradient
  std::vector<Tensor> raw_scores;   // sigmoid scores before forcing [B, N], for the prior
  std::vector<Tensor> active;       // [B, N] 0/1: active entering layer l
};

Tensor halting_depths(const HaltingTrace& trace);  // N_k [B, N], no gradient
Tensor remainders(const HaltingTrace& trace);      // r_k [B, N], differentiable in h
// mean over images and halting tokens (after the prefix) of N_k + r_k; a scalar.
Tensor ponder_loss(const HaltingTrace& trace);
// Fraction of all tokens active entering each layer (mean over images).
std::vector<double> layer_retention(const HaltingTrace& trace);

// The mean halting distribution over depth: per layer the mean over images and
// halting tokens of the raw score (0 for tokens already halted), normalised to
// sum to 1: [L], differentiable.
Tensor halting_distribution(const HaltingTrace& trace);
// A Gaussian over layers 1..depth centred at target_depth with `std`, normalised.
std::vector<double> gaussian_depth_prior(int64_t depth, double target_depth, double std);
// KL(target || distribution) = sum_l t_l (log t_l - log d_l), as A-ViT's
// kl_div(d.log(), target); a scalar.
Tensor prior_kl(const Tensor& distribution, const std::vector<double>& target);

}  // namespace engine
