// CPU reference kernels of the copy family.
#include <algorithm>

#include "engine/ops/copy/copy_kernels.h"
#include "engine/ops/strided.h"

namespace engine {

namespace {

void copy_cpu(const Tensor& src, const Tensor& dst) {
  dispatch_any(src.dtype(), [&](auto src_tag) {
    using From = decltype(src_tag);
    dispatch_any(dst.dtype(), [&](auto dst_tag) {
      using To = decltype(dst_tag);
      const From* in = static_cast<const From*>(src.raw_data());
      To* out = static_cast<To*>(dst.raw_data());
      for_each_row<2>(src.shape(), {&src.strides(), &dst.strides()},
                      [&](const auto& offsets, const auto& inner, int64_t length) {
                        const From* a = in + offsets[0];
                        To* b = out + offsets[1];
                        for (int64_t i = 0; i < length; ++i) b[i * inner[1]] = convert_element<To>(a[i * inner[0]]);
                      },
                      /*parallel=*/true);
    });
  });
}

void fill_cpu(const Tensor& dst, double value) {
  dispatch_any(dst.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* out = static_cast<T*>(dst.raw_data());
    std::fill(out, out + dst.numel(), convert_element<T>(value));
  });
}

}  // namespace

KernelSlot<CopyKernel> copy_kernel{"copy", &copy_cpu, nullptr};
KernelSlot<FillKernel> fill_kernel{"fill", &fill_cpu, nullptr};

}  // namespace engine
