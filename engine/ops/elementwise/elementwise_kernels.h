// Kernels of the elementwise family: binary ops with broadcasting, unary
// math functions and their derivatives, tensor-scalar ops, and the fused
// silu_gated_sum.
#pragma once
#include "engine/dispatch.h"
#include "engine/tensor.h"

namespace engine {

// Each op count follows its enum (the CUDA kernels instantiate one dense
// kernel per op).
enum class BinaryOp { Add, Sub, Mul, Div };
constexpr int kBinaryOps = 4;
enum class UnaryOp { Neg, Exp, Log, Sqrt, Tanh, Sigmoid, Gelu, Silu, Softplus, Relu, Abs, Reciprocal };
constexpr int kUnaryOps = 12;
enum class ScalarOp { Add, Mul, Pow, GreaterEqual };
constexpr int kScalarOps = 4;
static_assert(static_cast<int>(BinaryOp::Div) + 1 == kBinaryOps, "kBinaryOps must follow BinaryOp");
static_assert(static_cast<int>(UnaryOp::Reciprocal) + 1 == kUnaryOps, "kUnaryOps must follow UnaryOp");
static_assert(static_cast<int>(ScalarOp::GreaterEqual) + 1 == kScalarOps, "kScalarOps must follow ScalarOp");

// a and b are already broadcast to out's shape (stride 0 along broadcast
// dimensions, any other strides); out is contiguous. All three share a dtype.
using BinaryKernel = void (*)(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
// x and out contiguous, same shape and dtype.
using UnaryKernel = void (*)(UnaryOp op, const Tensor& x, const Tensor& out);
// dx = dy * f'(x), given x and y = f(x); all contiguous.
using UnaryBackwardKernel = void (*)(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy,
                                     const Tensor& dx);
using ScalarKernel = void (*)(ScalarOp op, const Tensor& x, double scalar, const Tensor& out);
// out = (a + b) * silu(z); b may be undefined (then a * silu(z)). All
// contiguous, one shape and dtype.
using SiluGatedSumKernel = void (*)(const Tensor& a, const Tensor& b, const Tensor& z, const Tensor& out);
// From g = d(out): dsum = g * silu(z) (the gradient of a and of b) and
// dz = g * (a + b) * silu'(z), in one pass; either may be undefined (not
// wanted). All contiguous, one shape and dtype.
using SiluGatedSumBackwardKernel = void (*)(const Tensor& a, const Tensor& b, const Tensor& z, const Tensor& g,
                                            const Tensor& dsum, const Tensor& dz);

extern KernelSlot<BinaryKernel> binary_kernel;
extern KernelSlot<UnaryKernel> unary_kernel;
extern KernelSlot<UnaryBackwardKernel> unary_backward_kernel;
extern KernelSlot<ScalarKernel> scalar_kernel;
extern KernelSlot<SiluGatedSumKernel> silu_gated_sum_kernel;
extern KernelSlot<SiluGatedSumBackwardKernel> silu_gated_sum_backward_kernel;

}  // namespace engine
