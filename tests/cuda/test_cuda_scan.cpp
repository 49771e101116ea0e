// The scan family on CUDA against the CPU reference: linear_scan, gated_scan,
// selective_scan and depthwise_conv1d, both directions, float32 and float64,
// forward outputs and the gradient of every input (backward of a random
// weighted sum on each device), bit-identical results when the same CUDA
// backward runs twice, and the sequential token mixers end to end.
// Every test skips itself on a machine without a GPU (`make test-gpu` runs them).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "engine/ops/ops.h"
#include "engine/ops/scan/selective_scan_kernels.h"
#include "layers/mixers/factory.h"
#include "layers/module.h"
#include "tests/cuda/cuda_expect.h"
#include "tests/expect_error.h"

namespace engine {
namespace {

using Inputs = std::vector<Tensor>;
using Op = std::function<Tensor(const Inputs&)>;

// expect_all_close's per-element tolerances (tests/cuda/cuda_expect.h).
constexpr double kTolF64 = 1e-10;
constexpr double kTolF32 = 1e-4;

double tolerance(DType dtype) { return dtype == DType::F64 ? kTolF64 : kTolF32; }

const char* dtype_label(DType dtype) { return dtype == DType::F64 ? "float64" : "float32"; }

void expect_bit_identical(const Tensor& first, const Tensor& second, const std::string& what) {
  ASSERT_TRUE(first.defined() && second.defined()) << what;
  EXPECT_TRUE(first.to_doubles() == second.to_doubles()) << what << " differs between two identical CUDA runs";
}

// A copy of a CPU leaf on the GPU, itself a leaf that requires grad.
Tensor cuda_leaf(const Tensor& cpu) {
  Tensor t = cpu.detach().to(Device::cuda());
  t.set_requires_grad(true);
  return t;
}

Inputs cuda_leaves(const Inputs& cpu) {
  Inputs out;
  for (const Tensor& t : cpu) out.push_back(t.defined() ? cuda_leaf(t) : Tensor());
  return out;
}

// A leaf with values uniform in [low, high] (never all zero), in `dtype`.
Tensor leaf(const Shape& shape, Rng& rng, double low, double high, DType dtype) {
  Tensor t = Tensor::uniform(shape, rng, low, high, dtype);
  t.set_requires_grad(true);
  return t;
}

struct Result {
  Tensor out;
  Inputs grads;  // one per input (undefined for undefined inputs)
};

// op(inputs) and the gradients of sum(op(inputs) * weights), on the inputs' device.
Result forward_backward(const Op& op, const Inputs& inputs, const Tensor& weights) {
  for (const Tensor& t : inputs) {
    if (t.defined()) t.zero_grad();
  }
  Tensor out = op(inputs);
  sum(mul(out, weights.to(out.device()))).backward();
  Result result{out.detach(), {}};
  for (const Tensor& t : inputs) result.grads.push_back(t.defined() ? t.grad() : Tensor());
  return result;
}

// Runs `op` on the CPU inputs and on copies on the GPU (twice there), and
// checks the outputs and every gradient against the CPU, and the two GPU runs
// against each other bit for bit.
void compare_with_cpu(const Op& op, const Inputs& cpu_inputs, Rng& rng, const std::string& label) {
  SCOPED_TRACE(label);
  const DType dtype = cpu_inputs[0].dtype();
  const double tol = tolerance(dtype);
  Tensor weights;
  {
    NoGradGuard no_grad;
    weights = Tensor::uniform(op(cpu_inputs).shape(), rng, -1.5, 1.5, dtype);
  }
  const Result cpu = forward_backward(op, cpu_inputs, weights);
  const Inputs gpu_inputs = cuda_leaves(cpu_inputs);
  const Result gpu = forward_backward(op, gpu_inputs, weights);
  const Result again = forward_backward(op, gpu_inputs, weights);
  expect_all_close(gpu.out, cpu.out, tol, label + " output");
  expect_bit_identical(gpu.out, again.out, label + " output");
  for (size_t i = 0; i < cpu_inputs.size(); ++i) {
    if (!cpu_inputs[i].defined()) continue;
    const std::string what = label + " gradient of input " + std::to_string(i);
    expect_all_close(gpu.grads[i], cpu.grads[i], tol, what);
    expect_bit_identical(gpu.grads[i], again.grads[i], what);
  }
}

std::string describe(const char* op, const Shape& shape, DType dtype, bool reverse, const std::string& extra = "") {
  return std::string(op) + " " + shape_str(shape) + " " + dtype_label(dtype) + (reverse ? " reverse" : " forward") +
         extra;
}

// ---------------------------------------------------------------- linear_scan

TEST(CudaScan, LinearScanMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  Rng rng(11);
  // Few sequences (B x C / pack width) are cut into spans of time, one thread
  // each, and take narrower packs: L = 1; 512 sequences of 20 steps in 2
  // spans; 24 of 40 steps in 4; 4 of 64 in 8; the default job's gated_rnn at
  // batch 256 (pairs of channels in 8 spans) and 1 (single channels, 8
  // spans); 99 sequences of 197 steps (16 spans); 6 of 1024 steps (32 spans);
  // 4,096 packs of 4 channels in 16 spans of 8 steps.
  // Then enough sequences for one thread each, with packs of 2 and 1 channels
  // (C = 520 and 1002, 999).
  const std::vector<Shape> shapes = {{1, 1, 1},    {2, 1, 3},     {2, 7, 5},      {1, 64, 4},   {8, 20, 64}, {4, 40, 6},
                                     {256, 65, 96}, {1, 65, 96},  {3, 197, 33},   {2, 1024, 3}, {64, 9, 520},
                                     {33, 11, 1002}, {40, 13, 999}, {128, 128, 128}};
  for (DType dtype : {DType::F32, DType::F64}) {
    for (const Shape& shape : shapes) {
      for (bool reverse : {false, true}) {
        const Inputs in = {leaf(shape, rng, 0.02, 0.98, dtype), leaf(shape, rng, -1.0, 1.0, dtype)};
        compare_with_cpu([reverse](const Inputs& v) { return linear_scan(v[0], v[1], reverse); }, in, rng,
                         describe("linear_scan", shape, dtype, reverse));
      }
    }
  }
}

// gated_scan reading u and gate in place from one [B, L, 3 C] projection (the
// mixer's layout: row stride 3 C) or from contiguous tensors, with and without
// a halting mask. The shapes take both kernels (narrow_first_layout) through
// every layout it picks: packs of 4 in 16 spans ([128, 128, 128]; the forward
// in half tiles, as in every layout with spans), pairs in 8 spans
// ([256, 65, 96]), single channels in 4 to 32 spans (C = 6, 96 at batch 1,
// 33, 3), narrowed to single channels (64 x 520) and to pairs (32 x 2048) in
// one span, and packs of 4 in one span (64 x 2048).
TEST(CudaScan, GatedScanMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  Rng rng(14);
  const std::vector<Shape> shapes = {{1, 1, 1},    {2, 7, 5},    {4, 40, 6},    {256, 65, 96}, {1, 65, 96},
                                     {3, 197, 33}, {2, 1024, 3}, {64, 9, 520}, {32, 9, 2048}, {64, 9, 2048},
                                     {128, 128, 128}};
  for (DType dtype : {DType::F32, DType::F64}) {
    for (const Shape& shape : shapes) {
      const int64_t B = shape[0], L = shape[1], C = shape[2];
      std::vector<double> mask(B * L);
      for (size_t i = 0; i < mask.size(); ++i) mask[i] = i % 5 == 2 ? 0.0 : 1.0;
      const Tensor keep = Tensor::from_vector(mask, {B, L}).to(dtype);
      for (bool reverse : {false, true}) {
        for (bool masked : {false, true}) {
          auto keep_on = [=](const Tensor& like) { return masked ? keep.to(like.device()) : Tensor(); };
          const std::string extra = masked ? " masked" : "";
          compare_with_cpu(
              [=](const Inputs& v) {
                return gated_scan(narrow(v[0], 2, 0, C), narrow(v[0], 2, C, C), keep_on(v[0]), reverse);
              },
              {leaf({B, L, 3 * C}, rng, -2.0, 2.0, dtype)}, rng, describe("gated_scan (slices)", shape, dtype, reverse, extra));
          compare_with_cpu([=](const Inputs& v) { return gated_scan(v[0], v[1], keep_on(v[0]), reverse); },
                           {leaf(shape, rng, -1.0, 1.0, dtype), leaf(shape, rng, -2.0, 2.0, dtype)}, rng,
                           describe("gated_scan", shape, dtype, reverse, extra));
        }
      }
    }
  }
}

// ------------------------------------------------------------- selective_scan

// x, dt, A, Bm, Cm, D for [B, L, C] sequences with S states, in valid ranges
// (dt positive, A negative).
Inputs selective_inputs(const Shape& bcls, Rng& rng, DType dtype) {
  const int64_t B = bcls[0], L = bcls[1], C = bcls[2], S = bcls[3];
  return {leaf({B, L, C}, rng, -1.0, 1.0, dtype),  leaf({B, L, C}, rng, 0.05, 1.0, dtype),
          leaf({C, S}, rng, -2.0, -0.1, dtype),    leaf({B, L, S}, rng, -1.0, 1.0, dtype),
          leaf({B, L, S}, rng, -1.0, 1.0, dtype),  leaf({C}, rng, -1.0, 1.0, dtype)};
}

TEST(CudaScan, SelectiveScanMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  Rng rng(12);
  // [B, L, C, S]: L = 1; one state; a warp and a half of channels; ViT's 197
  // tokens with S = 16 and C not a multiple of 32; S = 17 and S = 64 (two and
  // four passes of 16 states; L a perfect square: chunks of exactly sqrt(L));
  // C = 70 leaves whole warps of the last block past the channels; C = 130
  // takes three blocks of the backward (64 channels each) in three passes.
  const std::vector<Shape> shapes = {{2, 1, 3, 2},     {1, 5, 4, 1},    {2, 7, 48, 4},  {2, 197, 40, 16},
                                     {1, 33, 70, 17}, {1, 49, 5, 64}, {3, 20, 130, 33}};
  for (DType dtype : {DType::F32, DType::F64}) {
    for (const Shape& bcls : shapes) {
      for (bool reverse : {false, true}) {
        const Inputs in = selective_inputs(bcls, rng, dtype);
        compare_with_cpu(
            [reverse](const Inputs& v) { return selective_scan(v[0], v[1], v[2], v[3], v[4], v[5], reverse); }, in,
            rng, describe("selective_scan", bcls, dtype, reverse, " [B, L, C, S]"));
      }
    }
  }
}

// A given as A_log (the mamba mixer's call): forward and every gradient
// match the CPU.
TEST(CudaScan, SelectiveScanTakesALog) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  Rng rng(15);
  for (DType dtype : {DType::F32, DType::F64}) {
    for (const Shape& bcls : std::vector<Shape>{{2, 197, 40, 16}, {3, 20, 130, 33}}) {
      for (bool reverse : {false, true}) {
        Inputs in = selective_inputs(bcls, rng, dtype);
        in[2] = leaf(in[2].shape(), rng, -2.3, 0.7, dtype);  // A_log
        compare_with_cpu(
            [reverse](const Inputs& v) {
              return selective_scan_log_a(v[0], v[1], v[2], v[3], v[4], v[5], reverse);
            },
            in, rng, describe("selective_scan_log_a", bcls, dtype, reverse, " [B, L, C, S]"));
      }
    }
  }
}

// Bm and Cm as slices of one wider tensor (x_proj's output in the Mamba
// mixer: [dt_low | Bm | Cm] rows) are read in place by both devices.
TEST(CudaScan, SelectiveScanReadsStateRowsInPlace) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  Rng rng(14);
  for (const Shape& bcls : std::vector<Shape>{{2, 197, 40, 16}, {1, 33, 70, 17}}) {
    const int64_t B = bcls[0], L = bcls[1], S = bcls[3], R = 12;
    for (bool reverse : {false, true}) {
      Inputs in = selective_inputs(bcls, rng, DType::F32);
      in[3] = leaf({B, L, R + 2 * S}, rng, -1.0, 1.0, DType::F32);  // the wide rows
      in.erase(in.begin() + 4);
      compare_with_cpu(
          [reverse, R, S](const Inputs& v) {
            return selective_scan(v[0], v[1], v[2], narrow(v[3], 2, R, S), narrow(v[3], 2, R + S, S), v[4], reverse);
          },
          in, rng, describe("selective_scan (state rows in place)", bcls, DType::F32, reverse, " [B, L, C, S]"));
    }
  }
}

