// Exact properties of the transforms (their agreement with PIL is in test_data_pil.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "data/random.h"
#include "data/transforms.h"
#include "engine/error.h"

namespace data {
namespace {

Image random_image(int height, int width, int channels, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Image image(height, width, channels);
  for (uint8_t& p : image.pixels) p = static_cast<uint8_t>(rng());
  return image;
}

// Channel 0 holds the row, channel 1 the column: crops can be located from their pixels.
Image coordinate_image(int height, int width) {
  Image image(height, width, 2);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      image.at(y, x, 0) = static_cast<uint8_t>(y);
      image.at(y, x, 1) = static_cast<uint8_t>(x);
    }
  }
  return image;
}

void expect_same(const Image& a, const Image& b) {
  EXPECT_EQ(a.height, b.height);
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.channels, b.channels);
  EXPECT_EQ(a.pixels, b.pixels);
}

TEST(DataTransforms, ResizeToSameSizeIsIdentity) {
  for (int channels : {1, 3}) {
    const Image image = random_image(13, 17, channels, 1);
    expect_same(resize(image, 13, 17, Interp::Bicubic), image);
    expect_same(resize(image, 13, 17, Interp::Bilinear), image);
  }
}

TEST(DataTransforms, ResizeKeepsConstantImagesConstant) {
  Image grey(20, 30, 3);
  std::fill(grey.pixels.begin(), grey.pixels.end(), 200);
  for (Interp interp : {Interp::Bicubic, Interp::Bilinear}) {
    for (auto [h, w] : {std::pair{7, 9}, std::pair{41, 75}, std::pair{20, 11}}) {
      const Image out = resize(grey, h, w, interp);
      ASSERT_EQ(out.height, h);
      ASSERT_EQ(out.width, w);
      for (uint8_t p : out.pixels) ASSERT_EQ(p, 200);
    }
  }
}

TEST(DataTransforms, ResizeShorterKeepsAspectLikeTorchvision) {
  const auto shape = [](int height, int width, int size) {
    const Image out = resize_shorter(Image(height, width, 3), size, Interp::Bilinear);
    return std::pair{out.height, out.width};
  };
  EXPECT_EQ(shape(375, 500, 256), std::pair(256, 341));  // int(256 * 500 / 375) = 341
  EXPECT_EQ(shape(500, 335, 256), std::pair(382, 256));  // int(256 * 500 / 335) = 382
  EXPECT_EQ(shape(168, 168, 248), std::pair(248, 248));
  EXPECT_EQ(eval_resize_size(224, 0.875), 256);
  EXPECT_EQ(eval_resize_size(224, 0.9), 248);
  EXPECT_EQ(eval_resize_size(32, 1.0), 32);
  EXPECT_THROW(resize(Image(4, 4, 3), 0, 4, Interp::Bicubic), engine::Error);
}

TEST(DataTransforms, ResizeAndCenterCropIsResizeThenCrop) {
  const Image image = random_image(60, 45, 3, 2);
  expect_same(resize_and_center_crop(image, 32, 0.875, Interp::Bicubic),
              center_crop(resize_shorter(image, 36, Interp::Bicubic), 32, 32));
}

TEST(DataTransforms, CenterCropRoundsHalvesToEvenLikeTorchvision) {
  const Image image = coordinate_image(20, 20);
  // (image - crop) / 2 -> expected offset: round(0.5) = 0, round(1.5) = 2, round(2.5) = 2.
  for (auto [crop_size, offset] : {std::pair{19, 0}, std::pair{17, 2}, std::pair{15, 2}, std::pair{14, 3}}) {
    const Image out = center_crop(image, crop_size, crop_size);
    EXPECT_EQ(out.height, crop_size);
    EXPECT_EQ(out.at(0, 0, 0), offset) << "crop " << crop_size;
    EXPECT_EQ(out.at(0, 0, 1), offset) << "crop " << crop_size;
  }
  const Image tall = center_crop(coordinate_image(10, 9), 7, 4);  // top round(1.5) = 2, left round(2.5) = 2
  EXPECT_EQ(tall.at(0, 0, 0), 2);
  EXPECT_EQ(tall.at(0, 0, 1), 2);
  EXPECT_EQ(tall.at(6, 3, 0), 8);
  EXPECT_EQ(tall.at(6, 3, 1), 5);
  EXPECT_THROW(center_crop(image, 21, 5), engine::Error);
  EXPECT_THROW(crop(image, 5, 5, 16, 4), engine::Error);
}

