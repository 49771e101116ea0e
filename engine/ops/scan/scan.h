// Sequence scans with autograd, for the sequential token mixers. Sequences are
// [B, L, C]: batch, length (tokens), channels. `reverse` runs every op from the
// last token to the first (the op applied to the flipped sequence, with the
// result flipped back), so a bidirectional mixer is the sum of two calls.
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

// Mamba's selective scan (S6), per batch and channel c, with a state of S:
//   h_t[c, s] = exp(dt_t[c] A[c, s]) h_{t-1}[c, s] + dt_t[c] Bm_t[s] x_t[c]
//   y_t[c]    = sum_s Cm_t[s] h_t[c, s] + D[c] x_t[c]
// x, dt [B, L, C] (dt already positive, e.g. softplus'ed); A [C, S] (negative
// for a stable scan); Bm, Cm [B, L, S]; D [C]  ->  y [B, L, C].
// The states are never materialised: the backward recomputes them (on the
// GPU from the state entering every 8th step, which a forward saves when its
// inputs need grad).
Tensor selective_scan(const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& Bm, const Tensor& Cm,
                      const Tensor& D, bool reverse);
// The same scan with A as Mamba stores it: A_log [C, S], A = -exp(A_log),
// computed by the kernels as they load A (two kernels fewer per call than
// selective_scan(.., neg(exp(A_log)), ..)).
Tensor selective_scan_log_a(const Tensor& x, const Tensor& dt, const Tensor& A_log, const Tensor& Bm,
                            const Tensor& Cm, const Tensor& D, bool reverse);

// Depthwise 1-D convolution along the sequence (PyTorch's Conv1d with
// groups = C, as cross-correlation): y_t[c] = bias[c] + sum_j weight[c, j] x_{t + j - pad_left}[c],
// zero outside the sequence. x [B, L, C]; weight [C, K]; bias [C] or undefined.
// pad_left = K - 1 is causal (y_t sees x_{t-K+1..t}), (K - 1) / 2 with odd K is
// 'same'. reverse with pad_left = K - 1 is the causal conv of the flipped sequence.
Tensor depthwise_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t pad_left, bool reverse);
// silu(depthwise_conv1d(...)) in one pass (the mamba mixer's conv branch): the
// convolution goes through SiLU before it is written.
Tensor depthwise_conv1d_silu(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t pad_left,
                             bool reverse);

}  // namespace engine
