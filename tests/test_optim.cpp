// Optimizers, gradient clipping and the LR schedule against closed-form values
// (worked out by hand from the PyTorch update rules), plus state round trips
// and two small quadratics minimised end to end through autograd.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "engine/ops/elementwise/elementwise.h"
#include "engine/ops/reduce/reduce.h"
#include "engine/ops/view/view.h"
#include "engine/optim/optimizer.h"
#include "tests/expect_error.h"

namespace engine {
namespace {

using ::testing::HasSubstr;
using testing::error_of;

constexpr double kTol = 1e-12;

Tensor param(const std::vector<double>& values, const std::string& name = "") {
  Tensor p = Tensor::from_vector(values, {static_cast<int64_t>(values.size())});
  p.set_requires_grad();
  p.set_name(name);
  return p;
}

void give_grad(const Tensor& p, const std::vector<double>& grad) {
  p.set_grad(Tensor::from_vector(grad, p.shape()));
}

void expect_values(const Tensor& t, const std::vector<double>& expected, double tolerance = kTol) {
  const std::vector<double> actual = t.to_doubles();
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(actual[i], expected[i], tolerance) << "element " << i;
}

// ---------------------------------------------------------------- SGD

struct SgdCase {
  const char* what;
  SgdOptions options;
  double weight_decay;
  std::vector<double> after_step1, after_step2;
};

// p0 = [1, -2], the same grad g = [0.5, 0.25] on both steps, lr = 0.1.
TEST(OptimSgd, OneAndTwoStepsMatchClosedForm) {
  const SgdCase cases[] = {
      // p -= lr g
      {"plain", {0.1, 0.0, false}, 0.0, {0.95, -2.025}, {0.90, -2.05}},
      // buf1 = g; buf2 = 0.9 g + g = 1.9 g
      {"momentum", {0.1, 0.9, false}, 0.0, {0.95, -2.025}, {0.855, -2.0725}},
      // update = g + 0.9 buf: 1.9 g, then g + 0.9 * 1.9 g = 2.71 g
      {"nesterov", {0.1, 0.9, true}, 0.0, {0.905, -2.0475}, {0.7695, -2.11525}},
      // d = g + 0.1 p: [0.6, 0.05], then [0.594, 0.0495] (the stored grad is not changed)
      {"weight decay", {0.1, 0.0, false}, 0.1, {0.94, -2.005}, {0.8806, -2.00995}},
      // buf2 = 0.9 [0.6, 0.05] + [0.594, 0.0495]: the buffer holds the decayed grad
      {"momentum + weight decay", {0.1, 0.9, false}, 0.1, {0.94, -2.005}, {0.8266, -2.01445}},
      // update = d + 0.9 buf with the decayed d: 1.9 [0.6, 0.05], then
      // d2 = [0.5886, 0.04905], buf2 = [1.1286, 0.09405], update = [1.60434, 0.133695]
      {"nesterov + weight decay", {0.1, 0.9, true}, 0.1, {0.886, -2.0095}, {0.725566, -2.0228695}},
  };
  for (const SgdCase& c : cases) {
    SCOPED_TRACE(c.what);
    Tensor p = param({1.0, -2.0});
    give_grad(p, {0.5, 0.25});
    auto sgd = make_sgd({{{p}, c.weight_decay}}, c.options);
    sgd->step();
    expect_values(p, c.after_step1);
    sgd->step();
    expect_values(p, c.after_step2);
  }
}

TEST(OptimSgd, RejectsBadOptions) {
  Tensor p = param({1.0}, "w");
  EXPECT_THAT(error_of([&] { make_sgd({{{p}}}, {0.1, 0.0, true}); }), HasSubstr("nesterov"));
  EXPECT_THAT(error_of([&] { make_sgd({{{p}}}, {-0.1}); }), HasSubstr("lr"));
  EXPECT_THAT(error_of([&] { make_sgd({{{p}}}, {0.1, -0.5}); }), HasSubstr("momentum -0.5"));
  EXPECT_THAT(error_of([&] { make_sgd({{{p, p}}}, {0.1}); }), HasSubstr("'w' appears more than once"));
}

// ---------------------------------------------------------------- AdamW

// p0 = [1, -2], g1 = [0.5, 0.25], g2 = [-0.25, 1], betas (0.9, 0.999), eps = 0.01
// (large, so that its place after the bias-corrected sqrt matters).
// Step 1: p = (1 - lr wd) p0 - lr g1 / (|g1| + eps), since m_hat = g1, v_hat = g1^2.
// Step 2: p *= 1 - lr wd; m = [0.02, 0.1225], v = [3.1225e-4, 1.0624375e-3];
//         p -= lr (m / 0.19) / (sqrt(v / 0.001999) + eps).
const AdamWOptions kAdamW{0.1, 0.9, 0.999, 0.01};

void two_adamw_steps(Optimizer& adamw, const Tensor& p) {
  give_grad(p, {0.5, 0.25});
  adamw.step();
  give_grad(p, {-0.25, 1.0});
  adamw.step();
}

TEST(OptimAdamW, TwoStepsWithDecoupledDecayAndBiasCorrection) {
  Tensor p = param({1.0, -2.0});
  auto adamw = make_adamw({{{p}, 0.1}}, kAdamW);
  give_grad(p, {0.5, 0.25});
  adamw->step();
  expect_values(p, {0.99 - 0.1 * 0.5 / 0.51, -1.98 - 0.1 * 0.25 / 0.26});
  give_grad(p, {-0.25, 1.0});
  adamw->step();
  expect_values(p, {0.85706472906434017, -2.142633284497558});
}

TEST(OptimAdamW, NoDecayGroupIsNotDecayed) {
  Tensor decayed = param({1.0, -2.0});
  Tensor undecayed = param({1.0, -2.0});
  auto adamw = make_adamw({{{decayed}, 0.1}, {{undecayed}, 0.0}}, kAdamW);
  give_grad(undecayed, {0.5, 0.25});
  give_grad(decayed, {0.5, 0.25});
  adamw->step();
  give_grad(undecayed, {-0.25, 1.0});
  give_grad(decayed, {-0.25, 1.0});
  adamw->step();
  expect_values(decayed, {0.85706472906434017, -2.142633284497558});
  expect_values(undecayed, {0.87598433690747746, -2.1833948229590963});
}

TEST(OptimAdamW, GroupLrIsOptimizerLrTimesLrScale) {
  Tensor p = param({1.0, -2.0});
  AdamWOptions options = kAdamW;
  options.lr = 0.2;
  auto adamw = make_adamw({{{p}, 0.1, 0.25}}, options);  // effective lr 0.05, in the decay too
  two_adamw_steps(*adamw, p);
  expect_values(p, {0.9282622664929544, -2.0715070268641633});

  Tensor q = param({1.0, -2.0});
  AdamWOptions high = kAdamW;
  high.lr = 1.0;
  auto rescheduled = make_adamw({{{q}, 0.1, 0.5}}, high);
  rescheduled->set_lr(0.1);  // as a schedule would: 0.1 * 0.5, as above
  EXPECT_EQ(rescheduled->lr(), 0.1);
  two_adamw_steps(*rescheduled, q);
  expect_values(q, {0.9282622664929544, -2.0715070268641633});
}

TEST(OptimAdamW, RejectsBadOptions) {
  Tensor p = param({1.0}, "w");
  const struct {
    AdamWOptions options;
    const char* message;
  } cases[] = {
      {{-0.1, 0.9, 0.999, 1e-8}, "lr -0.1"},       {{0.1, 1.0, 0.999, 1e-8}, "beta1 1 must be in [0, 1)"},
      {{0.1, -0.5, 0.999, 1e-8}, "beta1 -0.5"},    {{0.1, 0.9, 1.0, 1e-8}, "beta2 1 must be in [0, 1)"},
      {{0.1, 0.9, -0.5, 1e-8}, "beta2 -0.5"},      {{0.1, 0.9, 0.999, -1e-8}, "eps -1e-08"},
  };
  for (const auto& c : cases) EXPECT_THAT(error_of([&] { make_adamw({{{p}}}, c.options); }), HasSubstr(c.message));
}

// ---------------------------------------------------------------- groups

TEST(OptimGroups, ParamsWithoutGradAreUntouched) {
  for (bool adam : {false, true}) {
    SCOPED_TRACE(adam ? "AdamW" : "SGD");
    Tensor with_grad = param({1.0, -2.0}, "with_grad");
    Tensor without_grad = param({3.0, 4.0}, "without_grad");
    std::vector<ParamGroup> groups{{{with_grad, without_grad}, 0.5}};
    auto optimizer = adam ? make_adamw(groups, kAdamW) : make_sgd(groups, {0.1, 0.9});
    give_grad(with_grad, {0.5, 0.25});
    optimizer->step();
    EXPECT_NE(with_grad.to_doubles(), (std::vector<double>{1.0, -2.0}));
    expect_values(without_grad, {3.0, 4.0}, 0.0);
    for (const auto& [name, tensor] : optimizer->state()) EXPECT_THAT(name, ::testing::Not(HasSubstr("without")));

    optimizer->zero_grad();  // drops every grad: the next step changes nothing
    EXPECT_FALSE(with_grad.grad().defined());
    const std::vector<double> before = with_grad.to_doubles();
    optimizer->step();
    expect_values(with_grad, before, 0.0);
  }
}

std::unique_ptr<Optimizer> make_either(bool adam, std::vector<ParamGroup> groups) {
  return adam ? make_adamw(std::move(groups), kAdamW) : make_sgd(std::move(groups), {0.1, 0.9});
}

TEST(OptimGroups, BadGroupsAndParametersAreRefused) {
  for (bool adam : {false, true}) {
    SCOPED_TRACE(adam ? "AdamW" : "SGD");
    Tensor w = param({1.0, -2.0}, "w");
    EXPECT_THAT(error_of([&] { make_either(adam, {{{w}}, {{}, -0.1}}); }), HasSubstr("group 1 has weight_decay -0.1"));
    EXPECT_THAT(error_of([&] { make_either(adam, {{{w}, 0.1, -1.0}}); }), HasSubstr("group 0 has lr_scale -1"));
    Tensor half = Tensor::zeros({2}, DType::F16).set_name("half");
    EXPECT_THAT(error_of([&] { make_either(adam, {{{half}}}); }), HasSubstr("'half' is float16"));
    Tensor strided = transpose(Tensor::zeros({2, 3}, DType::F64), 0, 1).set_name("strided");
    EXPECT_THAT(error_of([&] { make_either(adam, {{{strided}}}); }), HasSubstr("'strided' is not contiguous"));
  }
}

// A step refused for a bad gradient changes nothing: the optimizer then goes
// on as one that never saw it.
TEST(OptimGroups, BadGradientsAreRefusedNamingTheParameter) {
  for (bool adam : {false, true}) {
    SCOPED_TRACE(adam ? "AdamW" : "SGD");
    const std::vector<double> values{1.0, -2.0, 0.5, 3.0};
    Tensor w = Tensor::from_vector(values, {2, 2}).set_requires_grad().set_name("w");
    Tensor twin = Tensor::from_vector(values, {2, 2}).set_requires_grad().set_name("w");
    auto optimizer = make_either(adam, {{{w}, 0.1}});
    auto untroubled = make_either(adam, {{{twin}, 0.1}});
    const Tensor good = Tensor::from_vector<double>({0.5, 0.25, -1.0, 2.0}, {2, 2});
    const std::pair<Tensor, const char*> bad_grads[] = {
        {Tensor::zeros({4}, DType::F64), "gradient of parameter 'w' has shape [4] (parameter: [2, 2])"},
        {good.to(DType::F32), "gradient of parameter 'w' is"},
        {transpose(good, 0, 1), "gradient of parameter 'w' is not contiguous"},
    };
    for (const auto& [grad, message] : bad_grads) {
      w.set_grad(grad);
      EXPECT_THAT(error_of([&] { optimizer->step(); }), HasSubstr(message));
      expect_values(w, values, 0.0);
    }
    for (int s = 0; s < 2; ++s) {
      w.set_grad(good.clone());
      twin.set_grad(good.clone());
      optimizer->step();
      untroubled->step();
    }
    EXPECT_EQ(w.to_doubles(), twin.to_doubles());
  }
}

TEST(OptimGroups, DecayGroupsByNameAndDim) {
  auto make = [](const Shape& shape, const std::string& name) {
    return Tensor::zeros(shape, DType::F64).set_name(name);
  };
  const std::vector<Tensor> decayed{make({4, 4}, "blocks.0.attn.qkv.weight"),
                                    make({8, 3, 2, 2}, "patch_embed.proj.weight"), make({3, 3}, ""),
                                    make({4, 4}, "blocks.0.log_proj.weight")};
  const std::vector<Tensor> exempt{make({4}, "blocks.0.attn.qkv.bias"), make({4}, "norm.weight"),
                                   make({1, 5, 4}, "pos_embed"), make({1, 1, 4}, "cls_token"),
                                   make({1, 1, 4}, "dist_token"), make({1, 4, 4}, "reg_token"),
                                   make({1, 5, 4}, "vit.embeddings.position_embeddings"), make({3}, ""),
                                   make({}, "logit_scale"), make({6, 16}, "blocks.2.attn.A_log"),
                                   make({6, 16}, "blocks.2.attn.A_b_log")};
  std::vector<Tensor> all;
  for (size_t i = 0; i < std::max(decayed.size(), exempt.size()); ++i) {  // interleaved
    if (i < exempt.size()) all.push_back(exempt[i]);
    if (i < decayed.size()) all.push_back(decayed[i]);
  }
  const std::vector<ParamGroup> groups = decay_groups(all, 0.05);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].weight_decay, 0.05);
  EXPECT_EQ(groups[1].weight_decay, 0.0);
  auto impls = [](const std::vector<Tensor>& tensors) {
    std::vector<TensorImpl*> out;
    for (const Tensor& t : tensors) out.push_back(t.impl());
    return out;
  };
  EXPECT_EQ(impls(groups[0].params), impls(decayed));
  EXPECT_EQ(impls(groups[1].params), impls(exempt));
}

