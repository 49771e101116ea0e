// Optimizers, gradient clipping and the warmup-cosine schedule. The update
// maths lives in the optim kernels (engine/optim/optim_kernels.h); this file
// checks inputs, owns the per-parameter state and walks the parameter groups.
#include "engine/optim/optimizer.h"

#include <cmath>
#include <map>
#include <set>
#include <unordered_set>

#include "engine/autograd.h"
#include "engine/ops/copy/copy.h"
#include "engine/optim/optim_kernels.h"

namespace engine {

// ---------------------------------------------------------------- parameter groups

namespace {

// Position embeddings and special tokens (ViT/DeiT "pos_embed", "cls_token",
// "dist_token", "reg_token"; Hugging Face "position_embeddings") are learned
// offsets where decay towards zero only hurts, like norms and biases.
const char* const kNoDecayNameParts[] = {"pos_embed", "cls_token", "dist_token", "position_embeddings",
                                         "reg_token"};

// A log-parameterised value (Mamba's A_log: A = -exp(A_log)) decays towards
// exp(0) = 1, a value nobody chose; like Mamba, leave it alone.
bool is_log_parameter(const std::string& name) {
  const std::string suffix = "_log";
  return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool exempt_from_decay(const Tensor& param) {
  if (param.dim() <= 1 || is_log_parameter(param.name())) return true;
  for (const char* part : kNoDecayNameParts) {
    if (param.name().find(part) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

std::vector<ParamGroup> decay_groups(const std::vector<Tensor>& named_params, double weight_decay) {
  ParamGroup decay{{}, weight_decay};
  ParamGroup no_decay{{}, 0.0};
  for (const Tensor& param : named_params) {
    (exempt_from_decay(param) ? no_decay : decay).params.push_back(param);
  }
  return {decay, no_decay};
}

void Optimizer::zero_grad() {
  for (const ParamGroup& group : groups_) {
    for (const Tensor& param : group.params) param.zero_grad();
  }
}

// ---------------------------------------------------------------- shared state handling

namespace {

// How errors name a parameter: its name, else its position and shape.
std::string param_label(const Tensor& param, size_t group, size_t index) {
  if (!param.name().empty()) return fmt::format("'{}'", param.name());
  return fmt::format("#{} of group {} ({})", index, group, param.describe());
}

void check_group(const ParamGroup& group, size_t group_index, const char* optimizer) {
  check(group.weight_decay >= 0, "{}: group {} has weight_decay {} (must be >= 0)", optimizer, group_index,
        group.weight_decay);
  check(group.lr_scale >= 0, "{}: group {} has lr_scale {} (must be >= 0)", optimizer, group_index,
        group.lr_scale);
}

void check_param(const Tensor& param, const std::string& label, const char* optimizer) {
  check(param.dtype() == DType::F32 || param.dtype() == DType::F64,
        "{}: parameter {} is {} (needs float32 or float64)", optimizer, label, dtype_name(param.dtype()));
  check(param.is_contiguous(), "{}: parameter {} is not contiguous", optimizer, label);
}

void check_grad(const Tensor& param, const Tensor& grad, const std::string& label, const char* optimizer) {
  check(grad.shape() == param.shape(), "{}: gradient of parameter {} has shape {} (parameter: {})", optimizer,
        label, ShapeText{grad.shape()}, ShapeText{param.shape()});
  check(grad.dtype() == param.dtype() && grad.device() == param.device(),
        "{}: gradient of parameter {} is {} (parameter: {})", optimizer, label, grad, param);
  check(grad.is_contiguous(), "{}: gradient of parameter {} is not contiguous", optimizer, label);
}

// items split by their tensor's (device, dtype), for the multi-tensor kernels
// (one call per group, groups in a fixed order).
template <typename Item, typename TensorOf>
std::map<std::pair<std::string, DType>, std::vector<Item>> by_device_and_dtype(const std::vector<Item>& items,
                                                                              TensorOf tensor_of) {
  std::map<std::pair<std::string, DType>, std::vector<Item>> groups;
  for (const Item& item : items) {
    const Tensor& t = tensor_of(item);
    groups[{t.device().str(), t.dtype()}].push_back(item);
  }
  return groups;
}

// One parameter's update in a step: `buffers` follow the optimizer's buffer
// names and were just created (zeroed) when first_update, which only
// optimizers with buffers use.
struct ParamUpdate {
  Tensor param, grad;
  std::vector<Tensor> buffers;
  double lr, weight_decay;
  bool first_update;
};

// Walks the groups in order, owns the step count and each parameter's state
// buffers (created zeroed on its first update, as PyTorch creates them lazily)
// and maps both to named tensors. Subclasses apply a step's updates.
class StatefulOptimizer : public Optimizer {
 public:
  void step() override {
    NoGradGuard no_grad;
    // Every gradient checked before anything changes: a refused step leaves
    // the step count and the state as they were.
    for (const Slot& slot : slots_) {
      const Tensor grad = slot.param.grad();
      if (grad.defined()) check_grad(slot.param, grad, slot.label, kind_);
    }
    ++step_;
    std::vector<ParamUpdate> updates;
    for (Slot& slot : slots_) {
      const Tensor grad = slot.param.grad();
      if (!grad.defined()) continue;
      const bool first_update = slot.buffers.empty();
      if (first_update) create_buffers(slot);
      const ParamGroup& group = groups_[slot.group];
      updates.push_back({slot.param, grad, slot.buffers, lr_ * group.lr_scale, group.weight_decay, first_update});
    }
    apply(updates);
  }

  NamedTensors state() const override {
    check_names("state()");
    NamedTensors state;
    for (const Slot& slot : slots_) {
      for (size_t i = 0; i < slot.buffers.size(); ++i) {
        state.emplace_back(entry_name(slot, i), slot.buffers[i]);
      }
    }
    state.emplace_back("step", Tensor::from_vector<int64_t>({step_}, {}));
    return state;
  }

  // Validates everything before changing anything, so a bad checkpoint leaves
  // the optimizer as it was.
  void load_state(const NamedTensors& state) override {
    check_names("load_state()");
    std::map<std::string, Tensor> entries(state.begin(), state.end());
    const int64_t step = take_step(entries);
    std::vector<std::vector<Tensor>> loaded;
    for (const Slot& slot : slots_) loaded.push_back(take_buffers(slot, entries));
    if (!entries.empty()) fail("{} load_state: entry '{}' matches no parameter state", kind_, entries.begin()->first);

    step_ = step;
    for (size_t i = 0; i < slots_.size(); ++i) slots_[i].buffers = std::move(loaded[i]);
  }

 protected:
  StatefulOptimizer(std::vector<ParamGroup> groups, double lr, const char* kind,
                    std::vector<std::string> buffer_names)
      : Optimizer(std::move(groups), lr), kind_(kind), buffer_names_(std::move(buffer_names)) {
    std::unordered_set<const TensorImpl*> seen;
    for (size_t g = 0; g < groups_.size(); ++g) {
      check_group(groups_[g], g, kind_);
      for (size_t i = 0; i < groups_[g].params.size(); ++i) {
        const Tensor& param = groups_[g].params[i];
        check(param.defined(), "{}: parameter #{} of group {} is undefined", kind_, i, g);
        const std::string label = param_label(param, g, i);
        check_param(param, label, kind_);
        check(seen.insert(param.impl()).second, "{}: parameter {} appears more than once", kind_, label);
        slots_.push_back(Slot{param, g, label, {}});
      }
    }
  }

  // Updates the parameters in place.
  virtual void apply(const std::vector<ParamUpdate>& updates) = 0;

  int64_t step_count() const { return step_; }

 private:
  struct Slot {
    Tensor param;
    size_t group;
    std::string label;
    std::vector<Tensor> buffers;  // one per buffer name; empty until the first update
  };

  void create_buffers(Slot& slot) {
    for (size_t i = 0; i < buffer_names_.size(); ++i) {
      slot.buffers.push_back(Tensor::zeros(slot.param.shape(), slot.param.dtype(), slot.param.device()));
    }
  }

  std::string entry_name(const Slot& slot, size_t buffer) const {
    return slot.param.name() + "." + buffer_names_[buffer];
  }

  void check_names(const char* what) const {
    std::set<std::string> names;
    for (const Slot& slot : slots_) {
      check(!slot.param.name().empty(), "{} {}: parameter {} has no name (state needs unique parameter names)",
            kind_, what, slot.label);
      check(names.insert(slot.param.name()).second, "{} {}: two parameters are named {}", kind_, what,
            slot.label);
    }
  }

  int64_t take_step(std::map<std::string, Tensor>& entries) const {
    auto found = entries.find("step");
    check(found != entries.end(), "{} load_state: missing entry 'step'", kind_);
    check(found->second.numel() == 1, "{} load_state: entry 'step' has shape {} (needs one element)", kind_,
          ShapeText{found->second.shape()});
    const int64_t step = found->second.item<int64_t>();
    check(step >= 0, "{} load_state: entry 'step' is {} (must be >= 0)", kind_, step);
    entries.erase(found);
    return step;
  }

  // A parameter's buffers, copied to its dtype and device; empty when the
  // state has none of its entries (it was never updated).
  std::vector<Tensor> take_buffers(const Slot& slot, std::map<std::string, Tensor>& entries) const {
    std::vector<Tensor> buffers;
    std::vector<std::string> missing;
    for (size_t i = 0; i < buffer_names_.size(); ++i) {
      const std::string name = entry_name(slot, i);
      auto found = entries.find(name);
      if (found == entries.end()) {
        missing.push_back(name);
        continue;
      }
      check(found->second.shape() == slot.param.shape(), "{} load_state: entry '{}' has shape {} (parameter: {})",
            kind_, name, ShapeText{found->second.shape()}, ShapeText{slot.param.shape()});
      Tensor buffer = Tensor::empty_like(slot.param);
      copy_into(buffer, found->second.to(slot.param.device()));
      buffers.push_back(buffer);
      entries.erase(found);
    }
    if (!buffers.empty() && !missing.empty()) fail("{} load_state: missing entry '{}'", kind_, missing.front());
    return buffers;
  }

  const char* kind_;  // "SGD" or "AdamW", for errors
  std::vector<std::string> buffer_names_;
  std::vector<Slot> slots_;
  int64_t step_ = 0;
};

// ---------------------------------------------------------------- SGD and AdamW

class Sgd final : public StatefulOptimizer {
 public:
  Sgd(std::vector<ParamGroup> groups, const SgdOptions& options)
      : StatefulOptimizer(std::move(groups), options.lr, "SGD",
                          options.momentum != 0.0 ? std::vector<std::string>{"momentum_buffer"}
                                                  : std::vector<std::string>{}),
        options_(options) {
    check(options.lr >= 0, "SGD: lr {} must be >= 0", options.lr);
    check(options.momentum >= 0, "SGD: momentum {} must be >= 0", options.momentum);
    check(!options.nesterov || options.momentum > 0, "SGD: nesterov needs a momentum > 0");
  }

 private:
  void apply(const std::vector<ParamUpdate>& updates) override {
    for (const ParamUpdate& u : updates) {
      const Tensor momentum_buffer = u.buffers.empty() ? Tensor() : u.buffers[0];
      sgd_step_kernel.get(u.param.device())(u.param, u.grad, momentum_buffer, u.lr, options_.momentum,
                                            options_.nesterov, u.weight_decay, u.first_update);
    }
  }

  SgdOptions options_;
};

class AdamW final : public StatefulOptimizer {
 public:
  AdamW(std::vector<ParamGroup> groups, const AdamWOptions& options)
      : StatefulOptimizer(std::move(groups), options.lr, "AdamW", {"exp_avg", "exp_avg_sq"}), options_(options) {
    check(options.lr >= 0, "AdamW: lr {} must be >= 0", options.lr);
    check(options.beta1 >= 0 && options.beta1 < 1, "AdamW: beta1 {} must be in [0, 1)", options.beta1);
    check(options.beta2 >= 0 && options.beta2 < 1, "AdamW: beta2 {} must be in [0, 1)", options.beta2);
    check(options.eps >= 0, "AdamW: eps {} must be >= 0", options.eps);
  }

 private:
  // One multi-tensor step per device and dtype (first_update needs nothing:
  // zeroed moments are Adam's start).
  void apply(const std::vector<ParamUpdate>& updates) override {
    std::vector<AdamWParam> params;
    for (const ParamUpdate& u : updates) {
      params.push_back({u.param, u.grad, u.buffers[0], u.buffers[1], u.lr, u.weight_decay});
    }
    for (const auto& [key, batch] : by_device_and_dtype(params, [](const AdamWParam& p) { return p.param; })) {
      adamw_step_kernel.get(batch.front().param.device())(batch, options_.beta1, options_.beta2, options_.eps,
                                                          step_count());
    }
  }

  AdamWOptions options_;
};

}  // namespace

std::unique_ptr<Optimizer> make_sgd(std::vector<ParamGroup> groups, const SgdOptions& options) {
  return std::make_unique<Sgd>(std::move(groups), options);
}

std::unique_ptr<Optimizer> make_adamw(std::vector<ParamGroup> groups, const AdamWOptions& options) {
  return std::make_unique<AdamW>(std::move(groups), options);
}

// ---------------------------------------------------------------- gradient clipping

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  check(max_norm >= 0, "clip_grad_norm: max_norm {} must be >= 0", max_norm);
  std::vector<Tensor> grads;
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor grad = params[i].grad();
    if (!grad.defined()) continue;
    check(grad.is_contiguous(), "clip_grad_norm: gradient of parameter {} is not contiguous",
          param_label(params[i], 0, i));
    grads.push_back(grad);
  }
  // One multi-tensor call per device and dtype, the groups' sums added in a
  // fixed order.
  const auto groups = by_device_and_dtype(grads, [](const Tensor& grad) { return grad; });
  double sum_of_squares = 0.0;
  for (const auto& [key, group] : groups) sum_of_squares += sum_of_squares_kernel.get(group.front().device())(group);
  const double norm = std::sqrt(sum_of_squares);
  // PyTorch's coefficient, clamped to 1: the 1e-6 guards against a zero norm.
  const double factor = max_norm / (norm + 1e-6);
  if (factor < 1.0) {
    for (const auto& [key, group] : groups) scale_kernel.get(group.front().device())(group, factor);
  }
  return norm;
}

// ---------------------------------------------------------------- schedule

void WarmupCosineSchedule::validate() const {
  check(warmup_steps >= 0, "WarmupCosineSchedule: warmup_steps {} must be >= 0", warmup_steps);
  check(total_steps > warmup_steps, "WarmupCosineSchedule: total_steps {} must be greater than warmup_steps {}",
        total_steps, warmup_steps);
  check(base_lr >= 0, "WarmupCosineSchedule: base_lr {} must be >= 0", base_lr);
  check(min_lr >= 0, "WarmupCosineSchedule: min_lr {} must be >= 0", min_lr);
  check(warmup_start_lr >= 0, "WarmupCosineSchedule: warmup_start_lr {} must be >= 0", warmup_start_lr);
}

double WarmupCosineSchedule::lr_at(int64_t step) const {
  validate();
  check(step >= 0, "WarmupCosineSchedule: step {} must be >= 0", step);
  if (step < warmup_steps) {
    return warmup_start_lr + (base_lr - warmup_start_lr) * static_cast<double>(step) / warmup_steps;
  }
  if (step >= total_steps) return min_lr;
  const double progress = static_cast<double>(step - warmup_steps) / (total_steps - warmup_steps);
  return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

}  // namespace engine
