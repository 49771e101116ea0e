// CUDA kernels of the patch convolution. A patch row (P pixels of one
// channel's image row) is contiguous both in the image and in cols, so each
// thread moves one such segment: the index arithmetic is paid once per P
// elements, and the segment moves as 16-byte vectors when P, the image
// width and both base pointers allow.
#include <type_traits>

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

  int64_t segments(int64_t batch) const { return batch * grid_rows * grid_cols * channels * patch; }

  // Where segment s = (row, c, ph) starts in the image and in cols (the
  // indexing of conv_kernels.h: cols[(b * grid_rows + i) * grid_cols + j,
  // (c * P + ph) * P + pw]).
  __device__ void segment_starts(int64_t s, int64_t& image_at, int64_t& cols_at) const {
    const int64_t row = s / (channels * patch), c = s / patch % channels, ph = s % patch;
    const int64_t b = row / (grid_rows * grid_cols), i = row / grid_cols % grid_rows, j = row % grid_cols;
    image_at = ((b * channels + c) * height + i * patch + ph) * width + j * patch;
    cols_at = s * patch;
  }
};

// body(image_at, cols_at) for every segment of the grid-stride loop.
template <typename Body>
__device__ void for_each_segment(const PatchGeometry& geometry, int64_t segments, Body body) {
  for (int64_t s : grid_stride(segments)) {
    int64_t image_at, cols_at;
    geometry.segment_starts(s, image_at, cols_at);
    body(image_at, cols_at);
  }
}

// V elements per access (V divides P).
template <typename T, int V>
__global__ void im2col_kernel_impl(PatchGeometry geometry, const T* x, T* cols, int64_t segments) {
  for_each_segment(geometry, segments, [&](int64_t image_at, int64_t cols_at) {
    for (int64_t pw = 0; pw < geometry.patch; pw += V) {
      store_pack(cols + cols_at + pw, load_pack<T, V>(x + image_at + pw));
    }
  });
}

// Patches do not overlap (stride = kernel size), so entries of cols map to
// distinct pixels: the accumulation needs no atomics.
template <typename T, int V>
__global__ void col2im_kernel_impl(PatchGeometry geometry, const T* cols, T* dx, int64_t segments) {
  for_each_segment(geometry, segments, [&](int64_t image_at, int64_t cols_at) {
    for (int64_t pw = 0; pw < geometry.patch; pw += V) {
      Pack<T, V> sum = load_pack<T, V>(dx + image_at + pw);
      const Pack<T, V> add = load_pack<T, V>(cols + cols_at + pw);
#pragma unroll
      for (int k = 0; k < V; ++k) sum.v[k] += add.v[k];
      store_pack(dx + image_at + pw, sum);
    }
  });
}

// body(std::integral_constant<int, V>{}) with V = 16 bytes of T when every
// segment starts aligned for it, else V = 1.
template <typename T, typename Body>
void with_vector_width(const PatchGeometry& g, const void* a, const void* b, Body body) {
  constexpr int kWide = 16 / sizeof(T);
  const bool wide = g.patch % kWide == 0 && g.width % kWide == 0 && aligned_for(a, 16) && aligned_for(b, 16);
  if (wide) return body(std::integral_constant<int, kWide>{});
  body(std::integral_constant<int, 1>{});
}

void im2col_cuda(const Tensor& x, int64_t patch, const Tensor& cols) {
  DeviceGuard guard(cols);
  const PatchGeometry geometry = PatchGeometry::of(x.shape(), patch);
  const int64_t segments = geometry.segments(x.shape()[0]);
  dispatch_float(x.dtype(), "im2col", [&](auto tag) {
    using T = decltype(tag);
    with_vector_width<T>(geometry, x.raw_data(), cols.raw_data(), [&](auto v) {
      launch_1d(segments, im2col_kernel_impl<T, v()>, geometry, data_of<T>(x), mutable_data_of<T>(cols), segments);
    });
  });
}

void col2im_cuda(const Tensor& cols, int64_t patch, const Tensor& dx) {
  DeviceGuard guard(dx);
  const PatchGeometry geometry = PatchGeometry::of(dx.shape(), patch);
  const int64_t segments = geometry.segments(dx.shape()[0]);
  dispatch_float(dx.dtype(), "col2im", [&](auto tag) {
    using T = decltype(tag);
    with_vector_width<T>(geometry, dx.raw_data(), cols.raw_data(), [&](auto v) {
      launch_1d(segments, col2im_kernel_impl<T, v()>, geometry, data_of<T>(cols), mutable_data_of<T>(dx), segments);
    });
  });
}

const bool registered = [] {
  im2col_kernel.cuda = &im2col_cuda;
  col2im_kernel.cuda = &col2im_cuda;
  return true;
}();

}  // namespace

}  // namespace engine
