#include "data/cifar_binary.h"

#include <algorithm>
#include <filesystem>

#include "data/files.h"
#include "data/image_folder.h"
#include "engine/error.h"

namespace data {
namespace {
constexpr size_t kPlane = CifarBinary::kSide * CifarBinary::kSide;
constexpr size_t kPixelBytes = 3 * kPlane;
}  // namespace

std::vector<std::string> CifarBinary::batch_files(Split split) {
  if (split == Split::Test) return {"test_batch.bin"};
  return {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"};
}

CifarBinary::CifarBinary(const std::string& dir, Split split) : root_(dir) {
  namespace fs = std::filesystem;
  const std::vector<std::string> files = batch_files(split);
  // Every file is checked before any is read: a missing one is reported at once.
  for (const std::string& file : files) {
    const std::string path = (fs::path(dir) / file).string();
    engine::check(fs::is_regular_file(path),
                  "CIFAR-10 batch '{}' is missing (the official cifar-10-batches-bin/ folder holds "
                  "data_batch_1.bin .. data_batch_5.bin, test_batch.bin and {})",
                  path, kMetaFile);
  }
  const std::string meta = (fs::path(dir) / kMetaFile).string();
  if (fs::exists(meta)) {
    classes_ = read_class_list(meta);
    engine::check(classes_.size() == 10, "CIFAR-10 class names '{}': {} names, expected 10", meta, classes_.size());
  } else {
    classes_ = official_classes();
  }
  for (const std::string& file : files) read_batch((fs::path(dir) / file).string());
}

void CifarBinary::read_batch(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file(path);
  engine::check(!bytes.empty(), "CIFAR-10 batch '{}' is empty", path);
  engine::check(bytes.size() % kRecordBytes == 0,
                "CIFAR-10 batch '{}': {} bytes is not a whole number of {}-byte records (truncated, or not the "
                "binary version from cifar-10-binary.tar.gz?)",
                path, bytes.size(), kRecordBytes);
  file_names_.push_back(std::filesystem::path(path).filename().string());
  file_start_.push_back(labels_.size());
  labels_.reserve(labels_.size() + bytes.size() / kRecordBytes);
  planes_.reserve(planes_.size() + bytes.size() / kRecordBytes * kPixelBytes);
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

const std::vector<std::string>& CifarBinary::official_classes() {
  static const std::vector<std::string> names = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                 "dog",      "frog",       "horse", "ship", "truck"};
  return names;
}

}  // namespace data
