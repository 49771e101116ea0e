// IDX files (MNIST, Fashion-MNIST): unsigned-byte images [N, H, W] and labels [N], plain
// or gzip-compressed.
#pragma once
#include <string>
#include <vector>

#include "data/dataset.h"

namespace data {

class IdxDataset : public Dataset {
 public:
  // Bad magic numbers, a size that disagrees with the header, different image and label
  // counts, or (with every_class_present, as for a train set) a class with no example
  // between the smallest and the largest label (a corrupt label) are errors naming the
  // file. A test set may be a subset; its labels are checked against the train set's
  // classes (check_test_matches_train). num_classes() is the largest label + 1.
  IdxDataset(const std::string& images_path, const std::string& labels_path, bool every_class_present = true);

  // dir/{train,t10k}-images-idx3-ubyte and -labels-idx1-ubyte, with or without .gz, as
  // MNIST and Fashion-MNIST ship them (Debian: /usr/share/datasets/fashion-mnist).
  static IdxDataset from_dir(const std::string& dir, Split split);

  size_t size() const override { return labels_.size(); }
  int num_classes() const override { return num_classes_; }
  Sample get(size_t i) const override;  // 1-channel (grey) image
  int64_t label(size_t i) const override;
  std::string name(size_t i) const override;  // "<images file>#<i>"

  int height() const { return height_; }
  int width() const { return width_; }

 private:
  void check_index(size_t i) const;

  std::string images_name_;
  int height_ = 0;
  int width_ = 0;
  int num_classes_ = 0;
  std::vector<uint8_t> pixels_;
  std::vector<uint8_t> labels_;
};

}  // namespace data