// ---------------------------------------------------------------- clipping

TEST(ClipGradNorm, ScalesToMaxNormAndReturnsNorm) {
  Tensor a = param({1.0, 1.0});
  Tensor b = param({0.0});
  Tensor no_grad = param({7.0});
  give_grad(a, {3.0, 4.0});
  give_grad(b, {12.0});
  const double norm = clip_grad_norm({a, no_grad, b}, 6.5);  // sqrt(9 + 16 + 144) = 13
  EXPECT_NEAR(norm, 13.0, kTol);
  const double factor = 6.5 / (13.0 + 1e-6);
  expect_values(a.grad(), {3.0 * factor, 4.0 * factor});
  expect_values(b.grad(), {12.0 * factor});
  EXPECT_FALSE(no_grad.grad().defined());
  EXPECT_NEAR(clip_grad_norm({a, b}, 100.0), 6.5, 1e-6);  // now at the max norm
}

TEST(ClipGradNorm, LeavesSmallGradsUntouched) {
  Tensor a = param({1.0, 1.0});
  give_grad(a, {2.0, -3.0});
  EXPECT_NEAR(clip_grad_norm({a}, 10.0), 3.6055512754639891, kTol);
  expect_values(a.grad(), {2.0, -3.0}, 0.0);
}

// Gradients of two dtypes: one norm over both (each dtype's tensors go to the
// kernel together), and both scaled.
TEST(ClipGradNorm, MixedDtypesShareOneNorm) {
  Tensor a = param({1.0, 1.0});  // float64
  Tensor b = Tensor::zeros({1}, DType::F32);
  b.set_requires_grad();
  give_grad(a, {3.0, 4.0});
  b.set_grad(Tensor::from_vector<float>({12.0f}, {1}));
  EXPECT_NEAR(clip_grad_norm({a, b}, 6.5), 13.0, kTol);
  const double factor = 6.5 / (13.0 + 1e-6);
  expect_values(a.grad(), {3.0 * factor, 4.0 * factor});
  expect_values(b.grad(), {12.0 * factor}, 1e-6);
}

