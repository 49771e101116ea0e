// Iteration over strided (possibly broadcast, possibly non-contiguous) layouts,
// one innermost row at a time so that the inner loop stays tight. Used by the
// copy, elementwise and index CPU kernels.
#pragma once
#include <omp.h>

#include <array>
#include <cstdint>
#include <vector>

namespace engine {

// Below this many elements a kernel runs on one thread: starting the team
// costs more than it saves.
constexpr int64_t kParallelElements = 1 << 14;

namespace detail {

// Rows [begin, end) of the iteration: sets offsets for row `begin` by
// unravelling it, then advances like an odometer.
template <size_t K, typename RowFn>
void rows_range(const std::vector<int64_t>& shape, const std::array<const std::vector<int64_t>*, K>& strides,
                int64_t begin, int64_t end, RowFn& row) {
  const int64_t dims = static_cast<int64_t>(shape.size());
  std::array<int64_t, K> offsets{};
  std::array<int64_t, K> inner{};
  for (size_t k = 0; k < K; ++k) inner[k] = (*strides[k])[dims - 1];
  std::vector<int64_t> index(dims, 0);
  for (int64_t d = dims - 2, rest = begin; d >= 0; --d) {
    index[d] = rest % shape[d];
    rest /= shape[d];
    for (size_t k = 0; k < K; ++k) offsets[k] += index[d] * (*strides[k])[d];
  }
  const int64_t length = shape[dims - 1];
  for (int64_t r = begin; r < end; ++r) {
    row(offsets, inner, length);
    for (int64_t d = dims - 2; d >= 0; --d) {
      if (++index[d] < shape[d]) {
        for (size_t k = 0; k < K; ++k) offsets[k] += (*strides[k])[d];
        break;
      }
      for (size_t k = 0; k < K; ++k) offsets[k] -= (*strides[k])[d] * (shape[d] - 1);
      index[d] = 0;
    }
  }
}

}  // namespace detail

// For K tensors sharing the iteration `shape` but with their own element
// strides, calls row(offsets, inner_strides, length) once per row of the last
// dimension, where offsets[k] is the element offset of that row's first
// element. Rows run in parallel on large shapes when `parallel` is set: only
// pass it when rows write disjoint outputs.
template <size_t K, typename RowFn>
void for_each_row(const std::vector<int64_t>& shape, const std::array<const std::vector<int64_t>*, K>& strides,
                  RowFn&& row, bool parallel = false) {
  if (shape.empty()) {
    std::array<int64_t, K> zero{};
    row(zero, zero, int64_t{1});
    return;
  }
  const int64_t length = shape.back();
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < shape.size(); ++d) rows *= shape[d];
  if (length == 0 || rows == 0) return;
  const int threads = parallel && rows > 1 && rows * length >= kParallelElements ? omp_get_max_threads() : 1;
  if (threads == 1) {
    detail::rows_range(shape, strides, 0, rows, row);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int64_t team = omp_get_num_threads(), me = omp_get_thread_num();
    detail::rows_range(shape, strides, rows * me / team, rows * (me + 1) / team, row);
  }
}

}  // namespace engine
