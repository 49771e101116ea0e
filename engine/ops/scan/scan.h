// The linear recurrences with autograd: linear_scan, and gated_scan for the
// gated_rnn mixer (selective_scan.h has mamba's scan). Sequences are [B, L, C]:
// batch, length (tokens), channels. `reverse` runs every op from the last
// token to the first (the op applied to the flipped sequence, with the result
// flipped back), so a bidirectional mixer is the sum of two calls.
#pragma once
#include "engine/tensor.h"

namespace engine {

// Diagonal linear recurrence: h_t = a_t * h_{t-1} + b_t with h_{-1} = 0
// (reverse: h_t = a_t * h_{t+1} + b_t from t = L - 1 down). a, b [B, L, C].
Tensor linear_scan(const Tensor& a, const Tensor& b, bool reverse);

// The gated_rnn mixer's recurrence with its gate inside, per batch and channel:
//   h_t = a_t h_{t-1} + (1 - a_t) u_t,   a_t = sigmoid(gate_t)
// u, gate [B, L, C] (read in place when both are slices of one wider tensor,
// e.g. the mixer's input projection); keep [B, L] or undefined: a halting
// mask, a_t = 1 - (1 - sigmoid(gate_t)) keep_t and input weight
// (1 - sigmoid(gate_t)) keep_t, so that keep_t = 0 passes the state on
// unchanged (keep gets no gradient). One pass where sigmoid, 1 - a, the
// products and linear_scan would be five.
Tensor gated_scan(const Tensor& u, const Tensor& gate, const Tensor& keep, bool reverse);

}  // namespace engine
