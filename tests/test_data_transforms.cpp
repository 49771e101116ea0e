// Exact properties of the transforms (their agreement with PIL is in test_data_pil.cpp).
#include <gtest/gtest.h>

#include <set>

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
  std::set<std::vector<uint8_t>> windows;
  for (int top = 0; top < 3; ++top) {
    for (int left = 0; left < 3; ++left) {
      std::vector<uint8_t> window;
      for (int y = 0; y < 3; ++y) {
        for (int x = 0; x < 3; ++x) window.push_back(padded[(top + y) * 5 + left + x]);
      }
      windows.insert(window);
    }
  }
  std::set<std::vector<uint8_t>> seen;
  for (int i = 0; i < 200; ++i) {
    const Image out = random_crop_reflect_pad(image, 3, 1, rng);
    ASSERT_EQ(windows.count(out.pixels), 1u);
    seen.insert(out.pixels);
  }
  EXPECT_EQ(seen.size(), windows.size());
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

}  // namespace
}  // namespace data
