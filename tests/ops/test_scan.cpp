// linear_scan and gated_scan against plain loops and compositions of other
// ops, numerical gradients in float64 (both directions).
#include "engine/ops/ops.h"
#include "tests/ops/op_test.h"

namespace engine {
namespace {

Tensor naive_linear_scan(const Tensor& a, const Tensor& b, bool reverse) {
  const int64_t B = a.size(0), L = a.size(1), C = a.size(2);
  std::vector<double> va = a.to_doubles(), vb = b.to_doubles(), h(va.size());
  for (int64_t n = 0; n < B; ++n)
    for (int64_t c = 0; c < C; ++c) {
      double state = 0;
      for (int64_t k = 0; k < L; ++k) {
        const int64_t i = (n * L + time_at(k, L, reverse)) * C + c;
        h[i] = state = va[i] * state + vb[i];
      }
    }
  return Tensor::from_vector(h, a.shape());
}

TEST(LinearScan, MatchesLoop) {
  Rng rng(1);
  Tensor a = Tensor::uniform({2, 7, 5}, rng, 0.0, 1.0, DType::F64), b = Tensor::randn({2, 7, 5}, rng, DType::F64);
  for (bool reverse : {false, true}) expect_close(linear_scan(a, b, reverse), naive_linear_scan(a, b, reverse), 1e-12);
  // float32 too, with more channels than one kernel block.
  Tensor af = Tensor::uniform({1, 4, 130}, rng, 0.0, 1.0), bf = Tensor::randn({1, 4, 130}, rng);
  expect_close(linear_scan(af, bf, true), naive_linear_scan(af, bf, true), 1e-5);
}

TEST(LinearScan, Gradients) {
  Rng rng(2);
  for (const Shape& shape : {Shape{2, 5, 3}, Shape{1, 1, 4}, Shape{3, 6, 1}}) {
    Tensor a = random_leaf(shape, rng, 0.05, 0.95), b = random_leaf(shape, rng);
    for (bool reverse : {false, true}) {
      expect_gradients_match([reverse](const auto& in) { return linear_scan(in[0], in[1], reverse); }, {a, b});
    }
  }
  // Non-contiguous inputs.
  Tensor a = random_leaf({4, 2, 3}, rng, 0.05, 0.95), b = random_leaf({4, 2, 3}, rng);
  expect_gradients_match(
      [](const auto& in) { return linear_scan(transpose(in[0], 0, 1), transpose(in[1], 0, 1), false); }, {a, b});
}

// gated_scan as the gated_rnn mixer wrote it before the op existed: sigmoid,
// the halting mask, the products and linear_scan.
Tensor composed_gated_scan(const Tensor& u, const Tensor& gate, const Tensor& keep, bool reverse) {
  Tensor a = sigmoid(gate);
  Tensor b = (1.0 - a) * u;
  if (keep.defined()) {
    const Tensor k = unsqueeze(keep, -1);
    a = 1.0 - (1.0 - a) * k;
    b = b * k;
  }
  return linear_scan(a, b, reverse);
}

// Slices u and gate of one [B, L, 3 C] projection (read in place) or
// contiguous tensors; with or without a 0/1 mask that halts some tokens.
TEST(GatedScan, IsTheComposedRecurrence) {
  Rng rng(12);
  const int64_t B = 2, L = 6, C = 3;
  std::vector<float> mask(B * L);
  for (size_t i = 0; i < mask.size(); ++i) mask[i] = (i * 7 + 3) % 4 == 0 ? 0.f : 1.f;  // some halted steps
  const Tensor keep = Tensor::from_vector(mask, {B, L}).to(DType::F64);
  const Tensor projection = random_leaf({B, L, 3 * C}, rng, -2.0, 2.0);
  auto sliced = [&](const testing::Fn& scan) {
    return [scan, C](const std::vector<Tensor>& v) { return scan({narrow(v[0], 2, 0, C), narrow(v[0], 2, C, C)}); };
  };
  for (bool reverse : {false, true}) {
    for (const Tensor& k : {Tensor(), keep}) {
      const testing::Fn fused = [=](const std::vector<Tensor>& v) { return gated_scan(v[0], v[1], k, reverse); };
      const testing::Fn composed = [=](const std::vector<Tensor>& v) {
        return composed_gated_scan(v[0], v[1], k, reverse);
      };
      expect_same_function(sliced(fused), sliced(composed), {projection}, rng);
      expect_same_function(fused, composed, {random_leaf({B, L, C}, rng), random_leaf({B, L, C}, rng, -2.0, 2.0)},
                           rng);
    }
  }
  // A halted step passes the state on: h equals the previous step's.
  const Tensor h = gated_scan(random_leaf({B, L, C}, rng), random_leaf({B, L, C}, rng), keep, false);
  const std::vector<double> v = h.to_doubles();
  for (int64_t i = 0; i < B * L; ++i) {
    if (mask[i] != 0.f || i % L == 0) continue;
    for (int64_t c = 0; c < C; ++c) EXPECT_EQ(v[i * C + c], v[(i - 1) * C + c]) << "step " << i;
  }
}

TEST(GatedScan, Gradients) {
  Rng rng(13);
  const Tensor keep = Tensor::from_vector(std::vector<double>{1, 0, 1, 1, 0, 1, 1, 1, 1, 0}, {2, 5});
  for (bool reverse : {false, true}) {
    for (const Tensor& k : {Tensor(), keep}) {
      expect_gradients_match([&](const auto& in) { return gated_scan(in[0], in[1], k, reverse); },
                             {random_leaf({2, 5, 3}, rng), random_leaf({2, 5, 3}, rng, -2.0, 2.0)});
    }
  }
}

// Sequences of length 1 made by unsqueeze: the size-1 length dim has stride
// 1, not the row stride, and the scans must still find each batch row's
// elements (a review found gated_scan reading batch 1's u and gate, and the
// selective scan its Bm and Cm, one element after batch 0's).
TEST(GatedScan, LengthOneSequencesFromUnsqueeze) {
  Rng rng(11);
  const int64_t B = 2, C = 8;
  const Tensor u = Tensor::randn({B, C}, rng, DType::F64), gate = Tensor::randn({B, C}, rng, DType::F64);
  for (bool reverse : {false, true}) {
    expect_close(gated_scan(unsqueeze(u, 1), unsqueeze(gate, 1), Tensor(), reverse),
                 gated_scan(unsqueeze(u, 1).clone(), unsqueeze(gate, 1).clone(), Tensor(), reverse), 0.0);
  }
}

TEST(Scan, Errors) {
  Tensor seq = Tensor::zeros({2, 3, 4});
  expect_error_mentioning([&] { linear_scan(seq, Tensor::zeros({2, 3, 5}), false); }, {"linear_scan", "[2, 3, 4]"});
  expect_error_mentioning([&] { linear_scan(Tensor::zeros({3, 4}), Tensor::zeros({3, 4}), false); }, {"[B, L, C]"});
  expect_error_mentioning([&] { linear_scan(seq, seq.to(DType::F64), false); }, {"float64"});
  expect_error_mentioning([&] { gated_scan(seq, seq, Tensor::zeros({2, 4}), false); }, {"gated_scan", "keep", "[2, 3]"});
  expect_error_mentioning([&] { gated_scan(seq, Tensor::zeros({2, 3, 5}), Tensor(), false); }, {"gate", "[2, 3, 4]"});
}

TEST(Scan, EmptySequences) {
  Tensor a = Tensor::zeros({2, 0, 3}).set_requires_grad(true);
  Tensor h = linear_scan(a, a, false);
  EXPECT_EQ(h.shape(), a.shape());
  sum(h).backward();
  EXPECT_EQ(a.grad().shape(), a.shape());
}

}  // namespace
}  // namespace engine
