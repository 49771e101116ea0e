// CUDA kernels of the elementwise family: the formulas of elementwise_math.h.
// Two versions of each:
//  * dense (the hot path: contiguous operands of one shape, 16-byte aligned):
//    the op is a template argument, so the formula compiles to straight-line
//    code, and each thread moves 16-byte vectors;
//  * generic (broadcast or misaligned operands): one element per thread
//    through the strided layout, the op chosen per call at run time.
// silu_gated_sum's kernels serve both cases, as vectors of 1 when misaligned.
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

// a + b over the W elements at i; a alone when b is absent.
template <typename T, int W>
__device__ Pack<T, W> load_sum(const T* a, const T* b, int64_t i) {
  Pack<T, W> sum = load_pack<T, W>(a + i);
  if (b) {
    const Pack<T, W> other = load_pack<T, W>(b + i);
#pragma unroll
    for (int k = 0; k < W; ++k) sum.v[k] += other.v[k];
  }
  return sum;
}

// V = kVector<T> for aligned operands, V = 1 (element by element) otherwise.
template <typename T, int V>
__global__ void silu_gated_sum_kernel_impl(const T* a, const T* b, const T* z, T* out, int64_t n) {
  for_each_vector<V>(n, [&](int64_t i, auto width) {
    constexpr int W = decltype(width)::value;
    const Pack<T, W> sum = load_sum<T, W>(a, b, i), gate = load_pack<T, W>(z + i);
    Pack<T, W> r;
#pragma unroll
    for (int k = 0; k < W; ++k) r.v[k] = silu_gate(sum.v[k], gate.v[k]);
    store_pack(out + i, r);
  });
}

template <typename T, int V>
__global__ void silu_gated_sum_backward_kernel_impl(const T* a, const T* b, const T* z, const T* g, T* dsum, T* dz,
                                                    int64_t n) {
  for_each_vector<V>(n, [&](int64_t i, auto width) {
    constexpr int W = decltype(width)::value;
    const Pack<T, W> sum = load_sum<T, W>(a, b, i), gate = load_pack<T, W>(z + i), dy = load_pack<T, W>(g + i);
    Pack<T, W> grad_sum, grad_z;
#pragma unroll
    for (int k = 0; k < W; ++k) silu_gate_backward(sum.v[k], gate.v[k], dy.v[k], grad_sum.v[k], grad_z.v[k]);
    if (dsum) store_pack(dsum + i, grad_sum);
    if (dz) store_pack(dz + i, grad_z);
  });
}

// Whether every defined operand is 16-byte aligned (they are contiguous and
// of out's shape when asked).
bool dense_aligned(std::initializer_list<const Tensor*> operands) {
  for (const Tensor* t : operands) {
    if (t->defined() && !aligned_for(t->raw_data(), 16)) return false;
  }
  return true;
}

bool dense_operand(const Tensor& t, const Tensor& out) { return t.shape() == out.shape() && t.is_contiguous(); }

// Launches a kernel over n elements in vectors of V.
template <int V, typename... Params, typename... Args>
void launch_vectors(int64_t n, void (*kernel)(Params...), Args... args) {
  launch_1d((n + V - 1) / V, kernel, args...);
}

// Launches a dense kernel over n elements, vectors of kVector<T>.
template <typename T, typename... Params, typename... Args>
void launch_dense(int64_t n, void (*kernel)(Params...), Args... args) {
  launch_vectors<kVector<T>>(n, kernel, args...);
}

// body(std::integral_constant<int, V>{}) with V = kVector<T> when `aligned`,
// else V = 1.
template <typename T, typename Body>
void with_vector_width(bool aligned, Body&& body) {
  if (aligned) {
    body(std::integral_constant<int, kVector<T>>{});
  } else {
    body(std::integral_constant<int, 1>{});
  }
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

void silu_gated_sum_cuda(const Tensor& a, const Tensor& b, const Tensor& z, const Tensor& out) {
  DeviceGuard guard(out);
  const int64_t n = out.numel();
  dispatch_float(out.dtype(), "silu_gated_sum", [&](auto tag) {
    using T = decltype(tag);
    with_vector_width<T>(dense_aligned({&a, &b, &z, &out}), [&](auto width) {
      launch_vectors<width()>(n, silu_gated_sum_kernel_impl<T, width()>, data_of<T>(a), data_or_null<const T>(b),
                              data_of<T>(z), mutable_data_of<T>(out), n);
    });
  });
}

void silu_gated_sum_backward_cuda(const Tensor& a, const Tensor& b, const Tensor& z, const Tensor& g,
                                  const Tensor& dsum, const Tensor& dz) {
  DeviceGuard guard(a);
  const int64_t n = a.numel();
  dispatch_float(a.dtype(), "silu_gated_sum_backward", [&](auto tag) {
    using T = decltype(tag);
    with_vector_width<T>(dense_aligned({&a, &b, &z, &g, &dsum, &dz}), [&](auto width) {
      launch_vectors<width()>(n, silu_gated_sum_backward_kernel_impl<T, width()>, data_of<T>(a),
                              data_or_null<const T>(b), data_of<T>(z), data_of<T>(g), data_or_null<T>(dsum),
                              data_or_null<T>(dz), n);
    });
  });
}

const bool registered = [] {
  binary_kernel.cuda = &binary_cuda;
  unary_kernel.cuda = &unary_cuda;
  unary_backward_kernel.cuda = &unary_backward_cuda;
  scalar_kernel.cuda = &scalar_cuda;
  silu_gated_sum_kernel.cuda = &silu_gated_sum_cuda;
  silu_gated_sum_backward_kernel.cuda = &silu_gated_sum_backward_cuda;
  return true;
}();

}  // namespace

}  // namespace engine
