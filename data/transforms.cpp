#include "data/transforms.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "data/random.h"
#include "engine/error.h"

namespace data {
namespace {

// ---- Resampling -------------------------------------------------------------------------
//
// Each output pixel is a weighted sum of the input pixels under a filter kernel centred on
// it. When shrinking by a factor s > 1 the kernel is stretched by s, so every input pixel
// contributes (antialiasing). Weights are normalised to sum to 1 per output pixel, then
// stored as 22-bit fixed point and the sum is rounded and clamped to 8 bits after each
// pass, which is how PIL resamples 8-bit images; doing the same makes results bit-exact.

constexpr int kWeightBits = 22;

struct Filter {
  double support;  // kernel half-width at scale 1
  double (*weight)(double);
};

double triangle(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

// Keys' cubic convolution with a = -0.5 (PIL's BICUBIC; torch uses a = -0.75).
double cubic(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
  return 0.0;
}

Filter filter_for(Interp interp) {
  return interp == Interp::Bicubic ? Filter{2.0, cubic} : Filter{1.0, triangle};
}

// Output position o along one axis reads inputs first[o] .. first[o] + taps[o] - 1 with
// fixed-point weights weights[o * max_taps + k].
struct AxisWeights {
  int max_taps = 0;
  std::vector<int> first;
  std::vector<int> taps;
  std::vector<int32_t> weights;
};

int32_t to_fixed_point(double weight) {
  // Rounds half away from zero.
  return static_cast<int32_t>(weight * (1 << kWeightBits) + (weight < 0 ? -0.5 : 0.5));
}

AxisWeights axis_weights(int in_size, int out_size, const Filter& filter) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double inv_filter_scale = 1.0 / filter_scale;
  const double support = filter.support * filter_scale;

  AxisWeights axis;
  axis.max_taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  axis.first.resize(out_size);
  axis.taps.resize(out_size);
  axis.weights.assign(static_cast<size_t>(out_size) * axis.max_taps, 0);
  std::vector<double> weights(axis.max_taps);
  for (int o = 0; o < out_size; ++o) {
    const double center = (o + 0.5) * scale;  // pixel i covers [i, i + 1) in input coordinates
    // The casts truncate; negative starts are then clamped to 0 anyway.
    const int first = std::max(static_cast<int>(center - support + 0.5), 0);
    const int end = std::min(static_cast<int>(center + support + 0.5), in_size);
    double total = 0.0;
    for (int i = first; i < end; ++i) {
      weights[i - first] = filter.weight((i - center + 0.5) * inv_filter_scale);
      total += weights[i - first];
    }
    for (int k = 0; k < end - first; ++k) {
      const double normalised = total != 0.0 ? weights[k] / total : weights[k];
      axis.weights[static_cast<size_t>(o) * axis.max_taps + k] = to_fixed_point(normalised);
    }
    axis.first[o] = first;
    axis.taps[o] = end - first;
  }
  return axis;
}

uint8_t round_and_clamp(int32_t fixed_point_sum) {
  if (fixed_point_sum < 0) return 0;
  return static_cast<uint8_t>(std::min(fixed_point_sum >> kWeightBits, 255));
}

// The two passes share the weights and the arithmetic but not the loop order, which is
// chosen for speed: a horizontal output pixel is a short dot product kept in a register,
// while a vertical output row is accumulated from whole input rows, contiguous loops that
// the compiler can vectorise. int32 sums cannot overflow: |sum| <= 255 * 2^22 *
// sum(|weights|) < 2^31, as the cubic's negative lobes keep sum(|weights|) <= 1.25.
constexpr int32_t kHalf = int32_t{1} << (kWeightBits - 1);  // + 0.5 so the shift rounds

Image resample_horizontal(const Image& in, int out_width, const Filter& filter) {
  const AxisWeights axis = axis_weights(in.width, out_width, filter);
  const int channels = in.channels;
  Image out(in.height, out_width, channels);
  uint8_t* dst = out.pixels.data();
  for (int y = 0; y < in.height; ++y) {
    const uint8_t* row = &in.pixels[static_cast<size_t>(y) * in.width * channels];
    for (int o = 0; o < out_width; ++o) {
      const int32_t* weights = &axis.weights[static_cast<size_t>(o) * axis.max_taps];
      const uint8_t* src = row + static_cast<size_t>(axis.first[o]) * channels;
      for (int c = 0; c < channels; ++c) {
        int32_t sum = kHalf;
        for (int k = 0; k < axis.taps[o]; ++k) sum += weights[k] * src[k * channels + c];
        *dst++ = round_and_clamp(sum);
      }
    }
  }
  return out;
}

Image resample_vertical(const Image& in, int out_height, const Filter& filter) {
  const AxisWeights axis = axis_weights(in.height, out_height, filter);
  const size_t row_len = static_cast<size_t>(in.width) * in.channels;
  Image out(out_height, in.width, in.channels);
  std::vector<int32_t> sums(row_len);
  for (int o = 0; o < out_height; ++o) {
    int32_t* __restrict acc = sums.data();
    std::fill(acc, acc + row_len, kHalf);
    for (int k = 0; k < axis.taps[o]; ++k) {
      const int32_t weight = axis.weights[static_cast<size_t>(o) * axis.max_taps + k];
      const uint8_t* __restrict src = &in.pixels[(axis.first[o] + k) * row_len];
      for (size_t i = 0; i < row_len; ++i) acc[i] += weight * src[i];
    }
    uint8_t* dst = &out.pixels[o * row_len];
    for (size_t i = 0; i < row_len; ++i) dst[i] = round_and_clamp(acc[i]);
  }
  return out;
}

// Python's round() on a float: halves go to the even neighbour, which std::nearbyint does
// in the default rounding mode.
int python_round(double x) { return static_cast<int>(std::nearbyint(x)); }

int reflect(int i, int n) {
  if (i < 0) return -i;
  if (i >= n) return 2 * (n - 1) - i;
  return i;
}

}  // namespace

Image resize(const Image& image, int out_height, int out_width, Interp interp) {
  engine::check(out_height > 0 && out_width > 0, "resize: invalid output size {}x{}", out_height, out_width);
  engine::check(image.height > 0 && image.width > 0, "resize: empty input image");
  const Filter filter = filter_for(interp);
  // Horizontal first, as PIL does: the order changes the 8-bit rounding in between.
  const Image horizontal = out_width != image.width ? resample_horizontal(image, out_width, filter) : image;
  return out_height != image.height ? resample_vertical(horizontal, out_height, filter) : horizontal;
}

Image resize_shorter(const Image& image, int size, Interp interp) {
  engine::check(size > 0, "resize_shorter: invalid size {}", size);
  const int short_side = std::min(image.height, image.width);
  const int long_side = std::max(image.height, image.width);
  engine::check(short_side > 0, "resize_shorter: empty input image");
  const int new_long = static_cast<int>(static_cast<double>(int64_t{size} * long_side) / short_side);
  return image.width <= image.height ? resize(image, new_long, size, interp)
                                     : resize(image, size, new_long, interp);
}

int eval_resize_size(int img_size, double crop_pct) {
  engine::check(crop_pct > 0.0, "eval_resize_size: crop_pct must be positive, got {}", crop_pct);
  return static_cast<int>(std::floor(img_size / crop_pct));
}

Image resize_and_center_crop(const Image& image, int img_size, double crop_pct, Interp interp) {
  const Image resized = resize_shorter(image, eval_resize_size(img_size, crop_pct), interp);
  return center_crop(resized, img_size, img_size);
}

Image crop(const Image& image, int top, int left, int height, int width) {
  engine::check(top >= 0 && left >= 0 && height > 0 && width > 0 && top + height <= image.height &&
                    left + width <= image.width,
                "crop: rectangle top={} left={} {}x{} is not inside the {}x{} image", top, left,
                height, width, image.height, image.width);
  Image out(height, width, image.channels);
  const size_t row_bytes = static_cast<size_t>(width) * image.channels;
  for (int y = 0; y < height; ++y) {
    const uint8_t* src = &image.pixels[(static_cast<size_t>(top + y) * image.width + left) * image.channels];
    std::copy(src, src + row_bytes, &out.pixels[y * row_bytes]);
  }
  return out;
}

Image center_crop(const Image& image, int height, int width) {
  engine::check(height <= image.height && width <= image.width,
                "center_crop: {}x{} crop is larger than the {}x{} image", height, width,
                image.height, image.width);
  return crop(image, python_round((image.height - height) / 2.0),
              python_round((image.width - width) / 2.0), height, width);
}

Image hflip(const Image& image) {
  Image out(image.height, image.width, image.channels);
  for (int y = 0; y < image.height; ++y) {
    for (int x = 0; x < image.width; ++x) {
      for (int c = 0; c < image.channels; ++c) out.at(y, image.width - 1 - x, c) = image.at(y, x, c);
    }
  }
  return out;
}

Image random_crop_reflect_pad(const Image& image, int size, int pad, std::mt19937_64& rng) {
  engine::check(pad >= 0 && pad < image.height && pad < image.width,
                "random_crop_reflect_pad: reflect padding {} needs an image larger than it, got {}x{}",
                pad, image.height, image.width);
  const int padded_height = image.height + 2 * pad;
  const int padded_width = image.width + 2 * pad;
  engine::check(size > 0 && size <= padded_height && size <= padded_width,
                "random_crop_reflect_pad: crop {} does not fit the padded {}x{} image", size,
                padded_height, padded_width);
  const int top = static_cast<int>(uniform_int(rng, 0, padded_height - size));
  const int left = static_cast<int>(uniform_int(rng, 0, padded_width - size));
  Image out(size, size, image.channels);
  for (int y = 0; y < size; ++y) {
    const int src_y = reflect(top + y - pad, image.height);
    for (int x = 0; x < size; ++x) {
      const int src_x = reflect(left + x - pad, image.width);
      for (int c = 0; c < image.channels; ++c) out.at(y, x, c) = image.at(src_y, src_x, c);
    }
  }
  return out;
}

Image random_resized_crop(const Image& image, int size, std::mt19937_64& rng, Interp interp,
                          std::pair<double, double> scale, std::pair<double, double> ratio) {
  engine::check(size > 0, "random_resized_crop: invalid size {}", size);
  engine::check(0.0 < scale.first && scale.first <= scale.second,
                "random_resized_crop: invalid scale range ({}, {})", scale.first, scale.second);
  engine::check(0.0 < ratio.first && ratio.first <= ratio.second,
                "random_resized_crop: invalid ratio range ({}, {})", ratio.first, ratio.second);
  const int height = image.height;
  const int width = image.width;
  const double area = static_cast<double>(height) * width;
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * uniform(rng, scale.first, scale.second);
    const double aspect = std::exp(uniform(rng, std::log(ratio.first), std::log(ratio.second)));
    const int w = python_round(std::sqrt(target_area * aspect));
    const int h = python_round(std::sqrt(target_area / aspect));
    if (0 < w && w <= width && 0 < h && h <= height) {
      const int top = static_cast<int>(uniform_int(rng, 0, height - h));
      const int left = static_cast<int>(uniform_int(rng, 0, width - w));
      return resize(crop(image, top, left, h, w), size, size, interp);
    }
  }
  // No try fitted: the whole image, cut down to the nearest allowed aspect ratio.
  const double in_ratio = static_cast<double>(width) / height;
  int w = width;
  int h = height;
  if (in_ratio < ratio.first) h = python_round(w / ratio.first);
  if (in_ratio > ratio.second) w = python_round(h * ratio.second);
  return resize(crop(image, (height - h) / 2, (width - w) / 2, h, w), size, size, interp);
}

void to_normalized_chw(const Image& image, const float* mean, const float* std, float* out) {
  const size_t plane = static_cast<size_t>(image.height) * image.width;
  for (int c = 0; c < image.channels; ++c) {
    float* dst = out + c * plane;
    for (size_t p = 0; p < plane; ++p) {
      // Same float32 operations as ToTensor (x / 255) then Normalize ((x - mean) / std).
      dst[p] = (static_cast<float>(image.pixels[p * image.channels + c]) / 255.0f - mean[c]) / std[c];
    }
  }
}

}  // namespace data