TEST(ClipGradNorm, BadInputsAreRefused) {
  Tensor a = param({1.0, 1.0});
  give_grad(a, {3.0, 4.0});
  EXPECT_THAT(error_of([&] { clip_grad_norm({a}, -1.0); }), HasSubstr("max_norm -1"));
  Tensor w = Tensor::zeros({2, 2}, DType::F64).set_requires_grad().set_name("w");
  w.set_grad(transpose(Tensor::from_vector<double>({3, 4, 0, 12}, {2, 2}), 0, 1));
  EXPECT_THAT(error_of([&] { clip_grad_norm({a, w}, 1.0); }), HasSubstr("parameter 'w' is not contiguous"));
  expect_values(a.grad(), {3.0, 4.0}, 0.0);
}

// Squares of 3e20 and 4e20 overflow float32: the sum must be kept in double.
TEST(ClipGradNorm, AccumulatesFloat32GradsInDouble) {
  Tensor a = Tensor::zeros({2}, DType::F32);
  a.set_requires_grad();
  a.set_grad(Tensor::from_vector<float>({3e20f, 4e20f}, {2}));
  EXPECT_NEAR(clip_grad_norm({a}, 1.0) / 5e20, 1.0, 1e-6);
  expect_values(a.grad(), {0.6, 0.8}, 1e-6);
}

