// CPU reference kernel of halting_step.
#include "engine/ops/halting/halting_kernels.h"
#include "engine/ops/halting/halting_token.h"

namespace engine {

namespace {

void halting_step_cpu(const Tensor& x, const Tensor& can_halt, const Tensor& cumulative, const Tensor& active,
                      const Tensor& cumulative_out, const Tensor& active_out, double gamma, double beta, double eps) {
  dispatch_float(x.dtype(), "halting_step", [&](auto tag) {
    using T = decltype(tag);
    const T* rows = static_cast<const T*>(x.raw_data());
    const int64_t row_stride = x.strides()[0];
    const T* halts = static_cast<const T*>(can_halt.raw_data());
    const T* c_in = static_cast<const T*>(cumulative.raw_data());
    const T* a_in = static_cast<const T*>(active.raw_data());
    T* c_out = static_cast<T*>(cumulative_out.raw_data());
    T* a_out = static_cast<T*>(active_out.raw_data());
    for (int64_t t = 0; t < x.size(0); ++t) {
      c_out[t] = c_in[t];
      a_out[t] = a_in[t];
      halting_step_token<T>(rows[t * row_stride], halts[t], T(gamma), T(beta), T(1.0 - eps), c_out[t], a_out[t]);
    }
  });
}

}  // namespace

KernelSlot<HaltingStepKernel> halting_step_kernel{"halting_step", &halting_step_cpu, nullptr};

}  // namespace engine
