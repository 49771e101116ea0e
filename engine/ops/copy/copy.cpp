#include "engine/ops/copy/copy.h"

#include "engine/ops/copy/copy_kernels.h"

namespace engine {

void copy_into(const Tensor& dst, const Tensor& src) {
  check_same_shape(dst, src, "copy_into");
  check(dst.device() == src.device(), "copy_into: tensors on {} and {}", dst.device(), src.device());
  copy_kernel.get(dst.device())(src, dst);
}

void fill_(const Tensor& dst, double value) {
  check(dst.is_contiguous(), "fill_: destination must be contiguous");
  fill_kernel.get(dst.device())(dst, value);
}

}  // namespace engine
