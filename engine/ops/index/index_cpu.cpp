// CPU reference kernels of the index family.
#include "engine/ops/index/index_kernels.h"
#include "engine/ops/strided.h"

namespace engine {

namespace {

// Walks every position p of index and calls visit(x_offset, other_offset):
// the element offsets of x[p with p[dim] replaced by index[p]] and of p in a
// tensor of index's shape laid out with other_strides. Gather and scatter-add
// are this walk with the data moved in opposite directions.
template <typename Visit>
void for_each_indexed(const Tensor& x, int64_t dim, const Tensor& index, const Shape& other_strides,
                      Visit&& visit) {
  Shape x_strides = x.strides();
  const int64_t dim_stride = x_strides[dim];
  x_strides[dim] = 0;  // the position along dim comes from the index instead
  const int64_t* pi = static_cast<const int64_t*>(index.raw_data());
  for_each_row<3>(index.shape(), {&x_strides, &index.strides(), &other_strides},
                  [&](const auto& offsets, const auto& inner, int64_t length) {
                    for (int64_t i = 0; i < length; ++i) {
                      const int64_t chosen = pi[offsets[1] + i * inner[1]];
                      visit(offsets[0] + i * inner[0] + chosen * dim_stride, offsets[2] + i * inner[2]);
                    }
                  });
}

// Gather and select only move elements, so they serve every dtype (labels too).
void gather_cpu(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  dispatch_any(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = static_cast<const T*>(x.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    for_each_indexed(x, dim, index, contiguous_strides(out.shape()),
                     [&](int64_t from, int64_t to) { po[to] = px[from]; });
  });
}

void scatter_add_cpu(const Tensor& src, int64_t dim, const Tensor& index, const Tensor& dst) {
  dispatch_float(dst.dtype(), "scatter_add", [&](auto tag) {
    using T = decltype(tag);
    const T* ps = static_cast<const T*>(src.raw_data());
    T* pd = static_cast<T*>(dst.raw_data());
    for_each_indexed(dst, dim, index, src.strides(), [&](int64_t to, int64_t from) { pd[to] += ps[from]; });
  });
}

void select_cpu(const Tensor& condition, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_any(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const uint8_t* pc = static_cast<const uint8_t*>(condition.raw_data());
    const T* pa = static_cast<const T*>(a.raw_data());
    const T* pb = static_cast<const T*>(b.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    const Shape out_strides = contiguous_strides(out.shape());
    for_each_row<4>(out.shape(), {&condition.strides(), &a.strides(), &b.strides(), &out_strides},
                    [&](const auto& offsets, const auto& inner, int64_t length) {
                      for (int64_t i = 0; i < length; ++i) {
                        po[offsets[3] + i] = pc[offsets[0] + i * inner[0]] ? pa[offsets[1] + i * inner[1]]
                                                                           : pb[offsets[2] + i * inner[2]];
                      }
                    });
  });
}

}  // namespace

KernelSlot<GatherKernel> gather_kernel{"gather", &gather_cpu, nullptr};
KernelSlot<ScatterAddKernel> scatter_add_kernel{"scatter_add", &scatter_add_cpu, nullptr};
KernelSlot<SelectKernel> select_kernel{"select", &select_cpu, nullptr};

}  // namespace engine