TEST(DataTransforms, HflipMirrorsAndTwiceIsIdentity) {
  const Image image = random_image(5, 7, 3, 3);
  const Image flipped = hflip(image);
  for (int c = 0; c < 3; ++c) EXPECT_EQ(flipped.at(2, 0, c), image.at(2, 6, c));
  expect_same(hflip(flipped), image);
}

// Every size x size window of a one-channel `padded` image of rows x cols.
std::set<std::vector<uint8_t>> square_windows(const std::vector<uint8_t>& padded, int rows, int cols, int size) {
  std::set<std::vector<uint8_t>> windows;
  for (int top = 0; top + size <= rows; ++top) {
    for (int left = 0; left + size <= cols; ++left) {
      std::vector<uint8_t> window;
      for (int y = 0; y < size; ++y) {
        for (int x = 0; x < size; ++x) window.push_back(padded[(top + y) * cols + left + x]);
      }
      windows.insert(window);
    }
  }
  return windows;
}

// `draws` size x size random crops of `image` reflect-padded by `pad`: each is
// one of `windows`, and together they reach every one.
void expect_crops_are_the_windows(const Image& image, int size, int pad,
                                  const std::set<std::vector<uint8_t>>& windows, int draws, std::mt19937_64& rng) {
  std::set<std::vector<uint8_t>> seen;
  for (int i = 0; i < draws; ++i) {
    const Image out = random_crop_reflect_pad(image, size, pad, rng);
    ASSERT_EQ(windows.count(out.pixels), 1u);
    seen.insert(out.pixels);
  }
  EXPECT_EQ(seen.size(), windows.size());
}

// Reflect padding mirrors around the edge pixel without repeating it (numpy "reflect").
TEST(DataTransforms, ReflectPadOfHandMadeImage) {
  Image image(3, 3, 1);
  image.pixels = {1, 2, 3,
                  4, 5, 6,
                  7, 8, 9};
  const std::vector<uint8_t> padded = {5, 4, 5, 6, 5,
                                       2, 1, 2, 3, 2,
                                       5, 4, 5, 6, 5,
                                       8, 7, 8, 9, 8,
                                       5, 4, 5, 6, 5};
  std::mt19937_64 rng(0);
  EXPECT_EQ(random_crop_reflect_pad(image, 5, 1, rng).pixels, padded);  // the only 5x5 window

  // A 3x3 crop is one of the 9 windows of `padded`, each reachable.
  expect_crops_are_the_windows(image, 3, 1, square_windows(padded, 5, 5, 3), 200, rng);
  EXPECT_THROW(random_crop_reflect_pad(image, 3, 3, rng), engine::Error);  // pad must be < side
}

TEST(DataTransforms, RandomResizedCropSizeAndDeterminism) {
  const Image image = random_image(40, 60, 3, 4);
  std::mt19937_64 a(7), b(7), c(8);
  const Image out_a = random_resized_crop(image, 24, a);
  EXPECT_EQ(out_a.height, 24);
  EXPECT_EQ(out_a.width, 24);
  EXPECT_EQ(out_a.channels, 3);
  expect_same(random_resized_crop(image, 24, b), out_a);
  EXPECT_NE(random_resized_crop(image, 24, c).pixels, out_a.pixels);
}

TEST(DataTransforms, RandomResizedCropEdgeCasesAreExact) {
  const Image image = random_image(40, 60, 3, 5);
  std::mt19937_64 rng(1);
  // Full area at the image's own aspect ratio: the whole image, resized.
  expect_same(random_resized_crop(image, 16, rng, Interp::Bicubic, {1.0, 1.0}, {1.5, 1.5}),
              resize(image, 16, 16, Interp::Bicubic));
  // Ratio 2 at full area never fits a square image: centred fallback with height w / 2.
  const Image square = random_image(40, 40, 3, 6);
  expect_same(random_resized_crop(square, 16, rng, Interp::Bilinear, {1.0, 1.0}, {2.0, 2.0}),
              resize(crop(square, 10, 0, 20, 40), 16, 16, Interp::Bilinear));
}

