// linear_scan and gated_scan: argument checks, forward through the kernels,
// backward beside each.
#include "engine/ops/scan/scan.h"

#include "engine/autograd.h"
#include "engine/ops/scan/scan_kernels.h"
#include "engine/ops/scan/sequence.h"

namespace engine {

using namespace sequence;  // the sequence ops' shared helpers

Tensor linear_scan(const Tensor& a, const Tensor& b, bool reverse) {
  check_sequence("linear_scan", "a", a);
  check_shape("linear_scan", "b", b, a.shape());
  check_alike("linear_scan", {a, b});
  Tensor a_in = kernel_input(a);
  Tensor h = Tensor::empty_like(a);
  if (h.numel() > 0) linear_scan_kernel.get(a.device())(a_in, kernel_input(b), h, reverse);
  record("linear_scan", h, {a, b}, [a_in, h_saved = h.detach(), reverse](const Tensor& g) {
    // Empty, not zeros, here and in the other backwards: the kernels write
    // every element (the tests run with fresh tensors poisoned).
    Tensor da = Tensor::empty_like(a_in), db = Tensor::empty_like(a_in);
    if (da.numel() > 0) linear_scan_backward_kernel.get(g.device())(a_in, h_saved, g.contiguous(), da, db, reverse);
    return std::vector<Tensor>{da, db};
  });
  return h;
}

Tensor gated_scan(const Tensor& u, const Tensor& gate, const Tensor& keep, bool reverse) {
  check_sequence("gated_scan", "u", u);
  check_shape("gated_scan", "gate", gate, u.shape());
  if (keep.defined()) check_shape("gated_scan", "keep", keep, {u.size(0), u.size(1)});
  check_alike("gated_scan", {u, gate, keep});
  const auto [u_rows, gate_rows] = shared_rows(u, gate);
  const GatedScanInputs in{u_rows, gate_rows, kernel_input(keep)};
  Tensor h = Tensor::empty_like(u);
  if (h.numel() > 0) gated_scan_kernel.get(u.device())(in, h, reverse);
  // keep is a mask, not learned: it gets no gradient.
  record("gated_scan", h, {u, gate}, [in, h_saved = h.detach(), reverse](const Tensor& g) {
    Tensor du = Tensor::empty_like(h_saved), dgate = Tensor::empty_like(h_saved);
    if (du.numel() > 0) gated_scan_backward_kernel.get(g.device())(in, h_saved, g.contiguous(), du, dgate, reverse);
    return std::vector<Tensor>{du, dgate};
  });
  return h;
}

}  // namespace engine
