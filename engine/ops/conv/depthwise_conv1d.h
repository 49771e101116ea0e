// Depthwise convolution along a sequence with autograd: the mamba mixer's
// short causal conv and the conv token mixer. Sequences are [B, L, C]: batch,
// length (tokens), channels.
#pragma once
#include "engine/tensor.h"

namespace engine {

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
