#include <cmath>
#include <string>

#include "engine/ops/loss/loss.h"
#include "engine/ops/softmax/softmax.h"
#include "engine/ops/view/view.h"
#include "tests/ops/op_test.h"

namespace engine {
namespace {

// log p[r][c] of each row, computed naively in double.
std::vector<std::vector<double>> naive_log_probs(const Tensor& logits) {
  const int64_t rows = logits.shape()[0], classes = logits.shape()[1];
  std::vector<double> v = logits.to_doubles();
  std::vector<std::vector<double>> out(rows, std::vector<double>(classes));
  for (int64_t r = 0; r < rows; ++r) {
    double total = 0;
    for (int64_t c = 0; c < classes; ++c) total += std::exp(v[r * classes + c]);
    for (int64_t c = 0; c < classes; ++c) out[r][c] = v[r * classes + c] - std::log(total);
  }
  return out;
}

// The smoothed target (1 - s) * one_hot + s / C as a dense [N, C] tensor.
Tensor smoothed_targets(const std::vector<int64_t>& labels, int64_t classes, double s) {
  std::vector<double> t(labels.size() * classes, s / classes);
  for (size_t r = 0; r < labels.size(); ++r) t[r * classes + labels[r]] += 1.0 - s;
  return Tensor::from_vector(t, {static_cast<int64_t>(labels.size()), classes});
}

TEST(CrossEntropy, MatchesHandFormula) {
  Rng rng(31);
  Tensor logits = Tensor::randn({4, 5}, rng, DType::F32, 2.0);
  const std::vector<int64_t> labels{3, 0, 4, 1};
  Tensor label_tensor = Tensor::from_vector(labels, {4});
  auto log_p = naive_log_probs(logits);
  double nll = 0, smoothed = 0;
  const double s = 0.1;
  for (int r = 0; r < 4; ++r) {
    double mean_neg_log_p = 0;
    for (int c = 0; c < 5; ++c) mean_neg_log_p -= log_p[r][c] / 5;
    nll -= log_p[r][labels[r]] / 4;
    smoothed += ((1 - s) * -log_p[r][labels[r]] + s * mean_neg_log_p) / 4;
  }
  Tensor loss = cross_entropy(logits, label_tensor);
  EXPECT_EQ(loss.shape(), Shape{});
  EXPECT_NEAR(loss.item<double>(), nll, 1e-5);
  EXPECT_NEAR(cross_entropy(logits, label_tensor, s).item<double>(), smoothed, 1e-5);
  // Stable for large logits: shifting every logit leaves the loss unchanged.
  EXPECT_NEAR(cross_entropy(logits + 1000.0, label_tensor, s).item<double>(), smoothed, 1e-5);
}

TEST(CrossEntropy, Gradients) {
  Rng rng(32);
  Tensor labels = Tensor::from_vector<int64_t>({2, 0, 4, 4}, {4});
  Tensor x = random_leaf({4, 5}, rng, -2.0, 2.0);
  for (double s : {0.0, 0.1}) {
    expect_gradients_match([&](const auto& in) { return cross_entropy(in[0], labels, s); }, {x});
  }
  Tensor xt = random_leaf({5, 4}, rng, -2.0, 2.0);  // non-contiguous logits
  expect_gradients_match([&](const auto& in) { return cross_entropy(transpose(in[0], 0, 1), labels, 0.2); }, {xt});
}

// Rows are split across threads; the fused kernels must agree with
// soft_cross_entropy (composed from log_softmax) on the smoothed targets.
TEST(CrossEntropy, FusedKernelsMatchCompositeOps) {
  Rng rng(33);
  const int64_t rows = 64, classes = 300;
  std::vector<int64_t> labels(rows);
  for (int64_t& label : labels) label = rng.integer(classes);
  Tensor x = random_leaf({rows, classes}, rng, -4.0, 4.0);
  Tensor fused = cross_entropy(x, Tensor::from_vector(labels, {rows}), 0.1);
  fused.backward();
  Tensor fused_grad = x.grad();
  x.zero_grad();
  Tensor composite = soft_cross_entropy(x, smoothed_targets(labels, classes, 0.1));
  composite.backward();
  EXPECT_NEAR(fused.item<double>(), composite.item<double>(), 1e-12);
  expect_close(fused_grad, x.grad(), 1e-10);
}

TEST(CrossEntropy, OutOfRangeLabelNamesValueAndRow) {
  Tensor logits = Tensor::zeros({3, 5});
  for (int64_t bad : {7, -1, 5}) {
    try {
      cross_entropy(logits, Tensor::from_vector<int64_t>({0, bad, 1}, {3}));
      ADD_FAILURE() << "label " << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("label " + std::to_string(bad) + " in row 1"), std::string::npos)
          << e.what();
    }
  }
  EXPECT_THROW(cross_entropy(logits, Tensor::from_vector<int32_t>({0, 1, 2}, {3})), Error);  // not int64
  EXPECT_THROW(cross_entropy(logits, Tensor::from_vector<int64_t>({0, 1}, {2})), Error);     // wrong count
  EXPECT_THROW(cross_entropy(logits, Tensor::from_vector<int64_t>({0, 1, 2}, {3}), 1.5), Error);
  EXPECT_THROW(cross_entropy(Tensor::zeros({5}), Tensor::from_vector<int64_t>({0}, {1})), Error);
}

TEST(SoftCrossEntropy, ValueAndGradients) {
  Rng rng(34);
  Tensor logits = Tensor::randn({3, 4}, rng, DType::F64);
  Tensor one_hot = smoothed_targets({1, 3, 0}, 4, 0.0);
  EXPECT_NEAR(soft_cross_entropy(logits, one_hot).item<double>(),
              cross_entropy(logits, Tensor::from_vector<int64_t>({1, 3, 0}, {3})).item<double>(), 1e-12);
  Tensor x = random_leaf({3, 4}, rng, -2.0, 2.0);
  Tensor targets = softmax(Tensor::randn({3, 4}, rng, DType::F64)).detach().set_requires_grad(true);
  expect_gradients_match([](const auto& in) { return soft_cross_entropy(in[0], in[1]); }, {x, targets});
  EXPECT_THROW(soft_cross_entropy(logits, Tensor::zeros({3, 5}, DType::F64)), Error);
}

TEST(MseLoss, ValueAndGradients) {
  Tensor a = Tensor::from_vector<float>({1, 2, 3, 4}, {2, 2});
  Tensor b = Tensor::from_vector<float>({1, 0, 5, 1}, {2, 2});
  EXPECT_NEAR(mse_loss(a, b).item<double>(), (0 + 4 + 4 + 9) / 4.0, 1e-6);
  Rng rng(35);
  Tensor p = random_leaf({3, 4}, rng);
  Tensor t = random_leaf({4, 3}, rng);
  expect_gradients_match([](const auto& in) { return mse_loss(in[0], transpose(in[1], 0, 1)); }, {p, t});
  EXPECT_THROW(mse_loss(Tensor::zeros({4}), Tensor::zeros({4, 1})), Error);  // no silent broadcasting
}

TEST(KlDiv, ZeroForEqualLogitsAndMatchesHandFormula) {
  Rng rng(36);
  Tensor student = Tensor::randn({3, 6}, rng, DType::F64);
  Tensor teacher = Tensor::randn({3, 6}, rng, DType::F64);
  EXPECT_NEAR(kl_div_with_temperature(student, student, 2.0).item<double>(), 0.0, 1e-12);
  const double T = 3.0;
  auto log_s = naive_log_probs(student / T), log_t = naive_log_probs(teacher / T);
  double expected = 0;
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 6; ++c) expected += std::exp(log_t[r][c]) * (log_t[r][c] - log_s[r][c]) * T * T / 3;
  EXPECT_NEAR(kl_div_with_temperature(student, teacher, T).item<double>(), expected, 1e-12);
  EXPECT_THROW(kl_div_with_temperature(student, teacher, 0.0), Error);
  EXPECT_THROW(kl_div_with_temperature(student, Tensor::zeros({3, 5}, DType::F64), 1.0), Error);
}

TEST(KlDiv, GradientFlowsToStudentOnly) {
  Rng rng(37);
  Tensor student = random_leaf({4, 5}, rng, -2.0, 2.0);
  Tensor teacher = random_leaf({4, 5}, rng, -2.0, 2.0);
  expect_gradients_match([&](const auto& in) { return kl_div_with_temperature(in[0], teacher, 2.0); }, {student});
  teacher.zero_grad();
  kl_div_with_temperature(student, teacher, 2.0).backward();
  EXPECT_FALSE(teacher.grad().defined());
}

}  // namespace
}  // namespace engine
