#include "data/jpeg.h"

#include <cinttypes>
#include <csetjmp>
#include <cstdio>
#include <new>

#include <jpeglib.h>
#include <jerror.h>  // JWRN_JPEG_EOF

#include "engine/error.h"

namespace data {

namespace {

// libjpeg reports fatal errors through error_exit, which must not return:
// jump back to decode_into() and turn the message into an engine::Error there.
struct ErrorManager {
  jpeg_error_mgr base;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  // The row buffer of CMYK images, kept here rather than in a local of
  // decode_into(): a local changed after setjmp has no defined value after the
  // longjmp back, so the jump could not free it.
  uint8_t* row_buffer = nullptr;
};

void on_error(j_common_ptr cinfo) {
  auto* manager = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, manager->message);
  std::longjmp(manager->jump, 1);
}

// Warnings (msg_level -1; higher levels are trace messages) are corrupt data
// that libjpeg decodes through, and so does PIL: extraneous bytes before a
// marker, a damaged entropy segment. The one PIL refuses ("image file is
// truncated") is the data ending before the EOI marker: libjpeg warns
// JWRN_JPEG_EOF and fills the missing rows with grey, which must not pass for
// a good image.
void on_warning(j_common_ptr cinfo, int msg_level) {
  if (msg_level != -1 || cinfo->err->msg_code != JWRN_JPEG_EOF) return;
  auto* manager = reinterpret_cast<ErrorManager*>(cinfo->err);
  std::snprintf(manager->message, sizeof manager->message, "the file is truncated (its data ends too early)");
  std::longjmp(manager->jump, 1);
}

// a * b / 255, rounded to nearest, in integers: PIL's MULDIV255.
int muldiv255(int a, int b) {
  const int t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

// Adobe CMYK JPEGs store inverted inks (stored = 255 - ink); this is PIL's
// conversion of them, with its rounding: channel = (255 - k) - (c (255 - k)) / 255.
void cmyk_to_rgb(const uint8_t* stored, uint8_t* rgb, int width) {
  for (int x = 0; x < width; ++x) {
    const int not_k = stored[4 * x + 3];
    for (int c = 0; c < 3; ++c) {
      const int ink = 255 - stored[4 * x + c];
      rgb[3 * x + c] = static_cast<uint8_t>(not_k - muldiv255(ink, not_k));
    }
  }
}

// The decoded image and the row buffer (manager.row_buffer); false, with the
// message, when memory runs out. (A function of its own: an exception must
// not leave decode_into() without destroying libjpeg's state.)
bool allocate_output(const jpeg_decompress_struct& cinfo, Image* image, ErrorManager& manager) {
  try {
    *image = Image(static_cast<int>(cinfo.output_height), static_cast<int>(cinfo.output_width), 3);
    manager.row_buffer = new uint8_t[static_cast<size_t>(cinfo.output_width) * cinfo.output_components];
  } catch (const std::bad_alloc&) {
    std::snprintf(manager.message, sizeof manager.message, "out of memory for its %ux%u pixels", cinfo.output_width,
                  cinfo.output_height);
    return false;
  }
  return true;
}

// Plain C-style function: no C++ objects with destructors live across the
// setjmp, so the longjmp out of libjpeg is well defined. Returns false and
// fills manager.message on failure; `image` is sized here.
bool decode_into(const uint8_t* bytes, size_t size, Image* image, ErrorManager& manager) {
  jpeg_decompress_struct cinfo;
  cinfo.err = jpeg_std_error(&manager.base);
  manager.base.error_exit = on_error;
  manager.base.emit_message = on_warning;
  if (setjmp(manager.jump)) {
    jpeg_destroy_decompress(&cinfo);
    delete[] manager.row_buffer;
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, bytes, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  // Refused before jpeg_start_decompress and the Image allocate for it (see
  // kMaxImagePixels; the message is written here, as libjpeg errors are, to
  // leave through the longjmp with nothing to destroy).
  if (!within_pixel_limit(cinfo.image_width, cinfo.image_height)) {
    std::snprintf(manager.message, sizeof manager.message,
                  "its header claims %ux%u pixels, more than the %" PRIu64 " allowed (a decompression bomb?)",
                  cinfo.image_width, cinfo.image_height, kMaxImagePixels);
    std::longjmp(manager.jump, 1);
  }
  const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  if (!allocate_output(cinfo, image, manager)) {
    jpeg_destroy_decompress(&cinfo);
    delete[] manager.row_buffer;
    return false;
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    uint8_t* out = image->pixels.data() + static_cast<size_t>(cinfo.output_scanline) * cinfo.output_width * 3;
    JSAMPROW row = cmyk ? manager.row_buffer : out;
    jpeg_read_scanlines(&cinfo, &row, 1);
    if (cmyk) cmyk_to_rgb(manager.row_buffer, out, static_cast<int>(cinfo.output_width));
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  delete[] manager.row_buffer;
  return true;
}

}  // namespace

bool is_jpeg(const uint8_t* bytes, size_t size) { return size >= 2 && bytes[0] == 0xFF && bytes[1] == 0xD8; }

Image decode_jpeg(const uint8_t* bytes, size_t size, const std::string& name) {
  Image image;
  ErrorManager manager;
  engine::check(decode_into(bytes, size, &image, manager), "cannot decode image '{}': {}", name, manager.message);
  return image;
}

}  // namespace data
