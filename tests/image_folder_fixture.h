// Inputs for end-to-end tests of the training tools. A small ImageFolder:
// train/ and test/ splits made of the 50 real ImageNet sample JPEGs in
// ../shared, labelled "even" and "odd" by position, stored as 48 x 40 PNGs
// (decoding the full-size JPEGs at every epoch would dominate the tests'
// time). A teacher that halts tokens.
#pragma once
#include <filesystem>
#include <string>

#include "data/archive.h"
#include "data/image.h"
#include "data/transforms.h"
#include "models/vit_checkpoint.h"
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

// The fixture ViT saved in `dir` as an A-ViT whose tokens halt at every depth.
inline std::string save_avit_teacher(const std::string& dir) {
  auto model = load_vit(shared_path("fixtures/timm_vit_tiny.safetensors"));
  model->config.halting = HaltingConfig{1.0, 0.5, 0.01};
  std::filesystem::remove_all(dir);
  save_vit(*model, dir);
  return dir;
}

}  // namespace engine::testing
