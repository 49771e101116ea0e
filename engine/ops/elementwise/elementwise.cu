// CUDA kernels of the elementwise family: the formulas of elementwise_math.h.
// Two versions of each:
//  * dense (the hot path: contiguous operands of one shape, 16-byte aligned):
//    the op is a template argument, so the formula compiles to straight-line
//    code, and each thread moves 16-byte vectors;
//  * generic (broadcast or misaligned operands): one element per thread
//    through the strided layout, the op chosen per call at run time.
#include <type_traits>
#include <utility>

#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/elementwise/elementwise_kernels.h"
#include "engine/ops/elementwise/elementwise_math.h"

namespace engine {

namespace {

using namespace elementwise_math;

// ---------------------------------------------------------------- dense

// body(i, std::integral_constant<int, W>{}) for the elements i .. i + W - 1
// of [0, n), in vectors of V (W = V) and then the n % V tail one by one
// (W = 1, by the first threads of the grid).
template <int V, typename Body>
__device__ void for_each_vector(int64_t n, Body body) {
  const int64_t vectors = n / V;
  for (int64_t v : grid_stride(vectors)) body(v * V, std::integral_constant<int, V>{});
  const int64_t tail = vectors * V + static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (tail < n) body(tail, std::integral_constant<int, 1>{});
}

template <typename T>
constexpr int kVector = 16 / sizeof(T);  // elements per 16-byte access

template <typename T, BinaryOp Op>
__global__ void binary_dense_kernel(const T* a, const T* b, T* out, int64_t n) {
  for_each_vector<kVector<T>>(n, [&](int64_t i, auto width) {
    constexpr int W = decltype(width)::value;
    const Pack<T, W> x = load_pack<T, W>(a + i), y = load_pack<T, W>(b + i);
    Pack<T, W> r;
#pragma unroll
    for (int k = 0; k < W; ++k) r.v[k] = apply_binary(Op, x.v[k], y.v[k]);
    store_pack(out + i, r);
  });
}

template <typename T, UnaryOp Op>
__global__ void unary_dense_kernel(const T* x, T* out, int64_t n) {
  for_each_vector<kVector<T>>(n, [&](int64_t i, auto width) {
    constexpr int W = decltype(width)::value;
    const Pack<T, W> in = load_pack<T, W>(x + i);
    Pack<T, W> r;
#pragma unroll
    for (int k = 0; k < W; ++k) r.v[k] = apply_unary(Op, in.v[k]);
    store_pack(out + i, r);
  });
}

template <typename T, UnaryOp Op>
__global__ void unary_backward_dense_kernel(const T* x, const T* y, const T* dy, T* dx, int64_t n) {
  for_each_vector<kVector<T>>(n, [&](int64_t i, auto width) {
    constexpr int W = decltype(width)::value;
    const Pack<T, W> in = load_pack<T, W>(x + i), f = load_pack<T, W>(y + i), g = load_pack<T, W>(dy + i);
    Pack<T, W> r;
#pragma unroll
    for (int k = 0; k < W; ++k) r.v[k] = g.v[k] * unary_derivative(Op, in.v[k], f.v[k]);
    store_pack(dx + i, r);
  });
}

template <typename T, ScalarOp Op>
__global__ void scalar_dense_kernel(const T* x, T scalar, T* out, int64_t n) {
  for_each_vector<kVector<T>>(n, [&](int64_t i, auto width) {
    constexpr int W = decltype(width)::value;
    const Pack<T, W> in = load_pack<T, W>(x + i);
    Pack<T, W> r;
#pragma unroll
    for (int k = 0; k < W; ++k) r.v[k] = apply_scalar(Op, in.v[k], scalar);
    store_pack(out + i, r);
  });
}

// body(std::integral_constant<Enum, op>{}): the run-time op as a template
// argument, for enums whose values are 0 .. Count - 1.
template <typename Enum, typename Body, int... I>
void with_op(Enum op, Body&& body, std::integer_sequence<int, I...>) {
  ((static_cast<int>(op) == I ? body(std::integral_constant<Enum, static_cast<Enum>(I)>{}) : void()), ...);
}
template <typename Enum, int Count, typename Body>
void with_op(Enum op, Body&& body) {
  with_op(op, body, std::make_integer_sequence<int, Count>{});
}

// Whether every operand is 16-byte aligned (they are contiguous and of
// out's shape when asked).
bool dense_aligned(std::initializer_list<const Tensor*> operands) {
  for (const Tensor* t : operands) {
    if (!aligned_for(t->raw_data(), 16)) return false;
  }
  return true;
}

bool dense_operand(const Tensor& t, const Tensor& out) { return t.shape() == out.shape() && t.is_contiguous(); }

// Launches a dense kernel over n elements, vectors of kVector<T>.
template <typename T, typename... Params, typename... Args>
void launch_dense(int64_t n, void (*kernel)(Params...), Args... args) {
  launch_1d((n + kVector<T> - 1) / kVector<T>, kernel, args...);
}

// ---------------------------------------------------------------- generic

template <typename T>
__global__ void binary_kernel_impl(BinaryOp op, StridedLayout<2> layout, const T* a, const T* b, T* out, int64_t n) {
  for (int64_t i : grid_stride(n)) {
    const Offsets<2> at = layout.offsets(i);
    out[i] = apply_binary(op, a[at.at[0]], b[at.at[1]]);
  }
}

template <typename T>
__global__ void unary_kernel_impl(UnaryOp op, const T* x, T* out, int64_t n) {
  for (int64_t i : grid_stride(n)) out[i] = apply_unary(op, x[i]);
}

template <typename T>
__global__ void unary_backward_kernel_impl(UnaryOp op, const T* x, const T* y, const T* dy, T* dx, int64_t n) {
  for (int64_t i : grid_stride(n)) dx[i] = dy[i] * unary_derivative(op, x[i], y[i]);
}

template <typename T>
__global__ void scalar_kernel_impl(ScalarOp op, const T* x, T scalar, T* out, int64_t n) {
  for (int64_t i : grid_stride(n)) out[i] = apply_scalar(op, x[i], scalar);
}

void binary_cuda(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  DeviceGuard guard(out);
  const int64_t n = out.numel();
  dispatch_float(out.dtype(), "binary", [&](auto tag) {
    using T = decltype(tag);
    if (dense_operand(a, out) && dense_operand(b, out) && dense_aligned({&a, &b, &out})) {
      with_op<BinaryOp, kBinaryOps>(op, [&](auto c) {
        launch_dense<T>(n, binary_dense_kernel<T, c()>, data_of<T>(a), data_of<T>(b), mutable_data_of<T>(out), n);
      });
      return;
    }
    const StridedLayout<2> layout = make_layout<2>(out.shape(), {&a.strides(), &b.strides()});
    launch_1d(n, binary_kernel_impl<T>, op, layout, data_of<T>(a), data_of<T>(b), mutable_data_of<T>(out), n);
  });
}

void unary_cuda(UnaryOp op, const Tensor& x, const Tensor& out) {
  DeviceGuard guard(out);
  const int64_t n = x.numel();
  dispatch_float(x.dtype(), "unary", [&](auto tag) {
    using T = decltype(tag);
    if (dense_aligned({&x, &out})) {
      with_op<UnaryOp, kUnaryOps>(op, [&](auto c) {
        launch_dense<T>(n, unary_dense_kernel<T, c()>, data_of<T>(x), mutable_data_of<T>(out), n);
      });
      return;
    }
    launch_1d(n, unary_kernel_impl<T>, op, data_of<T>(x), mutable_data_of<T>(out), n);
  });
}

void unary_backward_cuda(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& dx) {
  DeviceGuard guard(dx);
  const int64_t n = x.numel();
  dispatch_float(x.dtype(), "unary_backward", [&](auto tag) {
    using T = decltype(tag);
    if (dense_aligned({&x, &y, &dy, &dx})) {
      with_op<UnaryOp, kUnaryOps>(op, [&](auto c) {
        launch_dense<T>(n, unary_backward_dense_kernel<T, c()>, data_of<T>(x), data_of<T>(y), data_of<T>(dy),
                        mutable_data_of<T>(dx), n);
      });
      return;
    }
    launch_1d(n, unary_backward_kernel_impl<T>, op, data_of<T>(x), data_of<T>(y), data_of<T>(dy),
              mutable_data_of<T>(dx), n);
  });
}

void scalar_cuda(ScalarOp op, const Tensor& x, double scalar, const Tensor& out) {
  DeviceGuard guard(out);
  const int64_t n = x.numel();
  dispatch_float(x.dtype(), "scalar", [&](auto tag) {
    using T = decltype(tag);
    if (dense_aligned({&x, &out})) {
      with_op<ScalarOp, kScalarOps>(op, [&](auto c) {
        launch_dense<T>(n, scalar_dense_kernel<T, c()>, data_of<T>(x), static_cast<T>(scalar),
                        mutable_data_of<T>(out), n);
      });
      return;
    }
    launch_1d(n, scalar_kernel_impl<T>, op, data_of<T>(x), static_cast<T>(scalar), mutable_data_of<T>(out), n);
  });
}

const bool registered = [] {
  binary_kernel.cuda = &binary_cuda;
  unary_kernel.cuda = &unary_cuda;
  unary_backward_kernel.cuda = &unary_backward_cuda;
  scalar_kernel.cuda = &scalar_cuda;
  return true;
}();

}  // namespace

}  // namespace engine
