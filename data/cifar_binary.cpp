#include "data/cifar_binary.h"

#include <algorithm>
#include <filesystem>

#include "data/files.h"
#include "engine/error.h"

namespace data {
namespace {
constexpr size_t kPlane = CifarBinary::kSide * CifarBinary::kSide;
constexpr size_t kPixelBytes = 3 * kPlane;
}  // namespace

CifarBinary::CifarBinary(const std::string& dir, Split split) {
  const std::vector<std::string> files =
      split == Split::Test ? std::vector<std::string>{"test_batch.bin"}
                           : std::vector<std::string>{"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                                      "data_batch_4.bin", "data_batch_5.bin"};
  for (const std::string& file : files) read_batch((std::filesystem::path(dir) / file).string());
}

void CifarBinary::read_batch(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file(path);
  engine::check(!bytes.empty() && bytes.size() % kRecordBytes == 0,
                "CIFAR-10 batch '{}': {} bytes is not a whole number of {}-byte records "
                "(is this the binary version, cifar-10-binary.tar.gz?)",
                path, bytes.size(), kRecordBytes);
  file_names_.push_back(std::filesystem::path(path).filename().string());
  file_start_.push_back(labels_.size());
  for (size_t offset = 0; offset < bytes.size(); offset += kRecordBytes) {
    const uint8_t label = bytes[offset];
    engine::check(label < 10, "CIFAR-10 batch '{}': record {} has label {} (expected 0..9)", path,
                  offset / kRecordBytes, label);
    labels_.push_back(label);
    planes_.insert(planes_.end(), bytes.begin() + offset + 1, bytes.begin() + offset + kRecordBytes);
  }
}

void CifarBinary::check_index(size_t i) const {
  engine::check(i < labels_.size(), "CIFAR-10: index {} out of range (size {})", i, labels_.size());
}

Sample CifarBinary::get(size_t i) const {
  check_index(i);
  const uint8_t* planes = planes_.data() + i * kPixelBytes;
  Image image(kSide, kSide, 3);
  for (size_t p = 0; p < kPlane; ++p) {
    for (size_t c = 0; c < 3; ++c) image.pixels[p * 3 + c] = planes[c * kPlane + p];
  }
  return {std::move(image), labels_[i]};
}

int64_t CifarBinary::label(size_t i) const {
  check_index(i);
  return labels_[i];
}

std::string CifarBinary::name(size_t i) const {
  check_index(i);
  // The last file starting at or before i.
  const size_t file = std::upper_bound(file_start_.begin(), file_start_.end(), i) - file_start_.begin() - 1;
  return file_names_[file] + "#" + std::to_string(i - file_start_[file]);
}

const std::vector<std::string>& CifarBinary::classes() {
  static const std::vector<std::string> names = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                 "dog",      "frog",       "horse", "ship", "truck"};
  return names;
}

}  // namespace data
