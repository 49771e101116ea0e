// Elementwise ops: forward through the device kernels, backward beside each.
#include "engine/ops/elementwise/elementwise.h"

#include "engine/autograd.h"
#include "engine/ops/elementwise/elementwise_kernels.h"
#include "engine/ops/reduce/reduce.h"

namespace engine {

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  const size_t dims = std::max(a.size(), b.size());
  Shape out(dims);
  for (size_t i = 0; i < dims; ++i) {
    int64_t da = i < dims - a.size() ? 1 : a[i - (dims - a.size())];
    int64_t db = i < dims - b.size() ? 1 : b[i - (dims - b.size())];
    check(da == db || da == 1 || db == 1, "cannot broadcast shapes {} and {}", ShapeText{a}, ShapeText{b});
    out[i] = da == 1 ? db : da;
  }
  return out;
}

namespace {

// A stride-0 view of t expanded to `shape` (for kernels only; no autograd).
Tensor broadcast_view(const Tensor& t, const Shape& shape) {
  const size_t lead = shape.size() - t.shape().size();
  Shape strides(shape.size(), 0);
  for (size_t i = 0; i < t.shape().size(); ++i) {
    strides[lead + i] = t.shape()[i] == 1 ? 0 : t.strides()[i];
  }
  return make_view(t, shape, strides, t.offset());
}

void check_binary_inputs(const Tensor& a, const Tensor& b, const char* op) {
  check(a.dtype() == b.dtype(), "{}: dtypes {} and {} differ", op, dtype_name(a.dtype()), dtype_name(b.dtype()));
  check(a.device() == b.device(), "{}: tensors on {} and {}", op, a.device(), b.device());
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b, const char* name) {
  check_binary_inputs(a, b, name);
  const Shape shape = broadcast_shapes(a.shape(), b.shape());
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  binary_kernel.get(a.device())(op, broadcast_view(a, shape), broadcast_view(b, shape), out);
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary(BinaryOp::Add, a, b, "add");
  record("add", out, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g) {
    return std::vector<Tensor>{sum_to(g, sa), sum_to(g, sb)};
  });
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary(BinaryOp::Sub, a, b, "sub");
  record("sub", out, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g) {
    return std::vector<Tensor>{sum_to(g, sa), sum_to(neg(g), sb)};
  });
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary(BinaryOp::Mul, a, b, "mul");
  record("mul", out, {a, b}, [a, b](const Tensor& g) {
    return std::vector<Tensor>{a.requires_grad() ? sum_to(mul(g, b), a.shape()) : Tensor(),
                               b.requires_grad() ? sum_to(mul(g, a), b.shape()) : Tensor()};
  });
  return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary(BinaryOp::Div, a, b, "div");
  // Capture a detached view of the output: capturing `out` itself would make
  // its own graph node keep it alive (a reference cycle).
  record("div", out, {a, b}, [a, b, quotient = out.detach()](const Tensor& g) {
    Tensor ga = div(g, b);  // d(a/b)/da = 1/b; d(a/b)/db = -(a/b)/b
    return std::vector<Tensor>{a.requires_grad() ? sum_to(ga, a.shape()) : Tensor(),
                               b.requires_grad() ? sum_to(neg(mul(ga, quotient)), b.shape()) : Tensor()};
  });
  return out;
}

namespace {

Tensor scalar_op(ScalarOp op, const Tensor& x, double scalar) {
  Tensor input = x.contiguous();
  Tensor out = Tensor::empty_like(x);
  scalar_kernel.get(x.device())(op, input, scalar, out);
  return out;
}

}  // namespace

