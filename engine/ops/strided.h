// Iteration over strided (possibly broadcast, possibly non-contiguous) layouts,
// one innermost row at a time so that the inner loop stays tight. Used by the
// copy and elementwise CPU kernels.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

namespace engine {

// For K tensors sharing the iteration `shape` but with their own element
// strides, calls row(offsets, inner_strides, length) once per row of the last
// dimension, where offsets[k] is the element offset of that row's first element.
template <size_t K, typename RowFn>
void for_each_row(const std::vector<int64_t>& shape, const std::array<const std::vector<int64_t>*, K>& strides,
                  RowFn&& row) {
  const size_t dims = shape.size();
  std::array<int64_t, K> offsets{};
  std::array<int64_t, K> inner{};
  if (dims == 0) {
    row(offsets, inner, int64_t{1});
    return;
  }
  for (size_t k = 0; k < K; ++k) inner[k] = (*strides[k])[dims - 1];
  const int64_t length = shape[dims - 1];
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < dims; ++d) rows *= shape[d];
  if (length == 0 || rows == 0) return;
  std::vector<int64_t> index(dims, 0);
  for (int64_t r = 0; r < rows; ++r) {
    row(offsets, inner, length);
    // Advance the outer index like an odometer, updating offsets incrementally.
    for (int64_t d = static_cast<int64_t>(dims) - 2; d >= 0; --d) {
      if (++index[d] < shape[d]) {
        for (size_t k = 0; k < K; ++k) offsets[k] += (*strides[k])[d];
        break;
      }
      for (size_t k = 0; k < K; ++k) offsets[k] -= (*strides[k])[d] * (shape[d] - 1);
      index[d] = 0;
    }
  }
}

}  // namespace engine
