// CIFAR-10 in its official binary form (cifar-10-binary.tar.gz from
// https://www.cs.toronto.edu/~kriz/cifar.html, extracted to cifar-10-batches-bin/).
// The tools reach it through open_dataset (open_dataset.h).
#pragma once
#include <string>
#include <vector>

#include "data/dataset.h"

namespace data {

class CifarBinary : public LabeledDataset {
 public:
  static constexpr int kSide = 32;
  // 1 label byte, then the 32x32 R plane, G plane and B plane (each row-major).
  static constexpr size_t kRecordBytes = 1 + 3 * kSide * kSide;
  static constexpr const char* kMetaFile = "batches.meta.txt";

  // Reads dir/data_batch_1.bin .. data_batch_5.bin (Train) or dir/test_batch.bin (Test)
  // into memory. Class names come from dir/batches.meta.txt (one a line), else are
  // official_classes(). A missing or empty batch, a size that is not a whole number of
  // records (truncated file, or not the binary version), a label above 9, or a meta file
  // that does not hold 10 distinct names is an error naming the file.
  CifarBinary(const std::string& dir, Split split);

  size_t size() const override { return labels_.size(); }
  int num_classes() const override { return 10; }
  Sample get(size_t i) const override;  // 32x32 RGB, the record's bytes as they are
  int64_t label(size_t i) const override;
  std::string name(size_t i) const override;  // "data_batch_2.bin#17"
  const std::vector<std::string>& classes() const override { return classes_; }
  const std::string& root() const override { return root_; }  // the folder holding the batches

  // The batch files of a split, in reading order.
  static std::vector<std::string> batch_files(Split split);

  // airplane automobile bird cat deer dog frog horse ship truck: the official label order
  // (batches.meta.txt), which is also the sorted order of an ImageFolder of CIFAR-10, so
  // both forms give every image the same label index.
  static const std::vector<std::string>& official_classes();

 private:
  void read_batch(const std::string& path);
  void check_index(size_t i) const;

  std::string root_;
  std::vector<std::string> classes_;
  std::vector<uint8_t> planes_;  // kSide * kSide * 3 bytes (planar RGB) per image
  std::vector<int64_t> labels_;
  std::vector<std::string> file_names_;
  std::vector<size_t> file_start_;  // first item index of each file
};

}  // namespace data