// ---------------------------------------------------------------- schedule

TEST(ScheduleWarmupCosine, ValuesAcrossWarmupAndCosine) {
  WarmupCosineSchedule schedule{1.0, 0.1, 0.01, 10, 110};
  EXPECT_NEAR(schedule.lr_at(0), 0.01, kTol);
  EXPECT_NEAR(schedule.lr_at(5), 0.505, kTol);                 // halfway from 0.01 to 1
  EXPECT_NEAR(schedule.lr_at(10), 1.0, kTol);                  // end of warmup
  EXPECT_NEAR(schedule.lr_at(35), 0.86819805153394636, kTol);  // 0.1 + 0.45 (1 + cos(pi / 4))
  EXPECT_NEAR(schedule.lr_at(60), 0.55, kTol);                 // halfway down the cosine
  EXPECT_GT(schedule.lr_at(109), 0.1);
  EXPECT_NEAR(schedule.lr_at(110), 0.1, kTol);
  EXPECT_NEAR(schedule.lr_at(1000), 0.1, kTol);

  WarmupCosineSchedule no_warmup{2.0, 0.0, 0.0, 0, 4};
  EXPECT_NEAR(no_warmup.lr_at(0), 2.0, kTol);
  EXPECT_NEAR(no_warmup.lr_at(1), 1.0 + std::sqrt(0.5), kTol);
}

