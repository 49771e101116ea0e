// CUDA kernels of the copy family: strided copy with dtype conversion, and fill.
#include <optional>
#include <type_traits>

#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/copy/copy_kernels.h"

namespace engine {

namespace {

template <typename T>
constexpr bool is_16bit_float = std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>;

// convert_element (engine/dtype.h) on the device: 16-bit floats go through
// float, rounding to nearest even (NaN payloads may differ from the CPU's).
template <typename To, typename From>
__device__ To convert_on_device(From value) {
  if constexpr (is_16bit_float<From>) {
    return convert_on_device<To>(static_cast<float>(value));
  } else if constexpr (is_16bit_float<To>) {
    return To(static_cast<float>(value));
  } else {
    return static_cast<To>(value);
  }
}

template <typename From, typename To>
__global__ void copy_kernel_impl(StridedLayout<2> layout, const From* src, To* dst, int64_t n) {
  for (int64_t i : grid_stride(n)) {
    const Offsets<2> at = layout.offsets(i);
    dst[at.at[1]] = convert_on_device<To>(src[at.at[0]]);
  }
}

// Both tensors dense and in the same order (most conversions, e.g. the float32
// -> bfloat16 GEMM operands): kVector elements per thread, as one vector load
// and one vector store.
constexpr int kVector = 4;

// Copies the pack at src to dst, converting each element.
template <typename From, typename To>
__device__ __forceinline__ void copy_pack(const From* src, To* dst) {
  const Pack<From, kVector> in = load_pack<From, kVector>(src);
  Pack<To, kVector> out;
#pragma unroll
  for (int j = 0; j < kVector; ++j) out.v[j] = convert_on_device<To>(in.v[j]);
  store_pack(dst, out);
}

template <typename From, typename To>
__global__ void copy_dense_kernel(const From* src, To* dst, int64_t n) {
  for (int64_t i : grid_stride(n / kVector)) copy_pack(src + i * kVector, dst + i * kVector);
  for (int64_t i : grid_stride(n % kVector)) {  // the tail
    const int64_t at = n / kVector * kVector + i;
    dst[at] = convert_on_device<To>(src[at]);
  }
}

bool dense_in_same_order(const StridedLayout<2>& layout) {
  return layout.dims == 0 || (layout.dims == 1 && layout.strides[0][0] == 1 && layout.strides[1][0] == 1);
}

// Strided, but with the innermost dimension contiguous in both tensors (a
// slice of a projection's columns, a window of a gradient): the same walk in
// packs of kVector elements, with sizes and strides counted in packs.
template <typename From, typename To>
__global__ void copy_packs_kernel(StridedLayout<2> packs, const From* src, To* dst, int64_t n) {
  for (int64_t i : grid_stride(n)) {
    const Offsets<2> at = packs.offsets(i);
    copy_pack(src + at.at[0] * kVector, dst + at.at[1] * kVector);
  }
}

// `layout` counted in packs of kVector elements, when its innermost dimension
// is contiguous in both tensors and every size, stride and address allows it.
std::optional<StridedLayout<2>> in_packs(StridedLayout<2> layout, const void* src, size_t src_element_size,
                                         const void* dst, size_t dst_element_size) {
  const int inner = layout.dims - 1;
  if (inner < 1 || layout.sizes[inner] % kVector != 0) return std::nullopt;
  if (!aligned_for(src, src_element_size * kVector) || !aligned_for(dst, dst_element_size * kVector)) {
    return std::nullopt;
  }
  for (int k = 0; k < 2; ++k) {
    if (layout.strides[k][inner] != 1) return std::nullopt;
    for (int d = 0; d < inner; ++d) {
      if (layout.strides[k][d] % kVector != 0) return std::nullopt;
      layout.strides[k][d] /= kVector;
    }
  }
  layout.sizes[inner] /= kVector;
  set_dividers(layout);
  return layout;
}

void copy_cuda(const Tensor& src, const Tensor& dst) {
  DeviceGuard guard(dst);
  const StridedLayout<2> layout = make_layout<2>(src.shape(), {&src.strides(), &dst.strides()});
  dispatch_any(src.dtype(), [&](auto src_tag) {
    using From = device_t<decltype(src_tag)>;
    dispatch_any(dst.dtype(), [&](auto dst_tag) {
      using To = device_t<decltype(dst_tag)>;
      const From* from = data_of<From>(src);
      To* to = mutable_data_of<To>(dst);
      const int64_t n = src.numel();
      if (dense_in_same_order(layout) && aligned_for(from, sizeof(From) * kVector) &&
          aligned_for(to, sizeof(To) * kVector)) {
        launch_1d((n + kVector - 1) / kVector, copy_dense_kernel<From, To>, from, to, n);
      } else if (const auto packs = in_packs(layout, from, sizeof(From), to, sizeof(To))) {
        launch_1d(n / kVector, copy_packs_kernel<From, To>, *packs, from, to, n / kVector);
      } else {
        launch_1d(n, copy_kernel_impl<From, To>, layout, from, to, n);
      }
    });
  });
}

template <typename Bits>
__global__ void fill_kernel_impl(Bits* out, Bits value, int64_t n) {
  for (int64_t i : grid_stride(n)) out[i] = value;
}

void fill_cuda(const Tensor& dst, double value) {
  DeviceGuard guard(dst);
  // The element is converted on the host, exactly as the CPU kernel does, and
  // its bits are written on the device.
  uint64_t bits = 0;
  dispatch_any(dst.dtype(), [&](auto tag) {
    const auto element = convert_element<decltype(tag)>(value);
    std::memcpy(&bits, &element, sizeof(element));
  });
  dispatch_bits(dst.dtype(), [&](auto bits_tag) {
    using Bits = decltype(bits_tag);
    launch_1d(dst.numel(), fill_kernel_impl<Bits>, mutable_data_of<Bits>(dst), static_cast<Bits>(bits), dst.numel());
  });
}

const bool registered = [] {
  copy_kernel.cuda = &copy_cuda;
  fill_kernel.cuda = &fill_cuda;
  return true;
}();

}  // namespace

}  // namespace engine
