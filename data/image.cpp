#include "data/image.h"

#include <algorithm>
#include <limits>
#include <memory>

#include "data/files.h"
#include "data/jpeg.h"
#include "engine/error.h"
#include "engine/safetensors.h"

// The stb implementations are compiled here, file-local (see image.h). Newer
// compilers (GCC 13) warn inside them (unused static functions, partly
// initialised structs): third-party code, so those two warnings are off for it.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

namespace data {

namespace {
size_t checked_pixel_count(int height, int width, int channels) {
  engine::check(height >= 0 && width >= 0 && channels >= 0, "Image: negative size {}x{}x{}", height, width,
                channels);
  return static_cast<size_t>(height) * width * channels;
}

void check_pixel_limit(int width, int height, const std::string& name) {
  engine::check(within_pixel_limit(static_cast<uint64_t>(width), static_cast<uint64_t>(height)),
                "cannot decode image '{}': its header claims {}x{} pixels, more than the {} allowed "
                "(a decompression bomb?)",
                name, width, height, kMaxImagePixels);
}
}  // namespace

Image::Image(int height, int width, int channels)
    : height(height), width(width), channels(channels),
      pixels(checked_pixel_count(height, width, channels)) {}

Image decode_image(const std::string& path) {
  std::vector<uint8_t> bytes = read_file(path);
  return decode_image(bytes.data(), bytes.size(), path);
}

Image decode_image(const uint8_t* bytes, size_t size, const std::string& name) {
  engine::check(size > 0, "cannot decode image '{}': the file is empty", name);
  engine::check(size <= static_cast<size_t>(std::numeric_limits<int>::max()),
                "cannot decode image '{}': {} bytes is too large", name, size);
  if (is_jpeg(bytes, size)) return decode_jpeg(bytes, size, name);
  int width = 0, height = 0, channels_in_file = 0;
  // The header alone: a decompression bomb is refused before stb allocates for it.
  if (stbi_info_from_memory(bytes, static_cast<int>(size), &width, &height, &channels_in_file)) {
    check_pixel_limit(width, height, name);
  }
  std::unique_ptr<stbi_uc, decltype(&stbi_image_free)> decoded(
      stbi_load_from_memory(bytes, static_cast<int>(size), &width, &height, &channels_in_file, 3),
      &stbi_image_free);
  // stbi_failure_reason() is thread-local in stb_image >= 2.26, so this is safe in loader threads.
  engine::check(decoded != nullptr, "cannot decode image '{}': {}", name, stbi_failure_reason());
  Image image(height, width, 3);
  std::copy(decoded.get(), decoded.get() + image.pixels.size(), image.pixels.begin());
  return image;
}

void write_png(const Image& image, const std::string& path) {
  engine::check(image.channels == 1 || image.channels == 3,
                "write_png '{}': {} channels (expected 1 or 3)", path, image.channels);
  // Encoded in memory, then written atomically, as every other output is.
  std::string png;
  const auto append = [](void* context, void* bytes, int size) {
    static_cast<std::string*>(context)->append(static_cast<const char*>(bytes), static_cast<size_t>(size));
  };
  const int ok = stbi_write_png_to_func(append, &png, image.width, image.height, image.channels,
                                        image.pixels.data(), image.width * image.channels);
  engine::check(ok != 0, "cannot encode PNG '{}'", path);
  engine::write_file_atomic(path, png);
}

}  // namespace data
