// Losses with autograd. Each returns a scalar (shape []) averaged over the batch.
#pragma once
#include "engine/tensor.h"

namespace engine {

// logits [N, C], labels int64 [N] in [0, C). With label smoothing s the target
// is (1 - s) * one_hot + s / C (PyTorch's definition). An out-of-range label is
// an error naming it.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, double label_smoothing = 0.0);

// Cross-entropy against soft targets (rows of `target_probs` sum to 1).
Tensor soft_cross_entropy(const Tensor& logits, const Tensor& target_probs);

// mean((a - b)^2) over all elements.
Tensor mse_loss(const Tensor& prediction, const Tensor& target);

// Distillation KL with temperature T, Hinton-style:
// T^2 * mean over rows of KL(softmax(teacher / T) || softmax(student / T)).
// The teacher logits get no gradient.
Tensor kl_div_with_temperature(const Tensor& student_logits, const Tensor& teacher_logits, double temperature);

}  // namespace engine