TEST(DataTransforms, NormalizedChwMatchesToTensorNormalize) {
  Image image(1, 2, 3);
  image.pixels = {255, 0, 51,   // pixel (0, 0): R G B
                  0, 255, 102};  // pixel (0, 1)
  const float mean[3] = {0.5f, 0.25f, 0.0f};
  const float std[3] = {0.5f, 0.25f, 2.0f};
  float out[6];
  to_normalized_chw(image, mean, std, out);
  // CHW: R plane, G plane, B plane.
  EXPECT_FLOAT_EQ(out[0], 1.0f);
  EXPECT_FLOAT_EQ(out[1], -1.0f);
  EXPECT_FLOAT_EQ(out[2], -1.0f);
  EXPECT_FLOAT_EQ(out[3], 3.0f);
  EXPECT_FLOAT_EQ(out[4], 0.1f);
  EXPECT_FLOAT_EQ(out[5], 0.2f);
}

TEST(DataRandom, DrawsStayInRangeAndShuffleIsAPermutation) {
  std::mt19937_64 rng(9);
  std::set<int64_t> values;
  for (int i = 0; i < 1000; ++i) {
    const int64_t v = uniform_int(rng, -2, 2);
    ASSERT_GE(v, -2);
    ASSERT_LE(v, 2);
    values.insert(v);
    const double u = uniform(rng, 3.0, 4.0);
    ASSERT_GE(u, 3.0);
    ASSERT_LT(u, 4.0);
  }
  EXPECT_EQ(values.size(), 5u);
  std::vector<int> items = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  shuffle(items, rng);
  EXPECT_EQ(std::set<int>(items.begin(), items.end()).size(), 10u);
  EXPECT_NE(mix_seed(1, 2), mix_seed(2, 1));
}

// Every output pixel is the mirrored column of the same row (an even height, so no middle
// row hides a vertical flip or a 180-degree turn, which also give the image back when done
// twice).
TEST(DataTransforms, HflipMovesEveryPixelToTheMirroredColumnOfItsRow) {
  for (int channels : {1, 3}) {
    const Image image = random_image(4, 7, channels, 20 + channels);
    const Image flipped = hflip(image);
    ASSERT_EQ(flipped.height, 4);
    ASSERT_EQ(flipped.width, 7);
    ASSERT_EQ(flipped.channels, channels);
    for (int y = 0; y < 4; ++y) {
      for (int x = 0; x < 7; ++x) {
        for (int c = 0; c < channels; ++c) {
          ASSERT_EQ(flipped.at(y, x, c), image.at(y, 6 - x, c)) << y << "," << x << "," << c;
        }
      }
    }
  }
}

// On a wide image rows reflect within the height and columns within the width: a 2x4
// image padded by 1 (numpy "reflect"), whose 4x4 windows are written out by hand.
TEST(DataTransforms, ReflectPadOfANonSquareImage) {
  Image image(2, 4, 1);
  image.pixels = {1, 2, 3, 4,
                  5, 6, 7, 8};
  const std::vector<uint8_t> padded = {6, 5, 6, 7, 8, 7,
                                       2, 1, 2, 3, 4, 3,
                                       6, 5, 6, 7, 8, 7,
                                       2, 1, 2, 3, 4, 3};
  std::mt19937_64 rng(3);
  // 4x4 windows: top is always 0 (4 padded rows), left 0, 1 or 2.
  expect_crops_are_the_windows(image, 4, 1, square_windows(padded, 4, 6, 4), 60, rng);
}

// torchvision's RandomResizedCrop.get_params written out with the same portable draws
// (data/random.h): area fraction uniform in `scale`, aspect ratio log-uniform in `ratio`,
// w = round(sqrt(area * ratio)), h = round(sqrt(area / ratio)), then top and left
// (top drawn first); after 10 misses, the whole image cut to the nearest allowed ratio.
struct CropBox {
  int top, left, height, width;
};