Tensor add(const Tensor& x, double scalar) {
  Tensor out = scalar_op(ScalarOp::Add, x, scalar);
  record("add_scalar", out, {x}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  return out;
}

Tensor mul(const Tensor& x, double scalar) {
  Tensor out = scalar_op(ScalarOp::Mul, x, scalar);
  record("mul_scalar", out, {x}, [scalar](const Tensor& g) { return std::vector<Tensor>{mul(g, scalar)}; });
  return out;
}

Tensor pow(const Tensor& x, double exponent) {
  // A square is one multiply, where the general pow costs a log and an exp
  // per element (4% of the CPU distillation, whose loss squares its errors).
  if (exponent == 2.0) return mul(x, x);
  Tensor out = scalar_op(ScalarOp::Pow, x, exponent);
  record("pow", out, {x}, [x, exponent](const Tensor& g) {
    return std::vector<Tensor>{mul(g, mul(pow(x, exponent - 1.0), exponent))};
  });
  return out;
}

Tensor greater_equal(const Tensor& x, double threshold) { return scalar_op(ScalarOp::GreaterEqual, x, threshold); }

namespace {

// y = f(x); backward: dx = dy * f'(x) through the unary_backward kernel.
Tensor unary(UnaryOp op, const Tensor& x, const char* name) {
  Tensor input = x.contiguous();
  Tensor out = Tensor::empty_like(x);
  unary_kernel.get(x.device())(op, input, out);
  record(name, out, {x}, [op, input = input.detach(), y = out.detach()](const Tensor& g) {
    Tensor dx = Tensor::empty_like(input);
    unary_backward_kernel.get(input.device())(op, input, y, g.contiguous(), dx);
    return std::vector<Tensor>{dx};
  });
  return out;
}

}  // namespace

Tensor neg(const Tensor& x) { return unary(UnaryOp::Neg, x, "neg"); }
Tensor exp(const Tensor& x) { return unary(UnaryOp::Exp, x, "exp"); }
Tensor log(const Tensor& x) { return unary(UnaryOp::Log, x, "log"); }
Tensor sqrt(const Tensor& x) { return unary(UnaryOp::Sqrt, x, "sqrt"); }
Tensor tanh(const Tensor& x) { return unary(UnaryOp::Tanh, x, "tanh"); }
Tensor sigmoid(const Tensor& x) { return unary(UnaryOp::Sigmoid, x, "sigmoid"); }
Tensor gelu(const Tensor& x) { return unary(UnaryOp::Gelu, x, "gelu"); }
Tensor silu(const Tensor& x) { return unary(UnaryOp::Silu, x, "silu"); }
Tensor softplus(const Tensor& x) { return unary(UnaryOp::Softplus, x, "softplus"); }
Tensor relu(const Tensor& x) { return unary(UnaryOp::Relu, x, "relu"); }
Tensor abs(const Tensor& x) { return unary(UnaryOp::Abs, x, "abs"); }
Tensor reciprocal(const Tensor& x) { return unary(UnaryOp::Reciprocal, x, "reciprocal"); }

namespace {

constexpr const char* kSiluGatedSum = "silu_gated_sum";

void check_like_a(const Tensor& t, const char* name, const Tensor& a) {
  check(t.shape() == a.shape(), "{}: {} has shape {} but a has {}", kSiluGatedSum, name, ShapeText{t.shape()},
        ShapeText{a.shape()});
  check(t.dtype() == a.dtype(), "{}: {} is {} but a is {}", kSiluGatedSum, name, dtype_name(t.dtype()),
        dtype_name(a.dtype()));
  check(t.device() == a.device(), "{}: {} is on {} but a is on {}", kSiluGatedSum, name, t.device(),
        a.device());
}

void check_silu_gated_sum_inputs(const Tensor& a, const Tensor& b, const Tensor& z) {
  check(a.defined(), "{}: a is undefined", kSiluGatedSum);
  check(z.defined(), "{}: z is undefined", kSiluGatedSum);
  if (b.defined()) check_like_a(b, "b", a);
  check_like_a(z, "z", a);
}

// The kernels' operand: contiguous (copied only if it is not) and without
// history; undefined stays undefined.
Tensor kernel_operand(const Tensor& t) { return t.defined() ? t.contiguous().detach() : Tensor(); }

}  // namespace

Tensor silu_gated_sum(const Tensor& a, const Tensor& b, const Tensor& z) {
  check_silu_gated_sum_inputs(a, b, z);
  Tensor ka = kernel_operand(a), kb = kernel_operand(b), kz = kernel_operand(z);
  Tensor out = Tensor::empty_like(a);
  silu_gated_sum_kernel.get(a.device())(ka, kb, kz, out);
  const bool wants_sum = a.requires_grad() || (b.defined() && b.requires_grad());
  record(kSiluGatedSum, out, {a, b, z}, [ka, kb, kz, wants_sum, wants_z = z.requires_grad()](const Tensor& g) {
    auto empty_if = [&](bool wanted) { return wanted ? Tensor::empty_like(ka) : Tensor(); };
    Tensor dsum = empty_if(wants_sum), dz = empty_if(wants_z);
    silu_gated_sum_backward_kernel.get(ka.device())(ka, kb, kz, g.contiguous(), dsum, dz);
    // a and b get the same gradient; autograd never writes into it, so one
    // tensor serves both (an input without grad ignores its entry).
    return std::vector<Tensor>{dsum, dsum, dz};
  });
  return out;
}

}  // namespace engine
