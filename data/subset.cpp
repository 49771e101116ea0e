#include "data/subset.h"

#include <algorithm>

#include "engine/error.h"

namespace data {

Subset::Subset(const Dataset& inner, std::vector<size_t> indices) : inner_(inner), indices_(std::move(indices)) {
  for (size_t index : indices_) {
    engine::check(index < inner.size(), "Subset: index {} is outside the dataset's {} items", index, inner.size());
  }
}

std::vector<size_t> evenly_spaced_items(size_t size, size_t limit) {
  const size_t count = std::min(size, limit);
  std::vector<size_t> indices(count);
  for (size_t k = 0; k < count; ++k) indices[k] = k * size / count;
  return indices;
}

}  // namespace data
