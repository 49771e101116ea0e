#include "engine/ops/cumsum/cumsum.h"
#include "engine/ops/view/view.h"
#include "tests/ops/op_test.h"

namespace engine {
namespace {

// Inclusive scan of a contiguous [A, B, C] tensor along dim, by a plain loop.
std::vector<double> naive_cumsum(const Tensor& x, int dim) {
  const Shape& s = x.shape();
  std::vector<double> v = x.to_doubles(), out(v.size());
  for (int64_t a = 0; a < s[0]; ++a)
    for (int64_t b = 0; b < s[1]; ++b)
      for (int64_t c = 0; c < s[2]; ++c) {
        int64_t index[3] = {a, b, c};
        double total = 0;
        for (index[dim] = 0; index[dim] <= (dim == 0 ? a : dim == 1 ? b : c); ++index[dim]) {
          total += v[(index[0] * s[1] + index[1]) * s[2] + index[2]];
        }
        out[(a * s[1] + b) * s[2] + c] = total;
      }
  return out;
}

TEST(Cumsum, MatchesNaiveLoop) {
  Rng rng(41);
  Tensor x = Tensor::randn({3, 4, 5}, rng, DType::F64);
  for (int dim : {0, 1, 2}) {
    std::vector<double> expected = naive_cumsum(x, dim), actual = cumsum(x, dim).to_doubles();
    for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(actual[i], expected[i], 1e-12) << "dim " << dim;
  }
  EXPECT_EQ(cumsum(x, -1).to_doubles(), cumsum(x, 2).to_doubles());
  EXPECT_EQ(cumsum(Tensor::from_vector<float>({1, 2, 3, 4}, {4}), 0).to_floats(), (std::vector<float>{1, 3, 6, 10}));
}

TEST(Cumsum, Gradients) {
  Rng rng(42);
  Tensor x = random_leaf({3, 4, 5}, rng);
  for (int64_t dim : {0, 1, 2, -1}) {
    expect_gradients_match([dim](const auto& in) { return cumsum(in[0], dim); }, {x});
  }
  Tensor v = random_leaf({6}, rng);
  expect_gradients_match([](const auto& in) { return cumsum(in[0], 0); }, {v});
  // Non-contiguous input.
  expect_gradients_match([](const auto& in) { return cumsum(transpose(in[0], 0, 2), 1); }, {x});
}

TEST(Cumsum, Errors) {
  EXPECT_THROW(cumsum(Tensor::zeros({2, 3}), 2), Error);
  EXPECT_THROW(cumsum(Tensor::zeros({2, 3}), -3), Error);
}

}  // namespace
}  // namespace engine
