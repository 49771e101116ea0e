// CUDA kernels of the index family: one thread per position of the index (or
// of the output), offsets from the strided layouts. Gather and select only
// move elements, so they run on the bits of any dtype.
#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/index/index_kernels.h"

namespace engine {

namespace {

// t's strides with the one of `dim` zeroed: the position along dim comes from the index instead.
Shape strides_without(const Tensor& t, int64_t dim) {
  Shape strides = t.strides();
  strides[dim] = 0;
  return strides;
}

// Layout over index's shape: [0] x (dim zeroed), [1] index; out is contiguous.
template <typename Bits>
__global__ void gather_kernel_impl(StridedLayout<2> layout, const Bits* x, int64_t dim_stride, const int64_t* index,
                                   Bits* out, int64_t n) {
  for (int64_t i : grid_stride(n)) {
    const Offsets<2> at = layout.offsets(i);
    out[i] = x[at.at[0] + index[at.at[1]] * dim_stride];
  }
}

// Layout over index's shape: [0] dst (dim zeroed), [1] index, [2] src.
// Repeated indices hit the same element: atomicAdd (so float32 sums may
// round differently from run to run).
template <typename T>
__global__ void scatter_add_kernel_impl(StridedLayout<3> layout, const T* src, int64_t dim_stride,
                                        const int64_t* index, T* dst, int64_t n) {
  for (int64_t i : grid_stride(n)) {
    const Offsets<3> at = layout.offsets(i);
    atomicAdd(&dst[at.at[0] + index[at.at[1]] * dim_stride], src[at.at[2]]);
  }
}

// Layout over out's shape: [0] condition, [1] a, [2] b; out is contiguous.
template <typename Bits>
__global__ void select_kernel_impl(StridedLayout<3> layout, const uint8_t* condition, const Bits* a, const Bits* b,
                                   Bits* out, int64_t n) {
  for (int64_t i : grid_stride(n)) {
    const Offsets<3> at = layout.offsets(i);
    out[i] = condition[at.at[0]] ? a[at.at[1]] : b[at.at[2]];
  }
}

void gather_cuda(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  DeviceGuard guard(out);
  const Shape x_strides = strides_without(x, dim);
  const StridedLayout<2> layout = make_layout<2>(index.shape(), {&x_strides, &index.strides()});
  dispatch_bits(x.dtype(), [&](auto tag) {
    using Bits = decltype(tag);
    launch_1d(index.numel(), gather_kernel_impl<Bits>, layout, data_of<Bits>(x), x.strides()[dim],
              data_of<int64_t>(index), mutable_data_of<Bits>(out), index.numel());
  });
}

void scatter_add_cuda(const Tensor& src, int64_t dim, const Tensor& index, const Tensor& dst) {
  DeviceGuard guard(dst);
  const Shape dst_strides = strides_without(dst, dim);
  const StridedLayout<3> layout = make_layout<3>(index.shape(), {&dst_strides, &index.strides(), &src.strides()});
  dispatch_float(dst.dtype(), "scatter_add", [&](auto tag) {
    using T = decltype(tag);
    launch_1d(index.numel(), scatter_add_kernel_impl<T>, layout, data_of<T>(src), dst.strides()[dim],
              data_of<int64_t>(index), mutable_data_of<T>(dst), index.numel());
  });
}

void select_cuda(const Tensor& condition, const Tensor& a, const Tensor& b, const Tensor& out) {
  DeviceGuard guard(out);
  const StridedLayout<3> layout =
      make_layout<3>(out.shape(), {&condition.strides(), &a.strides(), &b.strides()});
  dispatch_bits(out.dtype(), [&](auto tag) {
    using Bits = decltype(tag);
    launch_1d(out.numel(), select_kernel_impl<Bits>, layout, data_of<uint8_t>(condition), data_of<Bits>(a),
              data_of<Bits>(b), mutable_data_of<Bits>(out), out.numel());
  });
}

const bool registered = [] {
  gather_kernel.cuda = &gather_cuda;
  scatter_add_kernel.cuda = &scatter_add_cuda;
  select_kernel.cuda = &select_cuda;
  return true;
}();

}  // namespace

}  // namespace engine
