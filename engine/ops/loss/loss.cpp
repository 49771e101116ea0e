// Losses: cross-entropy with hard labels through the fused kernels, the others
// composed from existing ops (their autograd comes with them).
#include "engine/ops/loss/loss.h"

#include "engine/autograd.h"
#include "engine/ops/elementwise/elementwise.h"
#include "engine/ops/loss/loss_kernels.h"
#include "engine/ops/reduce/reduce.h"
#include "engine/ops/softmax/softmax.h"

namespace engine {

namespace {

void check_logits(const Tensor& logits, const char* op) {
  check(logits.dim() == 2 && logits.shape()[1] > 0, "{}: logits must be [N, C] with C > 0, got {}", op,
        logits);
}

// Labels are checked on the host: a device kernel cannot raise an error.
void check_labels(const Tensor& labels, int64_t rows, int64_t classes) {
  check(labels.dtype() == DType::I64 && labels.shape() == Shape{rows},
        "cross_entropy: labels must be int64 [{}], got {}", rows, labels);
  const std::vector<int64_t> values = labels.to_ints();
  for (int64_t r = 0; r < rows; ++r) {
    check(values[r] >= 0 && values[r] < classes, "cross_entropy: label {} in row {} is out of range [0, {})",
          values[r], r, classes);
  }
}

// Per-row losses [N] (before averaging), with the fused backward.
Tensor cross_entropy_rows(const Tensor& logits, const Tensor& labels, double smoothing) {
  const int64_t rows = logits.shape()[0];
  Tensor x = logits.detach().contiguous();
  Tensor y = labels.contiguous();
  Tensor losses = Tensor::empty({rows}, x.dtype(), x.device());
  Tensor lse = Tensor::empty({rows}, x.dtype(), x.device());
  if (rows > 0) cross_entropy_forward_kernel.get(x.device())(x, y, smoothing, losses, lse);
  record("cross_entropy", losses, {logits}, [x, y, smoothing, lse](const Tensor& g) {
    Tensor dx = Tensor::empty_like(x);
    if (dx.numel() > 0) cross_entropy_backward_kernel.get(x.device())(x, y, smoothing, lse, g.contiguous(), dx);
    return std::vector<Tensor>{dx};
  });
  return losses;
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& labels, double label_smoothing) {
  check_logits(logits, "cross_entropy");
  check(label_smoothing >= 0.0 && label_smoothing <= 1.0, "cross_entropy: label_smoothing {} is outside [0, 1]",
        label_smoothing);
  check(labels.device() == logits.device(), "cross_entropy: labels on {} but logits on {}", labels.device(),
        logits.device());
  check_labels(labels, logits.shape()[0], logits.shape()[1]);
  return mean(cross_entropy_rows(logits, labels, label_smoothing));
}

Tensor soft_cross_entropy(const Tensor& logits, const Tensor& target_probs) {
  check_logits(logits, "soft_cross_entropy");
  check_same_shape(logits, target_probs, "soft_cross_entropy");
  return mean(neg(sum(mul(target_probs, log_softmax(logits)), {1})));
}

Tensor mse_loss(const Tensor& prediction, const Tensor& target) {
  check_same_shape(prediction, target, "mse_loss");  // no broadcasting: [N] vs [N, 1] is a bug
  Tensor diff = sub(prediction, target);
  return mean(mul(diff, diff));
}

Tensor kl_div_with_temperature(const Tensor& student_logits, const Tensor& teacher_logits, double temperature) {
  check_logits(student_logits, "kl_div_with_temperature");
  check_same_shape(student_logits, teacher_logits, "kl_div_with_temperature");
  check(temperature > 0.0, "kl_div_with_temperature: temperature must be positive, got {}", temperature);
  Tensor teacher_log_probs = log_softmax(mul(teacher_logits.detach(), 1.0 / temperature));
  Tensor student_log_probs = log_softmax(mul(student_logits, 1.0 / temperature));
  // KL(p_t || p_s) per row = sum_c p_t (log p_t - log p_s).
  Tensor kl_rows = sum(mul(exp(teacher_log_probs), sub(teacher_log_probs, student_log_probs)), {1});
  return mul(mean(kl_rows), temperature * temperature);
}

}  // namespace engine
