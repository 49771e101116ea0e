// Decode and transforms compared with PIL (what timm / torchvision use), against the
// reference made by tools/make_transform_reference.py in tests/data/pil_reference/.
//
// Resize is compared on a synthetic pattern (no decoding involved) and must be bit-exact.
// Real JPEGs are decoded by libjpeg-turbo with PIL's settings (data/jpeg.h), so decoded
// pixels and the whole decode + resize + crop pipeline must be bit-exact too. (With
// stb_image's decoder they differed by up to 3-4 grey levels, mean 0.03-0.09.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "data/archive.h"
#include "data/files.h"
#include "data/image.h"
#include "data/transforms.h"

namespace data {
namespace {

const std::string kReferenceDir = "tests/data/pil_reference/";
constexpr int kDecodeMaxDiff = 0;
constexpr int kPipelineMaxDiff = 0;
constexpr double kMeanAbsDiff = 0.0;        // per compared region
constexpr double kChannelMeanDiff = 1e-9;   // mean of a whole 224x224 crop

struct Difference {
  int max = 0;
  double mean = 0.0;
};

Difference compare(const Image& a, const Image& b) {
  EXPECT_EQ(a.height, b.height);
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.channels, b.channels);
  Difference d;
  if (a.pixels.size() != b.pixels.size()) return {255, 255.0};
  for (size_t i = 0; i < a.pixels.size(); ++i) {
    const int diff = std::abs(a.pixels[i] - b.pixels[i]);
    d.max = std::max(d.max, diff);
    d.mean += diff;
  }
  d.mean /= static_cast<double>(a.pixels.size());
  return d;
}

// The 16x16 patches at `positions`, stacked vertically as the reference PNGs store them.
Image stacked_patches(const Image& image, const nlohmann::json& positions, int patch) {
  Image stacked(patch * static_cast<int>(positions.size()), patch, image.channels);
  for (size_t p = 0; p < positions.size(); ++p) {
    const Image piece = crop(image, positions[p][0], positions[p][1], patch, patch);
    std::copy(piece.pixels.begin(), piece.pixels.end(), stacked.pixels.begin() + p * piece.pixels.size());
  }
  return stacked;
}

// Must match synthetic_pattern() in tools/make_transform_reference.py.
Image synthetic_pattern(int height, int width) {
  Image image(height, width, 3);
  for (uint32_t y = 0; y < static_cast<uint32_t>(height); ++y) {
    for (uint32_t x = 0; x < static_cast<uint32_t>(width); ++x) {
      for (uint32_t c = 0; c < 3; ++c) {
        const uint32_t hash = (x * 73856093u) ^ (y * 19349663u) ^ (c * 83492791u);
        image.at(y, x, c) = static_cast<uint8_t>((2 * x + 3 * y + 60 * c + hash % 64) % 256);
      }
    }
  }
  return image;
}

double channel_mean(const Image& image, int channel) {
  double sum = 0.0;
  for (size_t i = channel; i < image.pixels.size(); i += image.channels) sum += image.pixels[i];
  return sum / (image.pixels.size() / image.channels);
}

Interp interp_named(const std::string& name) { return name == "bicubic" ? Interp::Bicubic : Interp::Bilinear; }

void report(const std::string& what, const Difference& d) {
  std::cout << "[pil] " << what << ": max abs diff " << d.max << ", mean " << d.mean << "\n";
}

class DataPilReference : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::ifstream in(kReferenceDir + "reference.json");
    ASSERT_TRUE(in.good()) << "missing " << kReferenceDir << "reference.json (run from the repo root)";
    reference_ = nlohmann::json::parse(in);
    cache_ = new TempDir();
    imagenet_ = extract_archive_once(data_file("imagenet-sample.tar"), cache_->path()) + "/";
    std::vector<std::string> cifar_members;
    for (const auto& item : reference_["cifar"]) cifar_members.push_back(item["file"]);
    extract_members(data_file("cifar10-jpeg.tar.xz"), cache_->path(), cifar_members);
  }
  static void TearDownTestSuite() { delete cache_; }

  static Image reference_png(const std::string& name) { return decode_image(kReferenceDir + name); }

  static nlohmann::json reference_;
  static TempDir* cache_;
  static std::string imagenet_;
};
nlohmann::json DataPilReference::reference_;
TempDir* DataPilReference::cache_ = nullptr;
std::string DataPilReference::imagenet_;

