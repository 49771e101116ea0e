#include "data/open_dataset.h"

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <vector>

#include "data/archive.h"
#include "data/cifar_binary.h"
#include "data/image_folder.h"
#include "engine/error.h"

namespace data {
namespace fs = std::filesystem;
namespace {

constexpr const char* kCifarFolder = "cifar-10-batches-bin";

bool holds_cifar_batches(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return false;
  std::vector<std::string> names = CifarBinary::batch_files(Split::Train);
  names.push_back(CifarBinary::batch_files(Split::Test).front());
  names.push_back(CifarBinary::kMetaFile);
  return std::any_of(names.begin(), names.end(), [&](const std::string& name) { return fs::exists(dir / name, ec); });
}

// "test/" -> "test", so that the last component is the split.
std::string without_trailing_slashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

// A few of the entries of `dir`, sorted, for a message about a path that is not there.
std::string entries_of(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return "";
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.empty() && name[0] != '.') names.push_back(name + (entry.is_directory(ec) ? "/" : ""));
  }
  std::sort(names.begin(), names.end());
  constexpr size_t kShown = 12;
  const size_t more = names.size() > kShown ? names.size() - kShown : 0;
  names.resize(std::min(names.size(), kShown));
  if (names.empty()) return fmt::format(" ('{}' is empty)", dir.string());
  return fmt::format(" ('{}' holds: {}{})", dir.string(), fmt::join(names, " "),
                     more ? fmt::format(" and {} more", more) : "");
}

std::unique_ptr<LabeledDataset> open_cifar_binary(const std::string& dir, Split split, const std::string& class_list) {
  auto dataset = std::make_unique<CifarBinary>(dir, split);
  if (!class_list.empty()) {
    const std::vector<std::string> listed = read_class_list(class_list);
    engine::check(listed == dataset->classes(), "class list '{}' ({}) does not match the CIFAR-10 classes of '{}' ({})",
                  class_list, fmt::join(listed, " "), dir, fmt::join(dataset->classes(), " "));
  }
  return dataset;
}

// The class list as given, else (a relative path not found there) inside the
// dataset's root, as subdir is: e.g. imagenet-sample/synsets.txt in the archive.
std::string resolve_class_list(const std::string& class_list, const std::string& root) {
  std::error_code ec;
  if (class_list.empty() || fs::exists(class_list, ec) || fs::path(class_list).is_absolute()) return class_list;
  const fs::path inside = fs::path(root) / class_list;
  engine::check(fs::exists(inside, ec), "class list '{}' does not exist, neither as given nor inside '{}'{}",
                class_list, root, entries_of(inside.parent_path()));
  return inside.string();
}

}  // namespace

std::string find_cifar_binary_dir(const std::string& dir) {
  if (holds_cifar_batches(dir)) return dir;
  const fs::path inner = fs::path(dir) / kCifarFolder;
  return holds_cifar_batches(inner) ? inner.string() : "";
}

std::unique_ptr<LabeledDataset> open_dataset(const std::string& data, const std::string& subdir,
                                             const std::string& class_list) {
  engine::check(!data.empty(), "no dataset given (--data or [data] path); {}", where_to_get_data());
  std::error_code ec;
  engine::check(fs::exists(data, ec), "dataset '{}' does not exist; {}", data, where_to_get_data());
  const bool is_file = fs::is_regular_file(data, ec);
  engine::check(!(is_file && fs::path(data).extension() == ".bin"),
                "dataset '{}' is a single file: pass the folder of CIFAR-10 batches that holds it ({}/) with "
                "subdir 'train' or 'test'",
                data, kCifarFolder);
  const std::string root = is_file ? extract_archive_once(data, default_cache_dir()) : data;
  const std::string sub = without_trailing_slashes(subdir);
  const fs::path path = sub.empty() ? fs::path(root) : fs::path(root) / sub;
  const std::string classes = resolve_class_list(class_list, root);

  if (fs::is_directory(path, ec)) {
    const std::string cifar = find_cifar_binary_dir(path.string());
    if (!cifar.empty()) {
      const std::string prefix = sub.empty() ? "" : sub + "/";
      engine::fail("'{}' holds CIFAR-10 binary batches: choose the split with subdir '{}train' or '{}test' "
                   "(--subdir, or [data] subdir / train_subdir / test_subdir)",
                   cifar, prefix, prefix);
    }
    return std::make_unique<ImageFolder>(path.string(), classes);
  }

  // Not a folder: the split of CIFAR-10 binary batches, or a mistake.
  const std::string split = sub.empty() ? "" : fs::path(sub).filename().string();
  if (split == "train" || split == "test") {
    const std::string cifar = find_cifar_binary_dir(path.parent_path().string());
    if (!cifar.empty()) return open_cifar_binary(cifar, split == "train" ? Split::Train : Split::Test, classes);
  }
  engine::fail("data folder '{}' does not exist{}", path.string(), entries_of(path.parent_path()));
}

}  // namespace data
