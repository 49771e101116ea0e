// CUDA kernel of halting_step: one thread per token (a few thousand at most;
// the launch, not the work, is what it costs).
#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/halting/halting_kernels.h"
#include "engine/ops/halting/halting_token.h"

namespace engine {

namespace {

template <typename T>
__global__ void halting_step_kernel_impl(const T* rows, int64_t row_stride, const T* can_halt, const T* cumulative,
                                         const T* active, T* cumulative_out, T* active_out, int64_t tokens, T gamma,
                                         T beta, T threshold) {
  for (int64_t t : grid_stride(tokens)) {
    T c = cumulative[t], a = active[t];
    halting_step_token<T>(rows[t * row_stride], can_halt[t], gamma, beta, threshold, c, a);
    cumulative_out[t] = c;
    active_out[t] = a;
  }
}

void halting_step_cuda(const Tensor& x, const Tensor& can_halt, const Tensor& cumulative, const Tensor& active,
                       const Tensor& cumulative_out, const Tensor& active_out, double gamma, double beta,
                       double eps) {
  DeviceGuard guard(x);
  const int64_t tokens = x.size(0);
  dispatch_float(x.dtype(), "halting_step", [&](auto tag) {
    using T = decltype(tag);
    launch_1d(tokens, halting_step_kernel_impl<T>, data_of<T>(x), x.strides()[0], data_of<T>(can_halt),
              data_of<T>(cumulative), data_of<T>(active), mutable_data_of<T>(cumulative_out),
              mutable_data_of<T>(active_out), tokens, T(gamma), T(beta), T(1.0 - eps));
  });
}

const bool registered = [] {
  halting_step_kernel.cuda = &halting_step_cuda;
  return true;
}();

}  // namespace

}  // namespace engine