// The op's backward restarts from the states its forward saved; called
// without them, the backward kernel runs the forward for them itself. Both
// paths must give the same bits, and saved states of another shape are refused.
TEST(CudaScan, SelectiveBackwardWithAndWithoutSavedStatesAgree) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  Rng rng(13);
  for (const Shape& bcls : std::vector<Shape>{{2, 197, 40, 16}, {1, 33, 70, 33}}) {
    for (bool reverse : {false, true}) {
      const std::string what = describe("selective_scan", bcls, DType::F32, reverse, " [B, L, C, S]");
      const Inputs cpu = selective_inputs(bcls, rng, DType::F32);
      Inputs v;
      for (const Tensor& t : cpu) v.push_back(t.detach().to(Device::cuda()));
      const SelectiveScanInputs in{v[0], v[1], v[2], v[3], v[4], v[5]};
      const Tensor dy = Tensor::uniform(v[0].shape(), rng, -1.0, 1.0, DType::F32).to(Device::cuda());
      auto zeros = [](const Tensor& like) { return Tensor::zeros(like.shape(), like.dtype(), like.device()); };
      auto backward = [&](const Tensor& saved) {
        const SelectiveScanGrads grads{zeros(v[0]), zeros(v[1]), zeros(v[2]), zeros(v[3]), zeros(v[4]), zeros(v[5])};
        selective_scan_backward_kernel.get(Device::cuda())(in, saved, dy, grads, reverse);
        return std::vector<Tensor>{grads.dx, grads.ddt, grads.dA, grads.dBm, grads.dCm, grads.dD};
      };
      Tensor y = Tensor::empty(v[0].shape(), DType::F32, Device::cuda());
      const Tensor saved = selective_scan_kernel.get(Device::cuda())(in, y, /*save_states=*/true, reverse);
      ASSERT_TRUE(saved.defined()) << what;
      const std::vector<Tensor> from_saved = backward(saved), recomputed = backward(Tensor());
      for (size_t i = 0; i < from_saved.size(); ++i) {
        expect_bit_identical(from_saved[i], recomputed[i], what + " gradient " + std::to_string(i));
      }
      const Tensor truncated = Tensor::zeros({saved.numel() - 1}, DType::F32, Device::cuda());
      testing::expect_error_mentioning([&] { backward(truncated); }, {"saved states"});
    }
  }
}

