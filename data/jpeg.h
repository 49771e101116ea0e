// JPEG decoding through libjpeg-turbo, the decoder PIL uses: with the same
// (default) settings — integer IDCT, fancy chroma upsampling — it gives the
// pixels timm's pipeline sees, bit for bit. stb_image's decoder differs by a
// few grey levels, which moved the shared CIFAR-10 ViT's top-1 by ~0.7 points.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "data/image.h"

namespace data {

bool is_jpeg(const uint8_t* bytes, size_t size);  // starts with the SOI marker FF D8
// RGB output (greyscale and CMYK inputs are converted); errors name `name`.
Image decode_jpeg(const uint8_t* bytes, size_t size, const std::string& name);

}  // namespace data
