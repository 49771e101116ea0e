// CUDA kernels of the optimizer family: fused elementwise updates, and a
// deterministic two-pass sum of squares for gradient clipping.
#include <cmath>

#include "engine/cuda/cuda_utils.cuh"
#include "engine/optim/optim_kernels.h"

namespace engine {

namespace {

// The scalars of one AdamW step, computed on the host in double and rounded
// once, exactly as the CPU kernel does.
template <typename T>
struct AdamWScalars {
  T decay, beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, bias_correction2_sqrt, eps;
};

template <typename T>
__global__ void adamw_step_kernel_impl(AdamWScalars<T> s, T* p, const T* g, T* m, T* v, int64_t n) {
  for (int64_t i : grid_stride(n)) {
    m[i] = s.beta1 * m[i] + s.one_minus_beta1 * g[i];
    v[i] = s.beta2 * v[i] + s.one_minus_beta2 * g[i] * g[i];
    const T denom = sqrt(v[i]) / s.bias_correction2_sqrt + s.eps;
    p[i] = p[i] * s.decay - s.step_size * m[i] / denom;
  }
}

void adamw_step_cuda(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                     double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step) {
  DeviceGuard guard(param);
  const double bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  dispatch_float(param.dtype(), "adamw_step", [&](auto tag) {
    using T = decltype(tag);
    const AdamWScalars<T> scalars{static_cast<T>(1.0 - lr * weight_decay), static_cast<T>(beta1),
                                  static_cast<T>(beta2), static_cast<T>(1.0 - beta1), static_cast<T>(1.0 - beta2),
                                  static_cast<T>(lr / bias_correction1),
                                  static_cast<T>(std::sqrt(bias_correction2)), static_cast<T>(eps)};
    launch_1d(param.numel(), adamw_step_kernel_impl<T>, scalars, mutable_data_of<T>(param), data_of<T>(grad),
              mutable_data_of<T>(exp_avg), mutable_data_of<T>(exp_avg_sq), param.numel());
  });
}

// buf is null without momentum.
template <typename T>
__global__ void sgd_step_kernel_impl(T* p, const T* g, T* buf, T rate, T mu, bool nesterov, T wd, bool first_step,
                                     int64_t n) {
  for (int64_t i : grid_stride(n)) {
    T d = g[i] + wd * p[i];
    if (buf) {
      buf[i] = first_step ? d : mu * buf[i] + d;
      d = nesterov ? d + mu * buf[i] : buf[i];
    }
    p[i] -= rate * d;
  }
}

void sgd_step_cuda(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer, double lr, double momentum,
                   bool nesterov, double weight_decay, bool first_step) {
  DeviceGuard guard(param);
  dispatch_float(param.dtype(), "sgd_step", [&](auto tag) {
    using T = decltype(tag);
    T* buf = momentum != 0.0 ? mutable_data_of<T>(momentum_buffer) : nullptr;
    launch_1d(param.numel(), sgd_step_kernel_impl<T>, mutable_data_of<T>(param), data_of<T>(grad), buf,
              static_cast<T>(lr), static_cast<T>(momentum), nesterov, static_cast<T>(weight_decay), first_step,
              param.numel());
  });
}

// out[block] = the block's share of sum(x^2) (or of sum(x)), in double.
template <typename In>
__global__ void block_sums_kernel(const In* x, int64_t n, bool square, double* out) {
  double total = 0.0;
  for (int64_t i : grid_stride(n)) {
    const double value = static_cast<double>(x[i]);
    total += square ? value * value : value;
  }
  total = block_sum(total);
  if (threadIdx.x == 0) out[blockIdx.x] = total;
}

// Blocks of the first pass: a fixed count for a given size, so that the
// summation order, and with it the result, is the same on every run.
constexpr int64_t kSumBlocks = 1024;

double sum_of_squares_cuda(const Tensor& x) {
  if (x.numel() == 0) return 0.0;
  DeviceGuard guard(x);
  const int64_t blocks = std::min((x.numel() + kThreads - 1) / kThreads, kSumBlocks);
  Tensor partials = Tensor::empty({blocks}, DType::F64, x.device());
  Tensor total = Tensor::empty({1}, DType::F64, x.device());
  dispatch_float(x.dtype(), "sum_of_squares", [&](auto tag) {
    using T = decltype(tag);
    block_sums_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, current_stream()>>>(
        data_of<T>(x), x.numel(), true, mutable_data_of<double>(partials));
    CUDA_CHECK_LAUNCH();
  });
  block_sums_kernel<double><<<1, kThreads, 0, current_stream()>>>(data_of<double>(partials), blocks, false,
                                                                   mutable_data_of<double>(total));
  CUDA_CHECK_LAUNCH();
  return total.item<double>();  // copies to the host, waiting for the kernels
}

template <typename T>
__global__ void scale_kernel_impl(T* x, T factor, int64_t n) {
  for (int64_t i : grid_stride(n)) x[i] *= factor;
}

void scale_cuda(const Tensor& x, double factor) {
  DeviceGuard guard(x);
  dispatch_float(x.dtype(), "scale", [&](auto tag) {
    using T = decltype(tag);
    launch_1d(x.numel(), scale_kernel_impl<T>, mutable_data_of<T>(x), static_cast<T>(factor), x.numel());
  });
}

const bool registered = [] {
  adamw_step_kernel.cuda = &adamw_step_cuda;
  sgd_step_kernel.cuda = &sgd_step_cuda;
  sum_of_squares_kernel.cuda = &sum_of_squares_cuda;
  scale_kernel.cuda = &scale_cuda;
  return true;
}();

}  // namespace

}  // namespace engine