CropBox torchvision_crop_box(int height, int width, std::mt19937_64& rng, std::pair<double, double> scale,
                             std::pair<double, double> ratio) {
  const double area = static_cast<double>(height) * width;
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * uniform(rng, scale.first, scale.second);
    const double log_ratio = uniform(rng, std::log(ratio.first), std::log(ratio.second));
    const double aspect = std::exp(log_ratio);
    const int w = static_cast<int>(std::nearbyint(std::sqrt(target_area * aspect)));
    const int h = static_cast<int>(std::nearbyint(std::sqrt(target_area / aspect)));
    if (0 < w && w <= width && 0 < h && h <= height) {
      const int top = static_cast<int>(uniform_int(rng, 0, height - h));
      const int left = static_cast<int>(uniform_int(rng, 0, width - w));
      return {top, left, h, w};
    }
  }
  const double in_ratio = static_cast<double>(width) / height;
  int w = width, h = height;
  if (in_ratio < ratio.first) h = static_cast<int>(std::nearbyint(w / ratio.first));
  if (in_ratio > ratio.second) w = static_cast<int>(std::nearbyint(h * ratio.second));
  return {(height - h) / 2, (width - w) / 2, h, w};
}

TEST(DataTransforms, RandomResizedCropTakesTorchvisionsBox) {
  const Image image = random_image(40, 60, 3, 11);
  const std::pair<double, double> default_scale{0.08, 1.0}, default_ratio{3.0 / 4.0, 4.0 / 3.0};
  std::set<int> widths, heights;
  for (auto [scale, ratio] : {std::pair{default_scale, default_ratio}, std::pair{std::pair{0.2, 0.5}, std::pair{0.5, 2.0}}}) {
    for (uint64_t seed = 0; seed < 40; ++seed) {
      std::mt19937_64 rng(seed), reference_rng(seed);
      const CropBox box = torchvision_crop_box(40, 60, reference_rng, scale, ratio);
      widths.insert(box.width);
      heights.insert(box.height);
      const Image out = random_resized_crop(image, 12, rng, Interp::Bilinear, scale, ratio);
      const Image expected = resize(crop(image, box.top, box.left, box.height, box.width), 12, 12, Interp::Bilinear);
      ASSERT_EQ(out.pixels, expected.pixels) << "seed " << seed << ": box top " << box.top << " left " << box.left
                                             << " " << box.height << "x" << box.width;
      EXPECT_EQ(rng(), reference_rng()) << "seed " << seed << ": a different number of draws";
    }
  }
  EXPECT_GT(widths.size(), 10u);  // the boxes do vary
  EXPECT_GT(heights.size(), 10u);
}

// ToTensor then Normalize in float32, bit for bit, for every pixel value: x / 255 rounded to
// float, minus the mean, over the std (not, say, (x - 255 mean) / (255 std), which differs
// in the last bits).
TEST(DataTransforms, NormalizedChwIsBitExactForEveryPixelValue) {
  Image image(16, 16, 3);
  for (int p = 0; p < 256; ++p) {
    for (int c = 0; c < 3; ++c) image.pixels[p * 3 + c] = static_cast<uint8_t>((p + 85 * c) % 256);
  }
  const float mean[3] = {0.485f, 0.456f, 0.406f};
  const float std[3] = {0.229f, 0.224f, 0.225f};
  std::vector<float> out(3 * 256);
  to_normalized_chw(image, mean, std, out.data());
  for (int c = 0; c < 3; ++c) {
    for (int p = 0; p < 256; ++p) {
      const float unit = static_cast<float>(image.pixels[p * 3 + c]) / 255.0f;  // ToTensor
      const float expected = (unit - mean[c]) / std[c];                         // Normalize
      ASSERT_EQ(out[c * 256 + p], expected) << "channel " << c << " value " << int{image.pixels[p * 3 + c]};
    }
  }
}

// Fisher-Yates reaches every permutation, including those that leave items in place
// (Sattolo's variant, one index short, gives only the two cycles of three items).
TEST(DataRandom, ShuffleReachesEveryPermutation) {
  std::mt19937_64 rng(12);
  std::map<std::vector<int>, int> counts;
  for (int i = 0; i < 600; ++i) {
    std::vector<int> items = {0, 1, 2};
    shuffle(items, rng);
    ++counts[items];
  }
  ASSERT_EQ(counts.size(), 6u);
  for (const auto& [permutation, count] : counts) EXPECT_GT(count, 50) << permutation[0] << permutation[1] << permutation[2];
}

}  // namespace
}  // namespace data
