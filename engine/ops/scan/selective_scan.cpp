// selective_scan and selective_scan_log_a: argument checks, forward through
// the kernels, backward beside them.
#include "engine/ops/scan/selective_scan.h"

#include "engine/autograd.h"
#include "engine/ops/scan/selective_scan_kernels.h"
#include "engine/ops/scan/sequence.h"

namespace engine {

using namespace sequence;  // the sequence ops' shared helpers

namespace {

// selective_scan, and with a_is_log selective_scan_log_a: the kernels take
// A_log and return dL/dA_log.
Tensor selective_op(const char* op, const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& Bm,
                    const Tensor& Cm, const Tensor& D, bool reverse, bool a_is_log) {
  check_sequence(op, "x", x);
  check(A.dim() == 2 && A.size(0) == x.size(2) && A.size(1) > 0, "{}: A must be [C, S] with C = {} and S > 0, got {}",
        op, x.size(2), A);
  const int64_t batch = x.size(0), length = x.size(1), channels = x.size(2), state = A.size(1);
  check_shape(op, "dt", dt, x.shape());
  check_shape(op, "Bm", Bm, {batch, length, state});
  check_shape(op, "Cm", Cm, {batch, length, state});
  check_shape(op, "D", D, {channels});
  check_alike(op, {x, dt, A, Bm, Cm, D});
  const auto [Bm_rows, Cm_rows] = shared_rows(Bm, Cm);
  const SelectiveScanInputs in{kernel_input(x), kernel_input(dt), kernel_input(A), Bm_rows,
                               Cm_rows,         kernel_input(D),  a_is_log};
  Tensor y = Tensor::empty_like(x);
  // The backward keeps the inputs and what the forward saves to restart from
  // (on the GPU, every 8th state), and recomputes the states in between.
  const bool save_states = needs_grad({x, dt, A, Bm, Cm, D});
  Tensor saved;
  if (y.numel() > 0) saved = selective_scan_kernel.get(x.device())(in, y, save_states, reverse);
  record(op, y, {x, dt, A, Bm, Cm, D}, [in, saved, reverse](const Tensor& g) {
    const SelectiveScanGrads grads{Tensor::empty_like(in.x),  Tensor::empty_like(in.dt), Tensor::empty_like(in.A),
                                   Tensor::empty_like(in.Bm), Tensor::empty_like(in.Cm), Tensor::empty_like(in.D)};
    if (g.numel() > 0) selective_scan_backward_kernel.get(g.device())(in, saved, g.contiguous(), grads, reverse);
    return std::vector<Tensor>{grads.dx, grads.ddt, grads.dA, grads.dBm, grads.dCm, grads.dD};
  });
  return y;
}

}  // namespace

Tensor selective_scan(const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& Bm, const Tensor& Cm,
                      const Tensor& D, bool reverse) {
  return selective_op("selective_scan", x, dt, A, Bm, Cm, D, reverse, /*a_is_log=*/false);
}

Tensor selective_scan_log_a(const Tensor& x, const Tensor& dt, const Tensor& A_log, const Tensor& Bm,
                            const Tensor& Cm, const Tensor& D, bool reverse) {
  return selective_op("selective_scan_log_a", x, dt, A_log, Bm, Cm, D, reverse, /*a_is_log=*/true);
}

}  // namespace engine
