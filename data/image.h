// An 8-bit image in memory; decoding (JPEG through libjpeg-turbo, see jpeg.h;
// PNG and the rest through stb_image) and PNG encoding through stb_image_write.
//
// stb is compiled into image.cpp itself (STB_IMAGE_IMPLEMENTATION with STB_IMAGE_STATIC,
// likewise for stb_image_write), so only the headers of Debian's libstb-dev are needed:
// no -lstb, and no symbol clash if another module links libstb too.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace data {

// Pixels are HWC: row-major, channels interleaved (RGB for colour, 1 channel for grey).
struct Image {
  int height = 0;
  int width = 0;
  int channels = 0;
  std::vector<uint8_t> pixels;

  Image() = default;
  Image(int height, int width, int channels);  // zero-filled

  uint8_t& at(int y, int x, int c) { return pixels[offset(y, x, c)]; }
  uint8_t at(int y, int x, int c) const { return pixels[offset(y, x, c)]; }

 private:
  size_t offset(int y, int x, int c) const {
    return (static_cast<size_t>(y) * width + x) * channels + c;
  }
};

// Decoding refuses an image whose header claims more pixels than this, before
// allocating anything for it: a corrupt or malicious file of a few hundred
// bytes can claim 65500x65500 and have ~13 GB allocated for it. The limit is
// PIL's: it refuses images of over twice its MAX_IMAGE_PIXELS (89,478,485) with
// a DecompressionBombError, so whatever PIL decodes still decodes here.
constexpr uint64_t kMaxImagePixels = 2 * uint64_t{89'478'485};
inline bool within_pixel_limit(uint64_t width, uint64_t height) { return width * height <= kMaxImagePixels; }

// Decodes a JPEG / PNG / BMP / GIF (first frame) file to 3-channel RGB (grey is replicated,
// alpha dropped, CMYK converted, as PIL's convert("RGB") does). A missing, truncated or
// undecodable file, or one of over kMaxImagePixels -> engine::Error naming the path and
// the reason.
Image decode_image(const std::string& path);

// Same for bytes already in memory; `name` is used in error messages.
Image decode_image(const uint8_t* bytes, size_t size, const std::string& name);

// Writes a lossless PNG (1 or 3 channels) atomically: the pictures of the reports, test fixtures.
void write_png(const Image& image, const std::string& path);

}  // namespace data
