// CPU reference kernels of the patch convolution.
#include <algorithm>

#include "engine/ops/conv/conv_kernels.h"

namespace engine {

namespace {

// Calls run(image_offset, col_offset) for every run of P pixels that im2col
// moves: x[b, c, i*P + ph, j*P : j*P + P] <-> one contiguous run of P entries
// of cols. cols is walked in memory order, so its writes stay sequential.
template <typename RunFn>
void for_each_patch_run(const Shape& image, int64_t patch, RunFn&& run) {
  const int64_t batch = image[0], channels = image[1], height = image[2], width = image[3];
  const int64_t rows = height / patch, columns = width / patch;
  int64_t col_offset = 0;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < columns; ++j) {
        for (int64_t c = 0; c < channels; ++c) {
          for (int64_t ph = 0; ph < patch; ++ph) {
            run(((b * channels + c) * height + i * patch + ph) * width + j * patch, col_offset);
            col_offset += patch;
          }
        }
      }
    }
  }
}

void im2col_cpu(const Tensor& x, int64_t patch, const Tensor& cols) {
  dispatch_float(x.dtype(), "im2col", [&](auto tag) {
    using T = decltype(tag);
    const T* px = static_cast<const T*>(x.raw_data());
    T* pc = static_cast<T*>(cols.raw_data());
    for_each_patch_run(x.shape(), patch, [&](int64_t image_offset, int64_t col_offset) {
      std::copy_n(px + image_offset, patch, pc + col_offset);
    });
  });
}

void col2im_cpu(const Tensor& cols, int64_t patch, const Tensor& dx) {
  dispatch_float(dx.dtype(), "col2im", [&](auto tag) {
    using T = decltype(tag);
    const T* pc = static_cast<const T*>(cols.raw_data());
    T* pd = static_cast<T*>(dx.raw_data());
    // Patches do not overlap (stride = kernel size), so each pixel receives
    // exactly one entry; accumulating keeps the kernel the true adjoint anyway.
    for_each_patch_run(dx.shape(), patch, [&](int64_t image_offset, int64_t col_offset) {
      for (int64_t k = 0; k < patch; ++k) pd[image_offset + k] += pc[col_offset + k];
    });
  });
}

}  // namespace

KernelSlot<Im2ColKernel> im2col_kernel{"im2col", &im2col_cpu, nullptr};
KernelSlot<Col2ImKernel> col2im_kernel{"col2im", &col2im_cpu, nullptr};

}  // namespace engine
