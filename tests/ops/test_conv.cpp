#include "engine/ops/conv/patch_embed.h"
#include "engine/ops/view/view.h"
#include "tests/ops/op_test.h"

namespace engine {
namespace {

// Direct convolution with kernel size = stride = P, no padding.
Tensor naive_patch_conv(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t D = weight.size(0), P = weight.size(2);
  const std::vector<double> xs = x.to_doubles(), ws = weight.to_doubles(), bs = bias.to_doubles();
  std::vector<double> out;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < D; ++d)
      for (int64_t i = 0; i < H / P; ++i)
        for (int64_t j = 0; j < W / P; ++j) {
          double total = bs[d];
          for (int64_t c = 0; c < C; ++c)
            for (int64_t ph = 0; ph < P; ++ph)
              for (int64_t pw = 0; pw < P; ++pw)
                total += ws[((d * C + c) * P + ph) * P + pw] * xs[((b * C + c) * H + i * P + ph) * W + j * P + pw];
          out.push_back(total);
        }
  return Tensor::from_vector(out, {B, D, H / P, W / P});
}

struct ConvCase {
  int64_t batch, channels, height, width, patch, out_channels;
};

class PatchConv : public ::testing::TestWithParam<ConvCase> {};

TEST_P(PatchConv, MatchesDirectConvolution) {
  const ConvCase& s = GetParam();
  Rng rng(21);
  Tensor x = Tensor::randn({s.batch, s.channels, s.height, s.width}, rng);
  Tensor weight = Tensor::randn({s.out_channels, s.channels, s.patch, s.patch}, rng);
  Tensor bias = Tensor::randn({s.out_channels}, rng);
  expect_close(patch_conv2d(x, weight, bias), naive_patch_conv(x, weight, bias), 1e-5);
  expect_close(patch_conv2d(x, weight, Tensor()), naive_patch_conv(x, weight, Tensor::zeros({s.out_channels})),
               1e-5);
}

TEST_P(PatchConv, Gradients) {
  const ConvCase& s = GetParam();
  Rng rng(22);
  Tensor x = random_leaf({s.batch, s.channels, s.height, s.width}, rng);
  Tensor weight = random_leaf({s.out_channels, s.channels, s.patch, s.patch}, rng);
  Tensor bias = random_leaf({s.out_channels}, rng);
  expect_gradients_match([](const auto& in) { return patch_conv2d(in[0], in[1], in[2]); }, {x, weight, bias});
}

INSTANTIATE_TEST_SUITE_P(Shapes, PatchConv,
                         ::testing::Values(ConvCase{2, 3, 8, 8, 4, 5}, ConvCase{2, 3, 8, 8, 2, 5},
                                           ConvCase{1, 2, 6, 4, 2, 3}));

TEST(PatchConvInput, NonContiguousImage) {
  Rng rng(23);
  Tensor x = random_leaf({2, 4, 6, 3}, rng);  // enters as [2, 3, 4, 6] through a permute
  Tensor weight = random_leaf({2, 3, 2, 2}, rng);
  Tensor bias = random_leaf({2}, rng);
  auto conv = [](const auto& in) { return patch_conv2d(permute(in[0], {0, 3, 1, 2}), in[1], in[2]); };
  expect_close(conv(std::vector<Tensor>{x, weight, bias}),
               naive_patch_conv(permute(x, {0, 3, 1, 2}), weight, bias), 1e-12);
  expect_gradients_match(conv, {x, weight, bias});
}

TEST(PatchConvInput, ShapeMismatchesAreErrors) {
  Tensor weight = Tensor::zeros({5, 3, 4, 4});
  expect_error_mentioning([&] { patch_conv2d(Tensor::zeros({1, 3, 8, 6}), weight, Tensor()); },
                          {"[1, 3, 8, 6]", "[5, 3, 4, 4]"});
  expect_error_mentioning([&] { patch_conv2d(Tensor::zeros({1, 2, 8, 8}), weight, Tensor()); },
                          {"[1, 2, 8, 8]", "[5, 3, 4, 4]"});
  expect_error_mentioning([&] { patch_conv2d(Tensor::zeros({1, 3, 8, 8}), weight, Tensor::zeros({4})); },
                          {"bias [4]"});
  EXPECT_THROW(patch_conv2d(Tensor::zeros({3, 8, 8}), weight, Tensor()), Error);
}

}  // namespace
}  // namespace engine
