// A dataset restricted to some of its items, e.g. N spread evenly over the
// whole (a quick evaluation or a small training set that, over a class-sorted
// ImageFolder, still holds every class).
#pragma once
#include <vector>

#include "data/dataset.h"

namespace data {

class Subset : public Dataset {
 public:
  // The inner dataset must outlive the subset; indices must be < inner.size().
  Subset(const Dataset& inner, std::vector<size_t> indices);
  size_t size() const override { return indices_.size(); }
  int num_classes() const override { return inner_.num_classes(); }
  Sample get(size_t i) const override { return inner_.get(indices_.at(i)); }
  int64_t label(size_t i) const override { return inner_.label(indices_.at(i)); }
  std::string name(size_t i) const override { return inner_.name(indices_.at(i)); }

 private:
  const Dataset& inner_;
  std::vector<size_t> indices_;
};

// min(limit, size) items at positions floor(k * size / limit), k = 0 .. limit - 1.
std::vector<size_t> evenly_spaced_items(size_t size, size_t limit);

}  // namespace data