TEST_F(DataPilReference, SyntheticResizeIsBitExact) {
  const auto& synthetic = reference_["synthetic"];
  const Image source = synthetic_pattern(synthetic["height"], synthetic["width"]);
  for (const auto& item : synthetic["cases"]) {
    const Image resized = resize(source, item["height"], item["width"], interp_named(item["interp"]));
    const Difference d = compare(resized, reference_png(item["png"]));
    report(item["png"], d);
    EXPECT_EQ(d.max, 0) << item["png"];
  }
}

TEST_F(DataPilReference, CifarDecodeIsCloseToPil) {
  for (const auto& item : reference_["cifar"]) {
    const Image decoded = decode_image(cache_->path() + "/" + item["file"].get<std::string>());
    const Difference d = compare(decoded, reference_png(item["png"]));
    report(item["file"], d);
    EXPECT_LE(d.max, kDecodeMaxDiff);
    EXPECT_LE(d.mean, kMeanAbsDiff);
  }
}

// An Adobe CMYK JPEG (inks stored inverted) to RGB as PIL converts it, with
// its rounding: bit-exact.
TEST_F(DataPilReference, CmykDecodeIsBitExact) {
  const auto& item = reference_["cmyk"];
  const Image decoded = decode_image(kReferenceDir + item["jpeg"].get<std::string>());
  const Difference d = compare(decoded, reference_png(item["png"]));
  report(item["jpeg"], d);
  EXPECT_EQ(d.max, 0);
}

TEST_F(DataPilReference, ImagenetDecodeIsCloseToPil) {
  const int patch = reference_["patch"];
  for (const auto& item : reference_["imagenet"]) {
    const Image decoded = decode_image(imagenet_ + item["file"].get<std::string>());
    ASSERT_EQ(decoded.height, item["height"]);
    ASSERT_EQ(decoded.width, item["width"]);
    const auto& ref = item["decoded"];
    const Difference d = compare(stacked_patches(decoded, ref["positions"], patch), reference_png(ref["png"]));
    report(item["file"].get<std::string>() + " decode", d);
    EXPECT_LE(d.max, kDecodeMaxDiff);
    EXPECT_LE(d.mean, kMeanAbsDiff);
  }
}

// timm's eval transform: resize the shorter side to floor(224 / crop_pct), center crop 224.
TEST_F(DataPilReference, ImagenetEvalPipelineIsCloseToPil) {
  const int patch = reference_["patch"];
  for (const auto& item : reference_["imagenet"]) {
    const Image decoded = decode_image(imagenet_ + item["file"].get<std::string>());
    for (const auto& ref : item["pipelines"]) {
      const Interp interp = interp_named(ref["interp"]);
      const int img_size = ref["img_size"];
      const Image resized = resize_shorter(decoded, eval_resize_size(img_size, ref["crop_pct"]), interp);
      EXPECT_EQ(resized.height, ref["resized_height"]);
      EXPECT_EQ(resized.width, ref["resized_width"]);
      const Image cropped = center_crop(resized, img_size, img_size);
      const std::string what = item["file"].get<std::string>() + " " + ref["interp"].get<std::string>();
      const Difference d = compare(stacked_patches(cropped, ref["positions"], patch), reference_png(ref["png"]));
      report(what, d);
      EXPECT_LE(d.max, kPipelineMaxDiff);
      EXPECT_LE(d.mean, kMeanAbsDiff);
      for (int c = 0; c < 3; ++c) {
        EXPECT_NEAR(channel_mean(cropped, c), ref["mean"][c].get<double>(), kChannelMeanDiff) << what;
      }
    }
  }
}

}  // namespace
}  // namespace data
