// CPU reference kernels of the optimizer family.
#include <cmath>

#include "engine/optim/optim_kernels.h"

namespace engine {

namespace {

template <typename T>
T* ptr(const Tensor& t) {
  return static_cast<T*>(t.raw_data());
}

void adamw_param_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                      double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step) {
  dispatch_float(param.dtype(), "adamw_step", [&](auto tag) {
    using T = decltype(tag);
    T* p = ptr<T>(param);
    const T* g = ptr<T>(grad);
    T* m = ptr<T>(exp_avg);
    T* v = ptr<T>(exp_avg_sq);
    // Scalars in double, then rounded once; the update is written as PyTorch's
    // p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps).
    const double bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(step));
    const double bias_correction2 = 1.0 - std::pow(beta2, static_cast<double>(step));
    const T decay = static_cast<T>(1.0 - lr * weight_decay);
    const T b1 = static_cast<T>(beta1), b2 = static_cast<T>(beta2);
    const T one_minus_b1 = static_cast<T>(1.0 - beta1), one_minus_b2 = static_cast<T>(1.0 - beta2);
    const T step_size = static_cast<T>(lr / bias_correction1);
    const T bias_correction2_sqrt = static_cast<T>(std::sqrt(bias_correction2));
    const T epsilon = static_cast<T>(eps);
    const int64_t n = param.numel();
    for (int64_t i = 0; i < n; ++i) {
      m[i] = b1 * m[i] + one_minus_b1 * g[i];
      v[i] = b2 * v[i] + one_minus_b2 * g[i] * g[i];
      const T denom = std::sqrt(v[i]) / bias_correction2_sqrt + epsilon;
      p[i] = p[i] * decay - step_size * m[i] / denom;
    }
  });
}

void adamw_step_cpu(const std::vector<AdamWParam>& params, double beta1, double beta2, double eps, int64_t step) {
  for (const AdamWParam& p : params) {
    adamw_param_step(p.param, p.grad, p.exp_avg, p.exp_avg_sq, p.lr, beta1, beta2, eps, p.weight_decay, step);
  }
}

void sgd_step_cpu(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer, double lr,
                  double momentum, bool nesterov, double weight_decay, bool first_step) {
  dispatch_float(param.dtype(), "sgd_step", [&](auto tag) {
    using T = decltype(tag);
    T* p = ptr<T>(param);
    const T* g = ptr<T>(grad);
    T* buf = momentum != 0.0 ? ptr<T>(momentum_buffer) : nullptr;
    const T rate = static_cast<T>(lr), mu = static_cast<T>(momentum), wd = static_cast<T>(weight_decay);
    const int64_t n = param.numel();
    for (int64_t i = 0; i < n; ++i) {
      T d = g[i] + wd * p[i];
      if (buf) {
        buf[i] = first_step ? d : mu * buf[i] + d;
        d = nesterov ? d + mu * buf[i] : buf[i];
      }
      p[i] -= rate * d;
    }
  });
}

double sum_of_squares_cpu(const std::vector<Tensor>& xs) {
  double sum = 0.0;
  for (const Tensor& x : xs) {
    dispatch_float(x.dtype(), "sum_of_squares", [&](auto tag) {
      using T = decltype(tag);
      const T* px = ptr<T>(x);
      const int64_t n = x.numel();
      for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(px[i]) * static_cast<double>(px[i]);
    });
  }
  return sum;
}

void scale_cpu(const std::vector<Tensor>& xs, double factor) {
  for (const Tensor& x : xs) {
    dispatch_float(x.dtype(), "scale", [&](auto tag) {
      using T = decltype(tag);
      T* px = ptr<T>(x);
      const T f = static_cast<T>(factor);
      const int64_t n = x.numel();
      for (int64_t i = 0; i < n; ++i) px[i] *= f;
    });
  }
}

}  // namespace

KernelSlot<AdamWStepKernel> adamw_step_kernel{"adamw_step", &adamw_step_cpu, nullptr};
KernelSlot<SgdStepKernel> sgd_step_kernel{"sgd_step", &sgd_step_cpu, nullptr};
KernelSlot<SumOfSquaresKernel> sum_of_squares_kernel{"sum_of_squares", &sum_of_squares_cpu, nullptr};
KernelSlot<ScaleKernel> scale_kernel{"scale", &scale_cpu, nullptr};

}  // namespace engine