// ----------------------------------------------------------- depthwise_conv1d

TEST(CudaScan, DepthwiseConv1dMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  Rng rng(14);
  struct Case {
    Shape shape;
    int64_t taps;
    std::vector<int64_t> pads;
  };
  const std::vector<Case> cases = {{{2, 1, 3}, 4, {0, 3}},
                                   {{2, 6, 5}, 3, {0, 1, 2}},
                                   {{2, 197, 40}, 4, {3}},
                                   {{2, 19, 6}, 4, {1, 3}},
                                   {{3, 197, 33}, 7, {3, 6}},
                                   // The fused backward's 4-tap window: two blocks of
                                   // channel pairs; single channels (C odd) with one tap.
                                   {{3, 70, 130}, 2, {0, 1}},
                                   {{2, 33, 129}, 1, {0}},
                                   // Its 8-, 12- and 16-tap windows with 5, 9 and 16 taps;
                                   // more: passes of 16 taps after the last block's
                                   // (17 = 1 + 16, 40 = 8 + 16 + 16; 45 taps over 41 steps).
                                   {{2, 41, 70}, 5, {2, 4}},
                                   {{2, 41, 70}, 9, {0, 4, 8}},
                                   {{2, 41, 70}, 16, {0, 15}},
                                   {{2, 41, 70}, 17, {0, 8, 16}},
                                   {{2, 70, 33}, 40, {0, 19, 39}},
                                   {{3, 41, 2}, 45, {0, 22, 44}}};
  for (DType dtype : {DType::F32, DType::F64}) {
    for (const Case& cs : cases) {
      for (int64_t pad : cs.pads) {
        for (bool reverse : {false, true}) {
          for (bool with_bias : {true, false}) {
            const int64_t C = cs.shape[2];
            const Inputs in = {leaf(cs.shape, rng, -1.0, 1.0, dtype), leaf({C, cs.taps}, rng, -1.0, 1.0, dtype),
                               with_bias ? leaf({C}, rng, -1.0, 1.0, dtype) : Tensor()};
            const bool silu = with_bias != reverse;  // half the cases with the fused SiLU
            compare_with_cpu(
                [pad, reverse, silu](const Inputs& v) {
                  return silu ? depthwise_conv1d_silu(v[0], v[1], v[2], pad, reverse)
                              : depthwise_conv1d(v[0], v[1], v[2], pad, reverse);
                },
                in, rng,
                describe(silu ? "depthwise_conv1d_silu" : "depthwise_conv1d", cs.shape, dtype, reverse,
                         " taps " + std::to_string(cs.taps) + " pad_left " + std::to_string(pad) +
                             (with_bias ? " with bias" : " without bias")));
          }
        }
      }
    }
  }
}

