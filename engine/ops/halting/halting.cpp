#include "engine/ops/halting/halting.h"

#include "engine/ops/halting/halting_kernels.h"

namespace engine {

std::pair<Tensor, Tensor> halting_step(const Tensor& x, const Tensor& can_halt, const Tensor& cumulative,
                                       const Tensor& active, double gamma, double beta, double eps) {
  check(x.dim() == 2 && x.size(1) > 0, "halting_step: x must be [T, D], got {}", ShapeText{x.shape()});
  const int64_t tokens = x.size(0);
  for (const Tensor* t : {&can_halt, &cumulative, &active}) {
    check(t->shape() == Shape{tokens} && t->dtype() == x.dtype() && t->device() == x.device(),
          "halting_step: per-token tensors must be [{}] {} on {} like x, got {} {} on {}", tokens,
          dtype_name(x.dtype()), x.device(), ShapeText{t->shape()}, dtype_name(t->dtype()), t->device());
  }
  const Tensor rows = x.strides()[1] == 1 ? x.detach() : x.detach().contiguous();
  Tensor cumulative_out = Tensor::empty_like(cumulative), active_out = Tensor::empty_like(active);
  if (tokens > 0) {
    halting_step_kernel.get(x.device())(rows, can_halt.contiguous(), cumulative.contiguous(), active.contiguous(),
                                        cumulative_out, active_out, gamma, beta, eps);
  }
  return {cumulative_out, active_out};
}

}  // namespace engine