TEST(ScheduleWarmupCosine, BadSettingsNameTheSetting) {
  EXPECT_THAT(error_of([] { WarmupCosineSchedule{1.0, 0.0, 0.0, 10, 10}.lr_at(0); }), HasSubstr("total_steps"));
  EXPECT_THAT(error_of([] { WarmupCosineSchedule{1.0, 0.0, 0.0, 0, 0}.validate(); }), HasSubstr("total_steps"));
  EXPECT_THAT(error_of([] { WarmupCosineSchedule{1.0, 0.0, 0.0, -1, 10}.validate(); }), HasSubstr("warmup_steps"));
  EXPECT_THAT(error_of([] { WarmupCosineSchedule{-1.0, 0.0, 0.0, 0, 10}.validate(); }), HasSubstr("base_lr"));
  EXPECT_THAT(error_of([] { WarmupCosineSchedule{1.0, -0.1, 0.0, 0, 10}.validate(); }), HasSubstr("min_lr"));
  EXPECT_THAT(error_of([] { WarmupCosineSchedule{1.0, 0.0, -0.1, 0, 10}.validate(); }), HasSubstr("warmup_start_lr"));
  EXPECT_THAT(error_of([] { WarmupCosineSchedule{}.lr_at(-1); }), HasSubstr("step -1"));
}

// ---------------------------------------------------------------- state

using OptimizerFactory = std::function<std::unique_ptr<Optimizer>(std::vector<ParamGroup>)>;

// grad_i = (i + 1) (p_i - 0.5): depends on the parameters, so any state lost
// on the way through a checkpoint changes the later trajectory.
void step_on_quadratic(Optimizer& optimizer, const std::vector<Tensor>& params, int steps) {
  for (int s = 0; s < steps; ++s) {
    for (const Tensor& p : params) {
      std::vector<double> grad = p.to_doubles();
      for (size_t i = 0; i < grad.size(); ++i) grad[i] = (i + 1.0) * (grad[i] - 0.5);
      give_grad(p, grad);
    }
    optimizer.step();
  }
}

NamedTensors deep_copy(const NamedTensors& tensors) {
  NamedTensors copy;
  for (const auto& [name, tensor] : tensors) copy.emplace_back(name, tensor.clone());
  return copy;
}

std::vector<Tensor> fresh_params(const std::vector<std::vector<double>>& values) {
  return {param(values[0], "w"), param(values[1], "b")};
}

