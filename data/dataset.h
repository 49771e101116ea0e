// The interface every image source implements, for the DataLoader to read from.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"

namespace data {

enum class Split { Train, Test };

struct Sample {
  Image image;
  int64_t label = 0;
};

class Dataset {
 public:
  virtual ~Dataset() = default;

  virtual size_t size() const = 0;
  virtual int num_classes() const = 0;

  // Item i, decoded. Loader threads call this concurrently, so it must be thread-safe
  // (all datasets here are read-only after construction). Errors name the item's file.
  virtual Sample get(size_t i) const = 0;

  // Label of item i without decoding it.
  virtual int64_t label(size_t i) const = 0;

  // A short, human-readable name of item i for messages: a path relative to the dataset
  // root, or "file#record".
  virtual std::string name(size_t i) const = 0;
};

// A dataset read from disk whose labels have names: what the tools open (open_dataset.h).
class LabeledDataset : public Dataset {
 public:
  // Label index -> class name.
  virtual const std::vector<std::string>& classes() const = 0;

  // The folder it was read from, for messages and result files.
  virtual const std::string& root() const = 0;
};

}  // namespace data
