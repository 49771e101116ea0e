// A small ImageFolder for end-to-end tests of the training tools: train/ and
// test/ splits made of the 50 real ImageNet sample JPEGs in ../shared, labelled
// "even" and "odd" by position, stored as 48 x 40 PNGs (decoding the full-size
// JPEGs at every epoch would dominate the tests' time).
#pragma once
#include <filesystem>
#include <string>

#include "data/archive.h"
#include "data/image.h"
#include "data/transforms.h"
#include "tests/shared_data.h"

namespace engine::testing {

inline std::string make_image_folder(const std::string& root) {
  namespace fs = std::filesystem;
  const std::string source = data::extract_archive_once(shared_path("data/imagenet-sample.tar"),
                                                        testing::scratch_path("engine_distill_cache"));
  fs::remove_all(root);
  int index = 0;
  for (const auto& entry : fs::recursive_directory_iterator(source + "/imagenet-sample/val")) {
    if (!entry.is_regular_file()) continue;
    const std::string split = index % 5 == 0 ? "test" : "train";
    const std::string cls = index % 2 == 0 ? "even" : "odd";
    fs::create_directories(fs::path(root) / split / cls);
    const data::Image small = data::resize(data::decode_image(entry.path().string()), 40, 48, data::Interp::Bilinear);
    data::write_png(small, (fs::path(root) / split / cls / entry.path().stem()).string() + ".png");
    ++index;
  }
  return root;
}

}  // namespace engine::testing