// Three steps, checkpoint, two more; a new optimizer loaded from the checkpoint
// must reproduce those two steps exactly. A parameter without grads ("frozen")
// has no state entries and must not upset the load.
void expect_round_trip(const OptimizerFactory& factory, const std::vector<std::string>& expected_names) {
  std::vector<Tensor> params = fresh_params({{1.0, -2.0, 0.25}, {0.75, 3.0}});
  Tensor frozen = param({5.0}, "frozen");
  auto original = factory({{{params[0], frozen}, 0.1}, {{params[1]}, 0.0}});
  step_on_quadratic(*original, params, 3);

  const NamedTensors saved = deep_copy(original->state());
  std::vector<std::string> names;
  for (const auto& [name, tensor] : saved) names.push_back(name);
  EXPECT_EQ(names, expected_names);
  EXPECT_EQ(saved.back().second.dtype(), DType::I64);
  EXPECT_EQ(saved.back().second.item<int64_t>(), 3);
  std::vector<Tensor> resumed = fresh_params({params[0].to_doubles(), params[1].to_doubles()});

  step_on_quadratic(*original, params, 2);
  auto restored = factory({{{resumed[0], param({5.0}, "frozen")}, 0.1}, {{resumed[1]}, 0.0}});
  const NamedTensors saved_copy = deep_copy(saved);
  restored->load_state(saved);
  step_on_quadratic(*restored, resumed, 2);
  for (size_t i = 0; i < params.size(); ++i) EXPECT_EQ(resumed[i].to_doubles(), params[i].to_doubles());
  // load_state copied the tensors it was given: the steps since left them alone.
  for (size_t i = 0; i < saved.size(); ++i) EXPECT_EQ(saved[i].second.to_doubles(), saved_copy[i].second.to_doubles());
}

TEST(OptimState, AdamWRoundTripContinuesIdentically) {
  expect_round_trip([](std::vector<ParamGroup> groups) { return make_adamw(std::move(groups), kAdamW); },
                    {"w.exp_avg", "w.exp_avg_sq", "b.exp_avg", "b.exp_avg_sq", "step"});
}

TEST(OptimState, SgdMomentumRoundTripContinuesIdentically) {
  expect_round_trip([](std::vector<ParamGroup> groups) { return make_sgd(std::move(groups), {0.05, 0.9, true}); },
                    {"w.momentum_buffer", "b.momentum_buffer", "step"});
}

TEST(OptimState, ErrorsNameTheEntryOrParameter) {
  std::vector<Tensor> params = fresh_params({{1.0, 2.0}, {3.0}});
  auto adamw = make_adamw({{params}}, kAdamW);
  step_on_quadratic(*adamw, params, 1);
  const NamedTensors good = adamw->state();
  auto without = [&](const std::string& name) {
    NamedTensors state;
    for (const auto& entry : good) {
      if (entry.first != name) state.push_back(entry);
    }
    return state;
  };
  EXPECT_THAT(error_of([&] { adamw->load_state(without("w.exp_avg_sq")); }), HasSubstr("missing entry 'w.exp_avg_sq'"));
  EXPECT_THAT(error_of([&] { adamw->load_state(without("step")); }), HasSubstr("missing entry 'step'"));

  NamedTensors wrong_shape = without("b.exp_avg");
  wrong_shape.emplace_back("b.exp_avg", Tensor::zeros({2}, DType::F64));
  EXPECT_THAT(error_of([&] { adamw->load_state(wrong_shape); }), HasSubstr("entry 'b.exp_avg' has shape [2]"));

  NamedTensors unknown = good;
  unknown.emplace_back("v.exp_avg", Tensor::zeros({1}, DType::F64));
  EXPECT_THAT(error_of([&] { adamw->load_state(unknown); }), HasSubstr("'v.exp_avg'"));

  NamedTensors step_of_two = without("step");
  step_of_two.emplace_back("step", Tensor::from_vector<int64_t>({1, 1}, {2}));
  EXPECT_THAT(error_of([&] { adamw->load_state(step_of_two); }), HasSubstr("entry 'step' has shape [2]"));
  NamedTensors negative_step = without("step");
  negative_step.emplace_back("step", Tensor::from_vector<int64_t>({-1}, {}));
  EXPECT_THAT(error_of([&] { adamw->load_state(negative_step); }), HasSubstr("entry 'step' is -1"));

  Tensor unnamed = param({1.0});
  EXPECT_THAT(error_of([&] { make_sgd({{{params[0], unnamed}}}, {})->state(); }), HasSubstr("has no name"));
  Tensor twin = param({1.0}, "w");
  EXPECT_THAT(error_of([&] { make_sgd({{{params[0], twin}}}, {})->state(); }), HasSubstr("named 'w'"));
}

