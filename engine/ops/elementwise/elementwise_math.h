// The elementwise formulas, shared by the CPU kernels (elementwise_cpu.cpp)
// and the CUDA kernels (elementwise.cu) so that both compute the same function.
// Math calls are unqualified: on the host the using-declarations below bring
// in std's float and double overloads, on the device CUDA's.
#pragma once
#include <cmath>
#include <type_traits>
#include <utility>

#include "engine/ops/elementwise/elementwise_kernels.h"

#ifdef __CUDACC__
#define ENGINE_HOST_DEVICE __host__ __device__
#else
#define ENGINE_HOST_DEVICE
#endif

namespace engine {
namespace elementwise_math {

using std::erf;
using std::exp;
using std::fabs;
using std::log;
using std::log1p;
using std::pow;
using std::sqrt;
using std::tanh;

// body(std::integral_constant<Enum, op>{}): the run-time op as a template
// argument, for enums whose values are 0 .. Count - 1. A kernel's loop then
// holds one formula, which both compilers inline (and GCC vectorises).
template <typename Enum, typename Body, int... I>
void with_op(Enum op, Body&& body, std::integer_sequence<int, I...>) {
  ((static_cast<int>(op) == I ? body(std::integral_constant<Enum, static_cast<Enum>(I)>{}) : void()), ...);
}
template <typename Enum, int Count, typename Body>
void with_op(Enum op, Body&& body) {
  with_op(op, body, std::make_integer_sequence<int, Count>{});
}

template <typename T>
ENGINE_HOST_DEVICE T apply_binary(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
  }
  return T(0);
}

template <typename T>
ENGINE_HOST_DEVICE T sigmoid(T x) {
  return T(1) / (T(1) + exp(-x));
}

// silu'(x), given s = sigmoid(x).
template <typename T>
ENGINE_HOST_DEVICE T silu_derivative(T x, T s) {
  return s * (T(1) + x * (T(1) - s));
}

// max(x, 0), as each compiler does best: one FMNMX on the GPU (a compare and
// select there measured 20% slower in softplus_linear on an H200); on the
// host a select, which GCC vectorises (it does not vectorise fmaxf).
template <typename T>
ENGINE_HOST_DEVICE T positive_part(T x) {
#ifdef __CUDA_ARCH__
  return fmax(x, T(0));
#else
  return x > T(0) ? x : T(0);
#endif
}

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

template <typename T>
ENGINE_HOST_DEVICE T apply_unary(UnaryOp op, T x) {
  switch (op) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Exp: return exp(x);
    case UnaryOp::Log: return log(x);
    case UnaryOp::Sqrt: return sqrt(x);
    case UnaryOp::Tanh: return tanh(x);
    case UnaryOp::Sigmoid: return sigmoid(x);
    case UnaryOp::Gelu: return T(0.5) * x * (T(1) + erf(x * T(kInvSqrt2)));  // exact (erf) GELU
    case UnaryOp::Silu: return x * sigmoid(x);
    case UnaryOp::Softplus: return positive_part(x) + log1p(exp(-fabs(x)));  // log1p(exp(x)) without overflow
    case UnaryOp::Relu: return positive_part(x);
    case UnaryOp::Abs: return fabs(x);
    case UnaryOp::Reciprocal: return T(1) / x;
  }
  return T(0);
}

// d f(x) / dx, given x and y = f(x).
template <typename T>
ENGINE_HOST_DEVICE T unary_derivative(UnaryOp op, T x, T y) {
  switch (op) {
    case UnaryOp::Neg: return T(-1);
    case UnaryOp::Exp: return y;
    case UnaryOp::Log: return T(1) / x;
    case UnaryOp::Sqrt: return T(0.5) / y;
    case UnaryOp::Tanh: return T(1) - y * y;
    case UnaryOp::Sigmoid: return y * (T(1) - y);
    case UnaryOp::Gelu:
      return T(0.5) * (T(1) + erf(x * T(kInvSqrt2))) + x * T(kInvSqrt2Pi) * exp(T(-0.5) * x * x);
    case UnaryOp::Silu: return silu_derivative(x, sigmoid(x));
    case UnaryOp::Softplus: return sigmoid(x);
    // Comparisons as numbers, not branches, so that the loops over them vectorise.
    case UnaryOp::Relu: return T(x > T(0));
    case UnaryOp::Abs: return T(x > T(0)) - T(x < T(0));
    case UnaryOp::Reciprocal: return -y * y;
  }
  return T(0);
}

template <typename T>
ENGINE_HOST_DEVICE T apply_scalar(ScalarOp op, T x, T s) {
  switch (op) {
    case ScalarOp::Add: return x + s;
    case ScalarOp::Mul: return x * s;
    case ScalarOp::Pow: return pow(x, s);
    case ScalarOp::GreaterEqual: return x >= s ? T(1) : T(0);
  }
  return T(0);
}

// The gate of silu_gated_sum: sum * silu(z), with sum = a + b.
template <typename T>
ENGINE_HOST_DEVICE T silu_gate(T sum, T z) {
  return sum * apply_unary(UnaryOp::Silu, z);
}

// Its gradients from g = d(out): dsum = g * silu(z), dz = g * sum * silu'(z),
// sharing one sigmoid.
template <typename T>
ENGINE_HOST_DEVICE void silu_gate_backward(T sum, T z, T g, T& dsum, T& dz) {
  const T s = sigmoid(z);
  dsum = g * (z * s);
  dz = g * sum * silu_derivative(z, s);
}

}  // namespace elementwise_math
}  // namespace engine
