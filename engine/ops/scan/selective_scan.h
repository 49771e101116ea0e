// Mamba's selective scan with autograd, for the mamba token mixer. Sequences
// are [B, L, C]: batch, length (tokens), channels. `reverse` runs the scan
// from the last token to the first (the op applied to the flipped sequence,
// with the result flipped back), so a bidirectional mixer is the sum of two
// calls.
#pragma once
#include "engine/tensor.h"

namespace engine {

// The selective scan (S6), per batch and channel c, with a state of S:
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

}  // namespace engine
