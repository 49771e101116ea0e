#include "data/image_folder.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string_view>

#include "engine/error.h"
#include "engine/os_error.h"

namespace data {
namespace fs = std::filesystem;
namespace {

bool is_image_file(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

// Hidden entries are never classes or images: as classes they would shift every later label
// (.ipynb_checkpoints), and macOS's ._x.jpg files are metadata, not JPEGs.
std::vector<std::string> sorted_entries(const fs::path& dir, bool want_directories) {
  std::vector<std::string> names;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const bool is_dir = entry.is_directory();
    if (name[0] == '.' || is_dir != want_directories || (!is_dir && !is_image_file(entry.path()))) continue;
    // A pipe named like an image would block its reader for good.
    engine::check(is_dir || entry.is_regular_file(), "ImageFolder: '{}' is not a regular file (a pipe, a device or "
                  "a broken link?)", entry.path().string());
    names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string trim(const std::string& s) {
  const char* space = " \t\r\n";
  const size_t begin = s.find_first_not_of(space);
  return begin == std::string::npos ? "" : s.substr(begin, s.find_last_not_of(space) - begin + 1);
}

// Skips the UTF-8 byte-order mark that Windows editors write at the start of
// a text file, which would otherwise become part of the first class name.
void skip_utf8_bom(std::istream& in) {
  char start[3];
  if (in.read(start, 3) && std::string_view(start, 3) == "\xEF\xBB\xBF") return;
  in.clear();
  in.seekg(0);
}

}  // namespace

std::vector<std::string> read_class_list(const std::string& path) {
  std::ifstream in(path);
  if (!in.good()) engine::fail_os_error(errno, "cannot open class list", path);
  std::vector<std::string> classes;
  std::set<std::string> seen;
  skip_utf8_bom(in);
  for (std::string line; std::getline(in, line);) {
    line = trim(line);
    if (line.empty()) continue;
    engine::check(seen.insert(line).second, "class list '{}': '{}' appears twice", path, line);
    classes.push_back(line);
  }
  engine::check(!classes.empty(), "class list '{}' is empty", path);
  return classes;
}

ImageFolder::ImageFolder(const std::string& root, const std::string& class_list_file) : root_(root) {
  engine::check(fs::is_directory(root), "ImageFolder: '{}' is not a directory", root);
  const std::vector<std::string> folders = sorted_entries(root, /*want_directories=*/true);
  classes_ = class_list_file.empty() ? folders : read_class_list(class_list_file);

  std::map<std::string, int64_t> label_of;
  for (size_t i = 0; i < classes_.size(); ++i) label_of[classes_[i]] = static_cast<int64_t>(i);
  for (const std::string& folder : folders) {
    const auto found = label_of.find(folder);
    engine::check(found != label_of.end(), "ImageFolder '{}': class folder '{}' is not in the class list '{}'",
                  root, folder, class_list_file);
    const std::vector<std::string> files = sorted_entries(fs::path(root) / folder, /*want_directories=*/false);
    // Without a list, an empty folder would still take a label and shift the later ones'; a
    // listed class may have no images in a split (50 ImageNet images over 1000 synsets).
    engine::check(!files.empty() || !class_list_file.empty(),
                  "ImageFolder: class folder '{}' is empty: each class folder needs at least one "
                  ".jpg/.jpeg/.png image (or give a class list)",
                  (fs::path(root) / folder).string());
    for (const std::string& file : files) items_.push_back({folder + "/" + file, found->second});
  }
  engine::check(!items_.empty(), "ImageFolder '{}': no .jpg/.jpeg/.png images in its class folders", root);
}

const ImageFolder::Item& ImageFolder::item(size_t i) const {
  engine::check(i < items_.size(), "ImageFolder '{}': index {} out of range (size {})", root_, i, items_.size());
  return items_[i];
}

Sample ImageFolder::get(size_t i) const {
  const Item& it = item(i);
  return {decode_image((fs::path(root_) / it.relative_path).string()), it.label};
}

int64_t ImageFolder::label(size_t i) const { return item(i).label; }

std::string ImageFolder::name(size_t i) const { return item(i).relative_path; }

}  // namespace data
