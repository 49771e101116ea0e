// Scan ops: argument checks, forward through the kernels, backward beside each.
#include "engine/ops/scan/scan.h"

#include "engine/autograd.h"
#include "engine/ops/elementwise/elementwise.h"
#include "engine/ops/elementwise/elementwise_kernels.h"
#include "engine/ops/scan/scan_kernels.h"

namespace engine {

namespace {

// What the kernels read: a contiguous tensor without history, whose size-1
// dims have the strides the kernels assume (a sequence of length 1 from
// unsqueeze has an arbitrary row stride).
Tensor kernel_input(const Tensor& t) {
  return t.defined() ? with_canonical_unit_strides(t.detach().contiguous()) : Tensor();
}

// Two [B, L, N] inputs as the kernels read them: in place when both are rows
// of N contiguous elements at one stride r >= N (strides [L r, r, 1], e.g.
// slices of one projection's output, which would otherwise be copied at every
// call), else contiguous copies. The selective scan's Bm and Cm, gated_scan's
// u and gate.
std::pair<Tensor, Tensor> shared_rows(const Tensor& first, const Tensor& second) {
  auto uniform_rows = [](const Tensor& t) {
    const Shape& st = t.strides();
    return st[2] == 1 && st[1] >= t.size(2) && st[0] == t.size(1) * st[1];
  };
  if (uniform_rows(first) && uniform_rows(second) && first.strides() == second.strides()) {
    return {first.detach(), second.detach()};
  }
  return {kernel_input(first), kernel_input(second)};
}

void check_sequence(const char* op, const char* what, const Tensor& t) {
  check(t.dim() == 3, "{}: {} must be [B, L, C], got {}", op, what, t);
}

void check_shape(const char* op, const char* what, const Tensor& t, const Shape& expected) {
  check(t.shape() == expected, "{}: {} must be {}, got {}", op, what, ShapeText{expected}, t);
}

// Every defined tensor shares the first one's dtype and device.
void check_alike(const char* op, const std::vector<Tensor>& tensors) {
  for (const Tensor& t : tensors) {
    if (!t.defined()) continue;
    check(t.dtype() == tensors[0].dtype() && t.device() == tensors[0].device(), "{}: inputs {} and {} differ", op,
          tensors[0], t);
  }
}

}  // namespace

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

namespace {

// depthwise_conv1d, and with silu its SiLU'd form, whose backward takes
// SiLU's gradient from the convolution it kept (pre) before the conv's.
Tensor conv_op(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t pad_left,
               bool reverse, bool silu) {
  check_sequence(op, "x", x);
  check(weight.dim() == 2 && weight.size(0) == x.size(2) && weight.size(1) > 0,
        "{}: weight must be [C, K] with C = {}, got {}", op, x.size(2), weight);
  if (bias.defined()) check_shape(op, "bias", bias, {x.size(2)});
  const int64_t taps = weight.size(1);
  check(pad_left >= 0 && pad_left < taps, "{}: pad_left must be in [0, {}), got {}", op, taps, pad_left);
  check_alike(op, {x, weight, bias});
  Tensor x_in = kernel_input(x), w_in = kernel_input(weight);
  Tensor y = Tensor::empty_like(x);
  const bool keep_pre = silu && needs_grad({x, weight, bias});
  const Tensor pre = keep_pre ? Tensor::empty_like(x) : Tensor();
  if (y.numel() > 0) {
    depthwise_conv1d_kernel.get(x.device())(x_in, w_in, kernel_input(bias), y, pad_left, reverse, silu, pre);
  }
  record(op, y, {x, weight, bias},
         [x_in, w_in, with_bias = bias.defined(), pad_left, reverse, pre, post = silu ? y.detach() : Tensor()](
             const Tensor& g) {
           Tensor dx = Tensor::empty_like(x_in), dweight = Tensor::empty_like(w_in);
           Tensor dbias = with_bias ? Tensor::empty({w_in.size(0)}, g.dtype(), g.device()) : Tensor();
           if (g.numel() > 0) {
             Tensor dconv = g.contiguous();
             if (pre.defined()) {
               dconv = Tensor::empty_like(g);
               unary_backward_kernel.get(g.device())(UnaryOp::Silu, pre, post, g.contiguous(), dconv);
             }
             depthwise_conv1d_backward_kernel.get(g.device())(x_in, w_in, dconv, dx, dweight, dbias, pad_left,
                                                              reverse);
           }
           return std::vector<Tensor>{dx, dweight, dbias};
         });
  return y;
}

}  // namespace

Tensor depthwise_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t pad_left, bool reverse) {
  return conv_op("depthwise_conv1d", x, weight, bias, pad_left, reverse, /*silu=*/false);
}

Tensor depthwise_conv1d_silu(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t pad_left,
                             bool reverse) {
  return conv_op("depthwise_conv1d_silu", x, weight, bias, pad_left, reverse, /*silu=*/true);
}

}  // namespace engine