// ------------------------------------------------------------------- mixers

// A sequential mixer built twice from one seed, one copy moved to the GPU:
// outputs, the input's gradient and every parameter's gradient must agree.
// float32 is allowed more slack than the ops above: the mixers' matmuls may
// run on tensor cores on the GPU. The parameters are jittered by the same
// uniform noise in [-0.5, 0.5] on both copies: at init the outputs are ~1e-3
// and many gradients ~1e-6 to 1e-8 (measured on the CPU), far inside the
// float32 tolerance, so that any GPU result would have passed.
TEST(CudaMixers, SequenceMixersMatchCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  const std::vector<std::string> specs = {"gated_rnn", "gated_rnn:direction=forward", "mamba",
                                          "mamba:direction=forward,d_state=16", "conv:conv_kernel=5",
                                          "conv:conv_kernel=5,direction=forward"};
  for (DType dtype : {DType::F32, DType::F64}) {
    for (const std::string& spec : specs) {
      SCOPED_TRACE(spec + " " + dtype_label(dtype));
      auto build = [&] {
        Rng init(3);
        MixerSpec defaults;
        defaults.heads = 4;
        std::unique_ptr<TokenMixer> mixer = make_mixer(parse_mixer_spec(spec, defaults), 32, init);
        Rng jitter(8);
        mixer->visit("", [&](const std::string&, Tensor& p) {
          p = add(p.detach().to(dtype), Tensor::uniform(p.shape(), jitter, -0.5, 0.5, dtype));
          p.set_requires_grad(true);
        });
        return mixer;
      };
      std::unique_ptr<TokenMixer> cpu = build(), gpu = build();
      move_parameters([&](const ParamVisitor& fn) { gpu->visit("", fn); }, Device::cuda());

      Rng rng(4);
      const Inputs x_cpu = {leaf({2, 197, 32}, rng, -1.0, 1.0, dtype)};
      const Inputs x_gpu = cuda_leaves(x_cpu);
      const Tensor weights = Tensor::uniform({2, 197, 32}, rng, -1.5, 1.5, dtype);
      auto run = [](TokenMixer* mixer) {
        return [mixer](const Inputs& v) { return mixer->forward(v[0], ForwardContext{}, nullptr); };
      };
      const Result expected = forward_backward(run(cpu.get()), x_cpu, weights);
      const Result actual = forward_backward(run(gpu.get()), x_gpu, weights);
      const double tol = dtype == DType::F64 ? 1e-9 : 5e-3;
      // A comparison can fail only where the CPU values stand well above the tolerance.
      auto expect_close = [tol](const Tensor& actual, const Tensor& expected, const std::string& what) {
        ASSERT_TRUE(expected.defined()) << what;
        const std::vector<double> values = expected.to_doubles();
        double largest = 0;
        for (double v : values) largest = std::max(largest, std::abs(v));
        EXPECT_GT(largest, 100 * tol) << what << " is too small on the CPU for the tolerance to tell";
        expect_all_close(actual, expected, tol, what);
      };
      expect_close(actual.out, expected.out, "output");
      expect_close(actual.grads[0], expected.grads[0], "gradient of x");
      NamedTensors cpu_params, gpu_params;
      cpu->visit("", [&](const std::string& name, Tensor& p) { cpu_params.emplace_back(name, p); });
      gpu->visit("", [&](const std::string& name, Tensor& p) { gpu_params.emplace_back(name, p); });
      ASSERT_EQ(cpu_params.size(), gpu_params.size());
      for (size_t i = 0; i < cpu_params.size(); ++i) {
        expect_close(gpu_params[i].second.grad(), cpu_params[i].second.grad(), "gradient of " + cpu_params[i].first);
      }
    }
  }
}

}  // namespace
}  // namespace engine