// A refused checkpoint leaves the optimizer as it was, its step count too: it
// goes on as a twin that never saw it.
TEST(OptimState, RefusedLoadChangesNothing) {
  std::vector<Tensor> params = fresh_params({{1.0, 2.0}, {3.0}});
  std::vector<Tensor> twins = fresh_params({{1.0, 2.0}, {3.0}});
  auto adamw = make_adamw({{params}}, kAdamW);
  auto untroubled = make_adamw({{twins}}, kAdamW);
  step_on_quadratic(*adamw, params, 1);
  step_on_quadratic(*untroubled, twins, 1);
  NamedTensors bad;  // a later step, and w's state without its second moment
  for (const auto& [name, tensor] : adamw->state()) {
    if (name == "step") bad.emplace_back(name, Tensor::from_vector<int64_t>({7}, {}));
    else if (name != "w.exp_avg_sq") bad.emplace_back(name, tensor.clone() * 2.0);
  }
  EXPECT_THAT(error_of([&] { adamw->load_state(bad); }), HasSubstr("missing entry 'w.exp_avg_sq'"));
  step_on_quadratic(*adamw, params, 2);
  step_on_quadratic(*untroubled, twins, 2);
  for (size_t i = 0; i < params.size(); ++i) EXPECT_EQ(params[i].to_doubles(), twins[i].to_doubles());
}

// SGD without momentum keeps no per-parameter state, only the step count.
TEST(OptimState, PlainSgdStateIsTheStepCount) {
  std::vector<Tensor> params = fresh_params({{1.0, 2.0}, {3.0}});
  auto sgd = make_sgd({{params}}, {0.1});
  step_on_quadratic(*sgd, params, 2);
  const NamedTensors state = sgd->state();
  ASSERT_EQ(state.size(), 1u);
  EXPECT_EQ(state[0].first, "step");
  EXPECT_EQ(state[0].second.item<int64_t>(), 2);
}

// ---------------------------------------------------------------- convergence

// loss = sum(a (x - c)^2) through autograd; returns max |x - c| at the end.
double minimise_quadratic(Optimizer& optimizer, const Tensor& x, const Tensor& a, const Tensor& c, int steps,
                          const WarmupCosineSchedule* schedule = nullptr) {
  for (int s = 0; s < steps; ++s) {
    if (schedule) optimizer.set_lr(schedule->lr_at(s));
    optimizer.zero_grad();
    sum(a * pow(x - c, 2.0)).backward();
    optimizer.step();
  }
  double worst = 0.0;
  const std::vector<double> xs = x.to_doubles(), cs = c.to_doubles();
  for (size_t i = 0; i < xs.size(); ++i) worst = std::max(worst, std::abs(xs[i] - cs[i]));
  return worst;
}

TEST(OptimConvergence, AdamWWithScheduleMinimisesFloat32Quadratic) {
  Tensor x = Tensor::from_vector<float>({2.0f, -1.0f, 0.5f}, {3});
  x.set_requires_grad();
  const Tensor a = Tensor::from_vector<float>({1.0f, 10.0f, 0.1f}, {3});
  const Tensor c = Tensor::from_vector<float>({0.5f, -0.25f, 1.5f}, {3});
  auto adamw = make_adamw({{{x}}}, {});
  const WarmupCosineSchedule schedule{0.1, 0.0, 0.0, 10, 300};
  EXPECT_LT(minimise_quadratic(*adamw, x, a, c, 300, &schedule), 1e-3);
}

TEST(OptimConvergence, SgdMomentumMinimisesFloat64Quadratic) {
  Tensor x = param({2.0, -1.0, 0.5});
  const Tensor a = Tensor::from_vector<double>({1.0, 4.0, 0.5}, {3});
  const Tensor c = Tensor::from_vector<double>({0.5, -0.25, 1.5}, {3});
  auto sgd = make_sgd({{{x}}}, {0.05, 0.9});
  EXPECT_LT(minimise_quadratic(*sgd, x, a, c, 300), 1e-3);
}

}  // namespace
}  // namespace engine
