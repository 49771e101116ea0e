// What the CUDA kernels of the sequence ops share (scan.cu, selective_scan.cu
// and engine/ops/conv/depthwise_conv1d.cu): the tile of time steps whose
// loads a thread issues together, launch sizes, scratch memory and the pack
// width of vector accesses.
//
// Every one of them streams over [B, L, C] tensors whose inner dimension
// (channels) is contiguous, so consecutive threads take consecutive channels
// (a warp's access to one time step is one contiguous run) and the sequential
// dependency stays inside a thread.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "engine/cuda/cuda_utils.cuh"

namespace engine {

namespace sequence {

constexpr int kWarpSize = 32;
constexpr int kTile = 8;  // time steps whose loads a thread issues together

inline unsigned blocks_for(int64_t items, int64_t threads) {
  const int64_t blocks = (items + threads - 1) / threads;
  check(blocks >= 1 && blocks <= INT32_MAX, "scan (cuda): {} items is beyond one launch", items);
  return static_cast<unsigned>(blocks);
}

// Scratch memory on the tensors' device, freed with the returned Tensor (the
// caching allocator only reuses it for work queued after these kernels).
inline Tensor scratch(int64_t elements, const Tensor& like) {
  return Tensor::empty({elements}, like.dtype(), like.device());
}

// The widest pack (4, 2 or 1 elements) that divides the channels and keeps
// every (defined) tensor's rows aligned for it.
template <typename T>
int pack_width(int64_t channels, std::initializer_list<const Tensor*> tensors) {
  for (int width : {4, 2}) {
    bool aligned = channels % width == 0;
    for (const Tensor* t : tensors) {
      aligned = aligned && (!t->defined() || aligned_for(t->raw_data(), sizeof(T) * width));
    }
    if (aligned) return width;
  }
  return 1;
}

// Calls body(std::integral_constant<int, V>{}) for V = width (4, 2 or 1).
// float64 (gradient checks, not speed) always runs unpacked, which halves
// the instantiations to compile.
template <typename T, typename Body>
void with_pack_width(int width, const Body& body) {
  if constexpr (std::is_same_v<T, float>) {
    if (width == 4) return body(std::integral_constant<int, 4>{});
    if (width == 2) return body(std::integral_constant<int, 2>{});
  }
  body(std::integral_constant<int, 1>{});
}

}  // namespace sequence

}  // namespace engine
