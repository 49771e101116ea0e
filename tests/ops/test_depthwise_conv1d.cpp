// depthwise_conv1d (and its fused SiLU) against a plain loop and the
// composition with silu, numerical gradients in float64 (both directions).
#include "engine/ops/ops.h"
#include "tests/ops/op_test.h"

namespace engine {
namespace {

Tensor naive_conv(const Tensor& x, const Tensor& w, const Tensor& bias, int64_t pad_left, bool reverse) {
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2), K = w.size(1);
  std::vector<double> vx = x.to_doubles(), vw = w.to_doubles(), vb = bias.to_doubles(), y(vx.size());
  for (int64_t n = 0; n < B; ++n)
    for (int64_t k = 0; k < L; ++k)
      for (int64_t c = 0; c < C; ++c) {
        double out = vb[c];
        for (int64_t j = 0; j < K; ++j) {
          const int64_t src = k + j - pad_left;
          if (src >= 0 && src < L) out += vw[c * K + j] * vx[(n * L + time_at(src, L, reverse)) * C + c];
        }
        y[(n * L + time_at(k, L, reverse)) * C + c] = out;
      }
  return Tensor::from_vector(y, x.shape());
}

TEST(DepthwiseConv1d, MatchesLoop) {
  Rng rng(7);
  Tensor x = Tensor::randn({2, 6, 3}, rng, DType::F64), w = Tensor::randn({3, 4}, rng, DType::F64);
  Tensor bias = Tensor::randn({3}, rng, DType::F64);
  for (int64_t pad : {0, 1, 3}) {
    for (bool reverse : {false, true}) {
      expect_close(depthwise_conv1d(x, w, bias, pad, reverse), naive_conv(x, w, bias, pad, reverse), 1e-12);
    }
  }
  // Causal: token 2 sees tokens 0..2, weighted by the last taps.
  Tensor ones = Tensor::ones({1, 4, 1}, DType::F64), taps = Tensor::from_vector<double>({1, 10, 100}, {1, 3});
  EXPECT_EQ(depthwise_conv1d(ones, taps, Tensor(), 2, false).to_doubles(), (std::vector<double>{100, 110, 111, 111}));
  EXPECT_EQ(depthwise_conv1d(ones, taps, Tensor(), 2, true).to_doubles(), (std::vector<double>{111, 111, 110, 100}));
}

TEST(DepthwiseConv1d, Gradients) {
  Rng rng(8);
  Tensor x = random_leaf({2, 5, 3}, rng), w = random_leaf({3, 3}, rng), bias = random_leaf({3}, rng);
  for (int64_t pad : {1, 2}) {
    for (bool reverse : {false, true}) {
      expect_gradients_match(
          [pad, reverse](const auto& in) { return depthwise_conv1d(in[0], in[1], in[2], pad, reverse); }, {x, w, bias});
    }
  }
  expect_gradients_match([](const auto& in) { return depthwise_conv1d(in[0], in[1], Tensor(), 0, false); }, {x, w});
}

// The fused conv + SiLU (the mamba mixer's conv branch) is silu of the conv:
// values and gradients, and the numerical gradients.
TEST(DepthwiseConv1d, SiluIsSiluOfConv) {
  Rng rng(9);
  const std::vector<Tensor> in = {random_leaf({2, 6, 3}, rng), random_leaf({3, 4}, rng), random_leaf({3}, rng)};
  for (bool reverse : {false, true}) {
    auto composed = [reverse](const std::vector<Tensor>& v) {
      return silu(depthwise_conv1d(v[0], v[1], v[2], 3, reverse));
    };
    auto fused = [reverse](const std::vector<Tensor>& v) { return depthwise_conv1d_silu(v[0], v[1], v[2], 3, reverse); };
    expect_same_function(fused, composed, in, rng);
    expect_gradients_match(fused, in);
  }
  // Without a gradient to take, nothing is kept: the same values.
  NoGradGuard no_grad;
  expect_close(depthwise_conv1d_silu(in[0], in[1], in[2], 1, false),
               silu(depthwise_conv1d(in[0], in[1], in[2], 1, false)), 1e-12);
}

TEST(DepthwiseConv1d, Errors) {
  Tensor seq = Tensor::zeros({2, 3, 4});
  expect_error_mentioning([&] { depthwise_conv1d(seq, Tensor::zeros({4, 3}), Tensor(), 3, false); },
                          {"pad_left", "[0, 3)"});
  expect_error_mentioning([&] { depthwise_conv1d(seq, Tensor::zeros({2, 3}), Tensor(), 0, false); }, {"weight"});
}

}  // namespace
}  // namespace engine
