// Elementwise ops with autograd: binary ops broadcast like NumPy/PyTorch.
#pragma once
#include "engine/tensor.h"

namespace engine {

Shape broadcast_shapes(const Shape& a, const Shape& b);

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);

Tensor add(const Tensor& x, double scalar);
Tensor mul(const Tensor& x, double scalar);
Tensor pow(const Tensor& x, double exponent);
// 1 where x >= threshold, else 0, in x's dtype; a step function, so no gradient
// is recorded (masks such as A-ViT's halting decisions).
Tensor greater_equal(const Tensor& x, double threshold);

Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor gelu(const Tensor& x);  // exact: 0.5 x (1 + erf(x / sqrt 2))
Tensor silu(const Tensor& x);
Tensor softplus(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor reciprocal(const Tensor& x);

// (a + b) * silu(z), elementwise, in one pass; b may be undefined (then
// a * silu(z)). All defined inputs have one shape, dtype and device (no
// broadcasting). The gate of the bidirectional sequential mixers: gated_rnn's
// silu(W_g x) * (h_fwd + h_bwd) and mamba's (y_fwd + y_bwd) * silu(z).
Tensor silu_gated_sum(const Tensor& a, const Tensor& b, const Tensor& z);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& x) { return neg(x); }
inline Tensor operator+(const Tensor& x, double s) { return add(x, s); }
inline Tensor operator+(double s, const Tensor& x) { return add(x, s); }
inline Tensor operator-(const Tensor& x, double s) { return add(x, -s); }
inline Tensor operator-(double s, const Tensor& x) { return add(neg(x), s); }
inline Tensor operator*(const Tensor& x, double s) { return mul(x, s); }
inline Tensor operator*(double s, const Tensor& x) { return mul(x, s); }
inline Tensor operator/(const Tensor& x, double s) { return mul(x, 1.0 / s); }
inline Tensor operator/(double s, const Tensor& x) { return mul(reciprocal(x), s); }

}  // namespace engine
