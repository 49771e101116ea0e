// halting_step against the composition it replaces (layers/halting.h's
// halting_scores, the prefix mask and advance_halting), on both dtypes and on
// rows at a stride; on a GPU against the CPU. Inputs are random, with
// cumulative scores spread on both sides of the threshold and tokens already
// halted among them.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "engine/ops/ops.h"
#include "layers/halting.h"
#include "tests/cuda/cuda_expect.h"
#include "tests/ops/op_test.h"

namespace engine {
namespace {

struct StepInputs {
  Tensor x, can_halt, cumulative, active;
};

// T tokens of D channels; x's channel 0 spread so that the scores span (0, 1).
StepInputs random_inputs(int64_t tokens, int64_t dim, DType dtype, Rng& rng) {
  StepInputs in;
  in.x = Tensor::uniform({tokens, dim}, rng, -1.5, 1.5, dtype);
  in.can_halt = greater_equal(Tensor::uniform({tokens}, rng, 0, 1, dtype), 0.2);
  in.cumulative = Tensor::uniform({tokens}, rng, 0, 1.2, dtype);
  in.active = mul(greater_equal(Tensor::uniform({tokens}, rng, 0, 1, dtype), 0.3),
                  1.0 - greater_equal(in.cumulative, 0.99));
  return in;
}

// The composition, as the masked path computes it.
HaltingState composed_step(const StepInputs& in, const HaltingConfig& config) {
  const Tensor scores = mul(halting_scores(unsqueeze(in.x, 0), config), unsqueeze(in.can_halt, 0));
  return advance_halting({unsqueeze(in.active, 0), unsqueeze(in.cumulative, 0)}, scores, config.eps);
}

const HaltingConfig kConfig{4.0, -0.5, 0.01};

TEST(HaltingStep, MatchesTheComposition) {
  Rng rng(61);
  for (DType dtype : {DType::F32, DType::F64}) {
    const StepInputs in = random_inputs(777, 5, dtype, rng);
    const auto [cumulative, active] =
        halting_step(in.x, in.can_halt, in.cumulative, in.active, kConfig.gamma, kConfig.beta, kConfig.eps);
    const HaltingState expected = composed_step(in, kConfig);
    expect_close(cumulative, reshape(expected.cumulative, {-1}), dtype == DType::F32 ? 1e-6 : 1e-14);
    EXPECT_EQ(active.to_doubles(), reshape(expected.active, {-1}).to_doubles()) << dtype_name(dtype);
    // Both outcomes occur: tokens that halt now, and tokens that run on.
    const std::vector<double> before = in.active.to_doubles(), after = active.to_doubles();
    int64_t halting_now = 0, running = 0;
    for (size_t t = 0; t < before.size(); ++t) {
      halting_now += before[t] == 1.0 && after[t] == 0.0;
      running += after[t] == 1.0;
    }
    EXPECT_GT(halting_now, 20);
    EXPECT_GT(running, 20);
  }
}

TEST(HaltingStep, ReadsChannelZeroOfStridedRowsAndColumns) {
  Rng rng(62);
  const StepInputs in = random_inputs(50, 3, DType::F32, rng);
  const Tensor wide = Tensor::uniform({50, 7}, rng, -1, 1);
  const Tensor rows = narrow(concat({in.x, wide}, 1), 1, 0, 3);  // rows of 3 at a stride of 10
  const auto [cumulative, active] =
      halting_step(rows, in.can_halt, in.cumulative, in.active, kConfig.gamma, kConfig.beta, kConfig.eps);
  const auto [dense_cumulative, dense_active] =
      halting_step(in.x, in.can_halt, in.cumulative, in.active, kConfig.gamma, kConfig.beta, kConfig.eps);
  EXPECT_EQ(cumulative.to_doubles(), dense_cumulative.to_doubles());
  EXPECT_EQ(active.to_doubles(), dense_active.to_doubles());
  // Columns at a stride (a transposed view) are made contiguous first.
  const Tensor columns = transpose(transpose(in.x, 0, 1).contiguous(), 0, 1);
  ASSERT_NE(columns.strides()[1], 1);
  const auto [cumulative_t, active_t] =
      halting_step(columns, in.can_halt, in.cumulative, in.active, kConfig.gamma, kConfig.beta, kConfig.eps);
  EXPECT_EQ(cumulative_t.to_doubles(), dense_cumulative.to_doubles());
  EXPECT_EQ(active_t.to_doubles(), dense_active.to_doubles());
}

TEST(HaltingStep, RejectsMismatchedTokens) {
  Rng rng(63);
  const StepInputs in = random_inputs(10, 4, DType::F32, rng);
  expect_error_mentioning(
      [&] { halting_step(in.x, narrow(in.can_halt, 0, 0, 9), in.cumulative, in.active, 1, 0, 0.01); },
      {"halting_step", "[10]", "[9]"});
  expect_error_mentioning([&] { halting_step(reshape(in.x, {-1}), in.can_halt, in.cumulative, in.active, 1, 0, 0.01); },
                          {"halting_step", "[T, D]"});
}

// A cumulative score of exactly 1 - eps halts the token (>=, as advance_halting's
// greater_equal), one ulp below it does not: random inputs never land on the
// threshold, so the comparison's boundary is checked here by hand.
TEST(HaltingStep, HaltsAtExactlyTheThreshold) {
  const double eps = kConfig.eps;
  // Tokens: at the threshold, one ulp below it, and below it plus a score that reaches past it.
  const std::vector<double> at_f64 = {1.0 - eps, std::nextafter(1.0 - eps, 0.0), 0.5};
  const float threshold_f32 = static_cast<float>(1.0 - eps);
  const std::vector<double> at_f32 = {threshold_f32, std::nextafter(threshold_f32, 0.0f), 0.5};
  for (DType dtype : {DType::F32, DType::F64}) {
    SCOPED_TRACE(dtype_name(dtype));
    StepInputs in;
    // Channel 0 of token 2 gives sigmoid(4 * 2 - 0.5) > 0.99: 0.5 + score > 1 - eps.
    in.x = Tensor::from_vector(std::vector<double>{0.3, -1, -0.7, 2, 2, 0.1}, {3, 2}).to(dtype);
    in.can_halt = Tensor::from_vector(std::vector<double>{0, 0, 1}, {3}).to(dtype);
    in.cumulative = Tensor::from_vector(dtype == DType::F32 ? at_f32 : at_f64, {3}).to(dtype);
    in.active = Tensor::from_vector(std::vector<double>{1, 1, 1}, {3}).to(dtype);
    const auto [cumulative, active] =
        halting_step(in.x, in.can_halt, in.cumulative, in.active, kConfig.gamma, kConfig.beta, kConfig.eps);
    EXPECT_EQ(active.to_doubles(), (std::vector<double>{0, 1, 0}));
    EXPECT_EQ(cumulative.to_doubles()[0], in.cumulative.to_doubles()[0]);  // no score added (can_halt 0)
    const HaltingState expected = composed_step(in, kConfig);
    EXPECT_EQ(active.to_doubles(), reshape(expected.active, {-1}).to_doubles());
  }
}

// Skips without a GPU.
TEST(CudaHaltingStep, MatchesTheCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  Rng rng(64);
  for (DType dtype : {DType::F32, DType::F64}) {
    const StepInputs in = random_inputs(5000, 6, dtype, rng);
    const auto [cumulative, active] =
        halting_step(in.x, in.can_halt, in.cumulative, in.active, kConfig.gamma, kConfig.beta, kConfig.eps);
    const Device gpu = Device::cuda();
    const auto [gpu_cumulative, gpu_active] =
        halting_step(in.x.to(gpu), in.can_halt.to(gpu), in.cumulative.to(gpu), in.active.to(gpu), kConfig.gamma,
                     kConfig.beta, kConfig.eps);
    expect_all_close(gpu_cumulative, cumulative, dtype == DType::F32 ? 1e-6 : 1e-14, "cumulative");
    EXPECT_EQ(gpu_active.to_doubles(), active.to_doubles()) << dtype_name(dtype);
  }
}

}  // namespace
}  // namespace engine
