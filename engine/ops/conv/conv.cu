// CUDA kernels of the patch convolution: one thread per entry of cols.
#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/conv/conv_kernels.h"

namespace engine {

namespace {

// Sizes of the image [B, C, H, W] and of its P x P patch grid.
struct PatchGeometry {
  int64_t channels, height, width, patch, grid_rows, grid_cols;

  static PatchGeometry of(const Shape& image, int64_t patch) {
    return {image[1], image[2], image[3], patch, image[2] / patch, image[3] / patch};
  }

  // The image element that entry `index` of cols holds (the indexing of
  // conv_kernels.h): cols[(b * grid_rows + i) * grid_cols + j, (c * P + ph) * P + pw].
  __device__ int64_t image_offset(int64_t index) const {
    const int64_t row_length = channels * patch * patch;
    const int64_t row = index / row_length, col = index % row_length;
    const int64_t b = row / (grid_rows * grid_cols), i = row / grid_cols % grid_rows, j = row % grid_cols;
    const int64_t c = col / (patch * patch), ph = col / patch % patch, pw = col % patch;
    return ((b * channels + c) * height + i * patch + ph) * width + j * patch + pw;
  }
};

template <typename T>
__global__ void im2col_kernel_impl(PatchGeometry geometry, const T* x, T* cols, int64_t n) {
  for (int64_t i : grid_stride(n)) cols[i] = x[geometry.image_offset(i)];
}

// Patches do not overlap (stride = kernel size), so entries of cols map to
// distinct pixels: the accumulation needs no atomics.
template <typename T>
__global__ void col2im_kernel_impl(PatchGeometry geometry, const T* cols, T* dx, int64_t n) {
  for (int64_t i : grid_stride(n)) dx[geometry.image_offset(i)] += cols[i];
}

void im2col_cuda(const Tensor& x, int64_t patch, const Tensor& cols) {
  DeviceGuard guard(cols);
  dispatch_float(x.dtype(), "im2col", [&](auto tag) {
    using T = decltype(tag);
    launch_1d(cols.numel(), im2col_kernel_impl<T>, PatchGeometry::of(x.shape(), patch), data_of<T>(x),
              mutable_data_of<T>(cols), cols.numel());
  });
}

void col2im_cuda(const Tensor& cols, int64_t patch, const Tensor& dx) {
  DeviceGuard guard(dx);
  dispatch_float(dx.dtype(), "col2im", [&](auto tag) {
    using T = decltype(tag);
    launch_1d(cols.numel(), col2im_kernel_impl<T>, PatchGeometry::of(dx.shape(), patch), data_of<T>(cols),
              mutable_data_of<T>(dx), cols.numel());
  });
}

const bool registered = [] {
  im2col_kernel.cuda = &im2col_cuda;
  col2im_kernel.cuda = &col2im_cuda;
  return true;
}();

}  // namespace

}  // namespace engine
