// Row-wise kernels (softmax, layer norm, losses) work on a [rows, cols]
// matrix whose rows are the last dimension of a contiguous tensor.
#pragma once
#include "engine/ops/strided.h"
#include "engine/tensor.h"

namespace engine {

// t (contiguous, at least one dimension) viewed as [rows, last dim].
inline Tensor last_dim_rows(const Tensor& t) {
  const int64_t cols = t.shape().back();
  const int64_t rows = cols == 0 ? 0 : t.numel() / cols;
  return make_view(t, {rows, cols}, {cols, 1}, t.offset());
}

}  // namespace engine
