// Softmax and log-softmax: forward and backward through the row kernels.
#include "engine/ops/softmax/softmax.h"

#include "engine/autograd.h"
#include "engine/ops/rows.h"
#include "engine/ops/softmax/softmax_kernels.h"

namespace engine {

namespace {

Tensor softmax_op(SoftmaxKind kind, const Tensor& x, const char* name) {
  check(x.dim() >= 1, "{}: needs at least one dimension, got {}", name, x);
  Tensor input = x.detach().contiguous();
  Tensor out = Tensor::empty_like(x);
  if (out.numel() > 0) softmax_forward_kernel.get(x.device())(kind, last_dim_rows(input), last_dim_rows(out));
  // Both backward formulas need only the output (detached: no reference cycle).
  record(name, out, {x}, [kind, y = out.detach()](const Tensor& g) {
    Tensor dx = Tensor::empty_like(y);
    if (dx.numel() > 0) {
      softmax_backward_kernel.get(y.device())(kind, last_dim_rows(y), last_dim_rows(g.contiguous()),
                                              last_dim_rows(dx));
    }
    return std::vector<Tensor>{dx};
  });
  return out;
}

}  // namespace

Tensor softmax(const Tensor& x) { return softmax_op(SoftmaxKind::Softmax, x, "softmax"); }
Tensor log_softmax(const Tensor& x) { return softmax_op(SoftmaxKind::LogSoftmax, x, "log_softmax"); }

}  // namespace engine
