// Optimizers over parameter groups, gradient clipping and LR schedules.
// Updates run in place under no_grad; state (momentum, Adam moments) is fp32
// (or the parameter dtype, float64 in tests) on the parameter's device.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/safetensors.h"  // NamedTensors
#include "engine/tensor.h"

namespace engine {

struct ParamGroup {
  std::vector<Tensor> params;
  double weight_decay = 0.0;
  double lr_scale = 1.0;  // multiplies the optimizer's current lr
};

// AdamW-style grouping: no weight decay for 1-D params (norms, biases), for
// position embeddings / class (and distillation) tokens and for
// log-parameterised values, recognised by name. Returns {decay (weight_decay),
// no_decay (0)}, either possibly empty. A param goes to no_decay when
// dim() <= 1, its name contains "pos_embed", "cls_token", "dist_token",
// "position_embeddings" or "reg_token", or it ends in "_log" (Mamba's A_log);
// unnamed params are placed by the dim rule alone.
std::vector<ParamGroup> decay_groups(const std::vector<Tensor>& named_params, double weight_decay);

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual void step() = 0;  // uses each param's .grad(); params without a grad are skipped
  void zero_grad();
  void set_lr(double lr) { lr_ = lr; }
  double lr() const { return lr_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }
  // Optimizer state as named tensors, for checkpoints ("<param name>.exp_avg", ...)
  // plus the step count; load_state restores it (error on a missing/mismatched name).
  // Needs unique, non-empty parameter names. Per-parameter state is created on a
  // parameter's first update, so a parameter that never had a grad has no
  // entries; load_state accepts that (all of a parameter's entries or none).
  // state() returns the live buffers: save or clone them before the next step().
  virtual NamedTensors state() const = 0;
  virtual void load_state(const NamedTensors& state) = 0;

 protected:
  Optimizer(std::vector<ParamGroup> groups, double lr) : groups_(std::move(groups)), lr_(lr) {}
  std::vector<ParamGroup> groups_;
  double lr_;
};

struct SgdOptions {
  double lr = 0.01;
  double momentum = 0.0;
  bool nesterov = false;
};
// PyTorch SGD semantics: buf = momentum * buf + grad (+ weight_decay * p, L2);
// nesterov: update = grad + momentum * buf.
std::unique_ptr<Optimizer> make_sgd(std::vector<ParamGroup> groups, const SgdOptions& options);

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
};
// PyTorch AdamW: p -= lr * weight_decay * p (decoupled), then the bias-corrected
// Adam update p -= lr * m_hat / (sqrt(v_hat) + eps).
// PyTorch keeps a step count per parameter; here one count (the number of
// step() calls, saved as "step") drives the bias correction of every parameter,
// which differs only for a parameter that had no grad on some earlier steps.
std::unique_ptr<Optimizer> make_adamw(std::vector<ParamGroup> groups, const AdamWOptions& options);

// Scales all gradients so that their global L2 norm is at most max_norm
// (PyTorch: by max_norm / (norm + 1e-6) when that is below 1); params without
// a grad are ignored. Returns the norm before clipping.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

// Linear warmup from warmup_start_lr to base_lr over warmup_steps, then cosine
// decay to min_lr at total_steps (constant min_lr after).
struct WarmupCosineSchedule {
  double base_lr = 1e-3;
  double min_lr = 0.0;
  double warmup_start_lr = 0.0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  // Errors naming the setting unless 0 <= warmup_steps < total_steps and all lrs are >= 0.
  void validate() const;
  double lr_at(int64_t step) const;  // validates first; step >= 0
};

}  // namespace engine
