// torchvision-style ImageFolder: root/<class>/<image>.
#pragma once
#include <string>
#include <vector>

#include "data/dataset.h"

namespace data {

class ImageFolder : public LabeledDataset {
 public:
  // Classes are root's subfolders in sorted (byte) order, label = position. Images are the
  // .jpg / .jpeg / .png files (any case) directly in each class folder, sorted by name;
  // other files are ignored, and so are hidden entries (names starting with '.', such as
  // .ipynb_checkpoints/), folders and files alike. A class folder without images is an
  // error naming it, as it would shift the labels of the classes after it. With a class
  // list file (one class name a line, line i = label i, e.g. ImageNet's 1000 synsets)
  // labels come from the list instead, so a folder holding a subset of the classes keeps
  // the global indices, and a listed class may have no images (or no folder); a subfolder
  // missing from the list is an error naming it. A missing root or no images at all is an
  // error.
  explicit ImageFolder(const std::string& root, const std::string& class_list_file = "");

  size_t size() const override { return items_.size(); }
  int num_classes() const override { return static_cast<int>(classes_.size()); }
  Sample get(size_t i) const override;
  int64_t label(size_t i) const override;
  std::string name(size_t i) const override;  // "<class>/<file>"

  const std::string& root() const override { return root_; }
  // Label index -> class name (the list file's classes when one was given).
  const std::vector<std::string>& classes() const override { return classes_; }

 private:
  struct Item {
    std::string relative_path;
    int64_t label;
  };
  const Item& item(size_t i) const;

  std::string root_;
  std::vector<std::string> classes_;
  std::vector<Item> items_;
};

// One class name a line (surrounding whitespace and blank lines ignored); duplicates and
// an empty list are errors naming the file.
std::vector<std::string> read_class_list(const std::string& path);

}  // namespace data
