// selective_scan against a plain loop and compositions of other ops,
// numerical gradients in float64 (both directions), and backward reductions
// independent of the thread count.
#include <omp.h>

#include <cmath>

#include "engine/ops/ops.h"
#include "tests/ops/op_test.h"

namespace engine {
namespace {

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

// Float64 leaves x, dt, A, Bm, Cm, D of a selective scan, in valid ranges.
std::vector<Tensor> selective_inputs(int64_t B, int64_t L, int64_t C, int64_t S, Rng& rng) {
  return {random_leaf({B, L, C}, rng),         random_leaf({B, L, C}, rng, 0.05, 1.0),
          random_leaf({C, S}, rng, -2.0, -0.1), random_leaf({B, L, S}, rng),
          random_leaf({B, L, S}, rng),         random_leaf({C}, rng)};
}

Tensor run_selective(const std::vector<Tensor>& in, bool reverse) {
  return selective_scan(in[0], in[1], in[2], in[3], in[4], in[5], reverse);
}

TEST(SelectiveScan, MatchesLoop) {
  Rng rng(3);
  for (bool reverse : {false, true}) {
    std::vector<Tensor> in = selective_inputs(2, 6, 5, 4, rng);
    expect_close(run_selective(in, reverse), naive_selective_scan(in, reverse), 1e-12);
  }
}

// With one state, the selective scan is a linear scan with a = exp(dt A) and
// b = dt Bm x, read out as Cm h + D x: values and all gradients must agree.
TEST(SelectiveScan, WithOneStateIsALinearScan) {
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

TEST(SelectiveScan, Gradients) {
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
// one block, and BackwardIndependentOfThreads compares the kernel
// with itself).
TEST(SelectiveScan, GradientsAcrossChannelBlocks) {
  Rng rng(8);
  const std::vector<Tensor> in = selective_inputs(2, 3, 35, 2, rng);
  expect_gradients_match([](const auto& v) { return run_selective(v, false); }, in);
}

// A given as Mamba's A_log (A = -exp(A_log), computed by the kernels) is the
// scan of neg(exp(A_log)): the same y and gradients, and the numerical ones.
TEST(SelectiveScan, TakesALog) {
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
TEST(SelectiveScan, ReadsStateRowsInPlace) {
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

// Bm and Cm of length-1 sequences made by unsqueeze (GatedScan's test of the
// same name says why).
TEST(SelectiveScan, LengthOneSequencesFromUnsqueeze) {
  Rng rng(11);
  const int64_t B = 2, C = 8, S = 4;
  std::vector<Tensor> in = selective_inputs(B, 1, C, S, rng);
  const Tensor bm = Tensor::randn({B, S}, rng, DType::F64), cm = Tensor::randn({B, S}, rng, DType::F64);
  expect_close(selective_scan(in[0], in[1], in[2], unsqueeze(bm, 1), unsqueeze(cm, 1), in[5], false),
               selective_scan(in[0], in[1], in[2], unsqueeze(bm, 1).clone(), unsqueeze(cm, 1).clone(), in[5], false),
               0.0);
}

// The parameter gradients are reduced over batch and channels; the result
// must not depend on how many threads computed the partial sums.
TEST(SelectiveScan, BackwardIndependentOfThreads) {
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

TEST(SelectiveScan, Errors) {
  Tensor seq = Tensor::zeros({2, 3, 4});
  Tensor A = Tensor::zeros({4, 2}), Bm = Tensor::zeros({2, 3, 2}), D = Tensor::zeros({4});
  expect_error_mentioning([&] { selective_scan(seq, seq, Tensor::zeros({3, 2}), Bm, Bm, D, false); }, {"A", "C = 4"});
  expect_error_mentioning([&] { selective_scan(seq, seq, A, Tensor::zeros({2, 3, 3}), Bm, D, false); },
                          {"Bm", "[2, 3, 2]"});
  expect_error_mentioning([&] { selective_scan(seq, seq, A, Bm, Bm, Tensor::zeros({3}), false); }, {"D", "[4]"});
}

}  // namespace
}  // namespace engine
