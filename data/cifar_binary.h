// CIFAR-10 in its official binary form (cifar-10-binary.tar.gz from
// https://www.cs.toronto.edu/~kriz/cifar.html, extracted to cifar-10-batches-bin/).
#pragma once
#include <string>
#include <vector>

#include "data/dataset.h"

namespace data {

class CifarBinary : public Dataset {
 public:
  static constexpr int kSide = 32;
  // 1 label byte, then the 32x32 R plane, G plane and B plane.
  static constexpr size_t kRecordBytes = 1 + 3 * kSide * kSide;

  // Reads dir/data_batch_1.bin .. data_batch_5.bin (Train) or dir/test_batch.bin (Test)
  // into memory. A missing file, a size that is not a whole number of records, or a label
  // above 9 is an error naming the file.
  CifarBinary(const std::string& dir, Split split);

  size_t size() const override { return labels_.size(); }
  int num_classes() const override { return 10; }
  Sample get(size_t i) const override;  // 32x32 RGB
  int64_t label(size_t i) const override;
  std::string name(size_t i) const override;  // "data_batch_2.bin#17"

  // airplane automobile bird cat deer dog frog horse ship truck: the official label order,
  // which is also the sorted order of the JPEG ImageFolder version.
  static const std::vector<std::string>& classes();

 private:
  void read_batch(const std::string& path);
  void check_index(size_t i) const;

  std::vector<uint8_t> planes_;  // kSide * kSide * 3 bytes (planar RGB) per image
  std::vector<int64_t> labels_;
  std::vector<std::string> file_names_;
  std::vector<size_t> file_start_;  // first item index of each file
};

}  // namespace data
