// The scan family: linear_scan, gated_scan, selective_scan and depthwise_conv1d against
// plain loops and compositions of other ops, numerical gradients in float64
// (both directions), and thread-count independent backward reductions.
#include <omp.h>

#include <cmath>

#include "engine/ops/ops.h"
#include "tests/ops/op_test.h"

namespace engine {
namespace {

// Time index of step k of a scan over `length` tokens.
int64_t time_at(int64_t step, int64_t length, bool reverse) { return reverse ? length - 1 - step : step; }

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

// The selective scan with every state of (b, c) walked explicitly.
Tensor naive_selective_scan(const std::vector<Tensor>& in, bool reverse) {
  const Tensor& x = in[0];
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2), S = in[2].size(1);
  std::vector<double> vx = x.to_doubles(), dt = in[1].to_doubles(), A = in[2].to_doubles(), Bm = in[3].to_doubles(),
                      Cm = in[4].to_doubles(), D = in[5].to_doubles(), y(vx.size());
  for (int64_t n = 0; n < B; ++n)
    for (int64_t c = 0; c < C; ++c) {
      std::vector<double> h(S, 0.0);
      for (int64_t k = 0; k < L; ++k) {
        const int64_t t = time_at(k, L, reverse), i = (n * L + t) * C + c;
        double out = D[c] * vx[i];
        for (int64_t s = 0; s < S; ++s) {
          const int64_t j = (n * L + t) * S + s;
          h[s] = std::exp(dt[i] * A[c * S + s]) * h[s] + dt[i] * Bm[j] * vx[i];
          out += Cm[j] * h[s];
        }
        y[i] = out;
      }
    }
  return Tensor::from_vector(y, x.shape());
}

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

// Float64 leaves x, dt, A, Bm, Cm, D of a selective scan, in valid ranges.
std::vector<Tensor> selective_inputs(int64_t B, int64_t L, int64_t C, int64_t S, Rng& rng) {
  return {random_leaf({B, L, C}, rng),         random_leaf({B, L, C}, rng, 0.05, 1.0),
          random_leaf({C, S}, rng, -2.0, -0.1), random_leaf({B, L, S}, rng),
          random_leaf({B, L, S}, rng),         random_leaf({C}, rng)};
}

Tensor run_selective(const std::vector<Tensor>& in, bool reverse) {
  return selective_scan(in[0], in[1], in[2], in[3], in[4], in[5], reverse);
}

// Gradients of sum(f(inputs) * weights) with respect to every input.
std::vector<Tensor> gradients(const testing::Fn& f, const std::vector<Tensor>& inputs, const Tensor& weights) {
  for (const Tensor& t : inputs) t.zero_grad();
  sum(mul(f(inputs), weights)).backward();
  std::vector<Tensor> grads;
  for (const Tensor& t : inputs) grads.push_back(t.grad());
  return grads;
}

// A fused op and its composition from other ops agree: the same value and
// the same gradient of every input (float64, to 1e-12).
void expect_same_function(const testing::Fn& fused, const testing::Fn& composed, const std::vector<Tensor>& inputs,
                          Rng& rng) {
  const Tensor expected = composed(inputs);
  expect_close(fused(inputs), expected, 1e-12);
  const Tensor weights = Tensor::uniform(expected.shape(), rng, 0.5, 1.5, DType::F64);
  const std::vector<Tensor> expected_grads = gradients(composed, inputs, weights);
  const std::vector<Tensor> actual_grads = gradients(fused, inputs, weights);
  for (size_t i = 0; i < inputs.size(); ++i) expect_close(actual_grads[i], expected_grads[i], 1e-12);
}

TEST(Scan, LinearMatchesLoop) {
  Rng rng(1);
  Tensor a = Tensor::uniform({2, 7, 5}, rng, 0.0, 1.0, DType::F64), b = Tensor::randn({2, 7, 5}, rng, DType::F64);
  for (bool reverse : {false, true}) expect_close(linear_scan(a, b, reverse), naive_linear_scan(a, b, reverse), 1e-12);
  // float32 too, with more channels than one kernel block.
  Tensor af = Tensor::uniform({1, 4, 130}, rng, 0.0, 1.0), bf = Tensor::randn({1, 4, 130}, rng);
  expect_close(linear_scan(af, bf, true), naive_linear_scan(af, bf, true), 1e-5);
}

TEST(Scan, LinearGradients) {
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
TEST(Scan, GatedIsTheComposedRecurrence) {
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

TEST(Scan, GatedGradients) {
  Rng rng(13);
  const Tensor keep = Tensor::from_vector(std::vector<double>{1, 0, 1, 1, 0, 1, 1, 1, 1, 0}, {2, 5});
  for (bool reverse : {false, true}) {
    for (const Tensor& k : {Tensor(), keep}) {
      expect_gradients_match([&](const auto& in) { return gated_scan(in[0], in[1], k, reverse); },
                             {random_leaf({2, 5, 3}, rng), random_leaf({2, 5, 3}, rng, -2.0, 2.0)});
    }
  }
}

TEST(Scan, SelectiveMatchesLoop) {
  Rng rng(3);
  for (bool reverse : {false, true}) {
    std::vector<Tensor> in = selective_inputs(2, 6, 5, 4, rng);
    expect_close(run_selective(in, reverse), naive_selective_scan(in, reverse), 1e-12);
  }
}

// With one state, the selective scan is a linear scan with a = exp(dt A) and
// b = dt Bm x, read out as Cm h + D x: values and all gradients must agree.
TEST(Scan, SelectiveWithOneStateIsALinearScan) {
  Rng rng(4);
  for (bool reverse : {false, true}) {
    std::vector<Tensor> in = selective_inputs(2, 7, 3, 1, rng);
    auto composed = [reverse](const std::vector<Tensor>& v) {
      Tensor decay = exp(mul(v[1], reshape(v[2], {-1})));
      Tensor h = linear_scan(decay, mul(mul(v[1], v[3]), v[0]), reverse);
      return add(mul(v[4], h), mul(v[5], v[0]));
    };
    auto fused = [reverse](const std::vector<Tensor>& v) { return run_selective(v, reverse); };
    expect_same_function(fused, composed, in, rng);
  }
}

TEST(Scan, SelectiveGradients) {
  Rng rng(5);
  for (const Shape& bcls : {Shape{2, 4, 3, 2}, Shape{1, 1, 2, 3}, Shape{1, 5, 1, 1}}) {
    std::vector<Tensor> in = selective_inputs(bcls[0], bcls[1], bcls[2], bcls[3], rng);
    for (bool reverse : {false, true}) {
      expect_gradients_match([reverse](const auto& v) { return run_selective(v, reverse); }, in);
    }
  }
}

// More channels than a CPU backward task's block of 16: dBm and dCm, shared
// by all channels, sum the partials of every block (the shapes above fit in
// one block, and SelectiveBackwardIndependentOfThreads compares the kernel
// with itself).
TEST(Scan, SelectiveGradientsAcrossChannelBlocks) {
  Rng rng(8);
  const std::vector<Tensor> in = selective_inputs(2, 3, 35, 2, rng);
  expect_gradients_match([](const auto& v) { return run_selective(v, false); }, in);
}

// A given as Mamba's A_log (A = -exp(A_log), computed by the kernels) is the
// scan of neg(exp(A_log)): the same y and gradients, and the numerical ones.
TEST(Scan, SelectiveTakesALog) {
  Rng rng(10);
  std::vector<Tensor> in = selective_inputs(2, 6, 3, 4, rng);
  in[2] = random_leaf({3, 4}, rng, -2.3, 0.7);  // A_log
  for (bool reverse : {false, true}) {
    auto composed = [reverse](const std::vector<Tensor>& v) {
      return selective_scan(v[0], v[1], neg(exp(v[2])), v[3], v[4], v[5], reverse);
    };
    auto fused = [reverse](const std::vector<Tensor>& v) {
      return selective_scan_log_a(v[0], v[1], v[2], v[3], v[4], v[5], reverse);
    };
    expect_same_function(fused, composed, in, rng);
    expect_gradients_match(fused, in);
  }
}

// Bm and Cm as slices of one wider tensor (x_proj's output in the Mamba
// mixer) are read in place: the same y as from contiguous copies, and
// gradients that reach the wide tensor. A slice next to a contiguous tensor
// (different row strides) takes the copying path.
TEST(Scan, SelectiveReadsStateRowsInPlace) {
  Rng rng(7);
  const int64_t B = 2, L = 5, C = 3, S = 4, R = 3;
  std::vector<Tensor> in = selective_inputs(B, L, C, S, rng);
  const Tensor wide = random_leaf({B, L, R + 2 * S}, rng);
  auto with_rows = [&](const std::vector<Tensor>& v, bool copy_cm) {
    const Tensor bm = narrow(v[3], 2, R, S), cm = narrow(v[3], 2, R + S, S);
    return selective_scan(v[0], v[1], v[2], bm, copy_cm ? cm.contiguous() : cm, v[4], /*reverse=*/true);
  };
  const std::vector<Tensor> args = {in[0], in[1], in[2], wide, in[5]};
  const Tensor copies = selective_scan(in[0], in[1], in[2], narrow(wide, 2, R, S).contiguous(),
                                       narrow(wide, 2, R + S, S).contiguous(), in[5], true);
  EXPECT_EQ(with_rows(args, false).to_doubles(), copies.to_doubles());
  for (bool copy_cm : {false, true}) {
    expect_gradients_match([&](const auto& v) { return with_rows(v, copy_cm); }, args);
  }
}

// Sequences of length 1 made by unsqueeze: the size-1 length dim has stride
// 1, not the row stride, and the scans must still find each batch row's
// elements (a review found gated_scan reading batch 1's u and gate, and the
// selective scan its Bm and Cm, one element after batch 0's).
TEST(Scan, LengthOneSequencesFromUnsqueeze) {
  Rng rng(11);
  const int64_t B = 2, C = 8, S = 4;
  const Tensor u = Tensor::randn({B, C}, rng, DType::F64), gate = Tensor::randn({B, C}, rng, DType::F64);
  for (bool reverse : {false, true}) {
    expect_close(gated_scan(unsqueeze(u, 1), unsqueeze(gate, 1), Tensor(), reverse),
                 gated_scan(unsqueeze(u, 1).clone(), unsqueeze(gate, 1).clone(), Tensor(), reverse), 0.0);
  }
  std::vector<Tensor> in = selective_inputs(B, 1, C, S, rng);
  const Tensor bm = Tensor::randn({B, S}, rng, DType::F64), cm = Tensor::randn({B, S}, rng, DType::F64);
  expect_close(selective_scan(in[0], in[1], in[2], unsqueeze(bm, 1), unsqueeze(cm, 1), in[5], false),
               selective_scan(in[0], in[1], in[2], unsqueeze(bm, 1).clone(), unsqueeze(cm, 1).clone(), in[5], false),
               0.0);
}

// The parameter gradients are reduced over batch and channels; the result
// must not depend on how many threads computed the partial sums.
TEST(Scan, SelectiveBackwardIndependentOfThreads) {
  Rng rng(6);
  std::vector<Tensor> in;
  for (const Tensor& t : selective_inputs(2, 32, 40, 8, rng)) {
    in.push_back(t.detach().to(DType::F32).set_requires_grad(true));
  }
  Tensor weights = Tensor::randn({2, 32, 40}, rng);
  auto fused = [](const std::vector<Tensor>& v) { return run_selective(v, true); };
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  std::vector<Tensor> serial = gradients(fused, in, weights);
  omp_set_num_threads(3);
  std::vector<Tensor> parallel = gradients(fused, in, weights);
  omp_set_num_threads(threads);
  for (size_t i = 0; i < in.size(); ++i) EXPECT_EQ(serial[i].to_floats(), parallel[i].to_floats()) << "input " << i;
}

TEST(Scan, ConvMatchesLoop) {
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

TEST(Scan, ConvGradients) {
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
TEST(Scan, ConvSiluIsSiluOfConv) {
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

TEST(Scan, Errors) {
  Tensor seq = Tensor::zeros({2, 3, 4});
  expect_error_mentioning([&] { linear_scan(seq, Tensor::zeros({2, 3, 5}), false); }, {"linear_scan", "[2, 3, 4]"});
  expect_error_mentioning([&] { linear_scan(Tensor::zeros({3, 4}), Tensor::zeros({3, 4}), false); }, {"[B, L, C]"});
  expect_error_mentioning([&] { linear_scan(seq, seq.to(DType::F64), false); }, {"float64"});
  expect_error_mentioning([&] { gated_scan(seq, seq, Tensor::zeros({2, 4}), false); }, {"gated_scan", "keep", "[2, 3]"});
  expect_error_mentioning([&] { gated_scan(seq, Tensor::zeros({2, 3, 5}), Tensor(), false); }, {"gate", "[2, 3, 4]"});
  Tensor A = Tensor::zeros({4, 2}), Bm = Tensor::zeros({2, 3, 2}), D = Tensor::zeros({4});
  expect_error_mentioning([&] { selective_scan(seq, seq, Tensor::zeros({3, 2}), Bm, Bm, D, false); }, {"A", "C = 4"});
  expect_error_mentioning([&] { selective_scan(seq, seq, A, Tensor::zeros({2, 3, 3}), Bm, D, false); },
                          {"Bm", "[2, 3, 2]"});
  expect_error_mentioning([&] { selective_scan(seq, seq, A, Bm, Bm, Tensor::zeros({3}), false); }, {"D", "[4]"});
  expect_error_mentioning([&] { depthwise_conv1d(seq, Tensor::zeros({4, 3}), Tensor(), 3, false); },
                          {"pad_left", "[0, 3)"});
  expect_error_mentioning([&] { depthwise_conv1d(seq, Tensor::zeros({2, 3}), Tensor(), 0, false); }, {"weight"});
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
