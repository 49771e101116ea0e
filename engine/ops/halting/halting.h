// One layer of A-ViT token halting for inference, on tokens in rows (the
// compacted path of models/avit.cpp; layers/halting.h has the differentiable
// version that training uses). Per token t:
//   h_t           = sigmoid(gamma x[t, 0] + beta) can_halt_t
//   cumulative'_t = cumulative_t + h_t
//   active'_t     = active_t if cumulative'_t < 1 - eps, else 0
// x [T, D] (a block's output: only channel 0 is read); can_halt (1, or 0 for
// tokens that never halt), cumulative and active [T], all in x's dtype.
// Returns {cumulative', active'}, without gradient. One kernel where the
// composition of halting_scores, the mask and advance_halting takes ten; the
// same formulas in x's dtype (the results agree to rounding: a kernel may
// fuse gamma x + beta into one multiply-add).
#pragma once
#include <utility>

#include "engine/tensor.h"

namespace engine {

std::pair<Tensor, Tensor> halting_step(const Tensor& x, const Tensor& can_halt, const Tensor& cumulative,
                                       const Tensor& active, double gamma, double beta, double eps);

}  // namespace engine
