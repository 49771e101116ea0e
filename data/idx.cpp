#include "data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/os_error.h"

namespace data {
namespace {

// Reads a gzip file, or a plain one (zlib passes uncompressed data through).
std::vector<uint8_t> read_maybe_gzipped(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) engine::fail_os_error(errno, "cannot open", path);
  std::vector<uint8_t> bytes;
  uint8_t chunk[1 << 16];
  int got;
  while ((got = gzread(file, chunk, sizeof chunk)) > 0) bytes.insert(bytes.end(), chunk, chunk + got);
  int status = Z_OK;
  const std::string message = gzerror(file, &status);
  gzclose(file);
  engine::check(got == 0 && (status == Z_OK || status == Z_STREAM_END), "error reading '{}': {}", path,
                message);
  return bytes;
}

uint32_t big_endian_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

// An IDX file's header is 0, 0, type (0x08 = unsigned byte), number of dimensions, then
// each dimension as a big-endian uint32; the data follows.
struct IdxArray {
  std::vector<size_t> dims;
  std::vector<uint8_t> values;
};

IdxArray read_idx(const std::string& path, size_t expected_dims) {
  std::vector<uint8_t> bytes = read_maybe_gzipped(path);
  const size_t header = 4 + 4 * expected_dims;
  engine::check(bytes.size() >= header && bytes[0] == 0 && bytes[1] == 0 && bytes[2] == 0x08 &&
                    bytes[3] == expected_dims,
                "'{}' is not an IDX file of unsigned bytes with {} dimensions (bad magic number)", path,
                expected_dims);
  IdxArray array;
  size_t count = 1;
  bool overflow = false;  // a corrupt header's product can wrap to the file's size, even to 0
  for (size_t d = 0; d < expected_dims; ++d) {
    array.dims.push_back(big_endian_u32(&bytes[4 + 4 * d]));
    overflow |= __builtin_mul_overflow(count, array.dims.back(), &count);
  }
  engine::check(!overflow && bytes.size() - header == count,
                "IDX file '{}': header promises {} bytes of data, found {}", path,
                overflow ? fmt::format("{}", fmt::join(array.dims, " x ")) : std::to_string(count),
                bytes.size() - header);
  array.values.assign(bytes.begin() + header, bytes.end());
  return array;
}

// "3, 5-199": the classes in `missing` (ascending), runs written as ranges.
std::string describe_classes(const std::vector<int>& missing) {
  std::string text;
  for (size_t first = 0; first < missing.size();) {
    size_t last = first;
    while (last + 1 < missing.size() && missing[last + 1] == missing[last] + 1) ++last;
    if (!text.empty()) text += ", ";
    text += std::to_string(missing[first]);
    if (last > first) text += "-" + std::to_string(missing[last]);
    first = last + 1;
  }
  return text;
}

// The class count is the largest label + 1, so one corrupt label byte (200 in
// Fashion-MNIST) would silently give the model 201 outputs. MNIST-style label
// files hold examples of every class from their smallest label to their
// largest (EMNIST letters start at 1, hence not from 0), so a class between
// them with no example means a corrupt label: an error naming the file.
void check_no_missing_classes(const std::vector<uint8_t>& labels, const std::string& path) {
  const auto [smallest, largest] = std::minmax_element(labels.begin(), labels.end());
  std::vector<bool> present(*largest + 1);
  for (uint8_t label : labels) present[label] = true;
  std::vector<int> missing;
  for (int c = *smallest; c <= *largest; ++c) {
    if (!present[c]) missing.push_back(c);
  }
  engine::check(missing.empty(),
                "IDX labels '{}': the labels run from {} to {} but classes {} have no example (corrupt labels?)",
                path, *smallest, *largest, describe_classes(missing));
}

}  // namespace

IdxDataset::IdxDataset(const std::string& images_path, const std::string& labels_path, bool every_class_present)
    : images_name_(std::filesystem::path(images_path).filename().string()) {
  IdxArray images = read_idx(images_path, 3);
  IdxArray labels = read_idx(labels_path, 1);
  engine::check(images.dims[0] == labels.dims[0], "IDX: '{}' has {} images but '{}' has {} labels",
                images_path, images.dims[0], labels_path, labels.dims[0]);
  engine::check(images.dims[0] > 0, "IDX file '{}' holds no images", images_path);
  height_ = static_cast<int>(images.dims[1]);
  width_ = static_cast<int>(images.dims[2]);
  pixels_ = std::move(images.values);
  labels_ = std::move(labels.values);
  if (every_class_present) check_no_missing_classes(labels_, labels_path);
  num_classes_ = *std::max_element(labels_.begin(), labels_.end()) + 1;
}

IdxDataset IdxDataset::from_dir(const std::string& dir, Split split) {
  const std::string prefix = split == Split::Train ? "train" : "t10k";
  // The compressed file when present, else the plain one (whose error then names it).
  const auto find = [&](const std::string& kind) {
    const std::filesystem::path plain = std::filesystem::path(dir) / (prefix + "-" + kind + "-ubyte");
    const std::filesystem::path gz = plain.string() + ".gz";
    return (std::filesystem::exists(gz) ? gz : plain).string();
  };
  return IdxDataset(find("images-idx3"), find("labels-idx1"), /*every_class_present=*/split == Split::Train);
}

void IdxDataset::check_index(size_t i) const {
  engine::check(i < labels_.size(), "IDX '{}': index {} out of range (size {})", images_name_, i, labels_.size());
}

Sample IdxDataset::get(size_t i) const {
  check_index(i);
  Image image(height_, width_, 1);
  const auto first = pixels_.begin() + static_cast<std::ptrdiff_t>(i * image.pixels.size());
  std::copy(first, first + static_cast<std::ptrdiff_t>(image.pixels.size()), image.pixels.begin());
  return {std::move(image), labels_[i]};
}

int64_t IdxDataset::label(size_t i) const {
  check_index(i);
  return labels_[i];
}

std::string IdxDataset::name(size_t i) const {
  check_index(i);
  return images_name_ + "#" + std::to_string(i);
}

}  // namespace data
