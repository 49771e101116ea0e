// Decoding: real JPEGs, PNG round trips, and errors that name the file.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <cmath>
#include <cstdio>  // before jpeglib.h, which uses FILE
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <tuple>

#include <jpeglib.h>

#include "data/archive.h"
#include "data/files.h"
#include "data/image.h"
#include "engine/error.h"

namespace data {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

// A JPEG encoded here with libjpeg: `components` samples a pixel given in
// `in_space`, stored as `stored_space`; fill_row(scanline, row) writes each row's samples.
struct JpegLayout {
  int height, width, components;
  J_COLOR_SPACE in_space, stored_space;
  int quality;
};

std::vector<uint8_t> encode_jpeg_rows(const JpegLayout& layout,
                                      const std::function<void(int, std::vector<uint8_t>&)>& fill_row) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr error;
  cinfo.err = jpeg_std_error(&error);
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = layout.width;
  cinfo.image_height = layout.height;
  cinfo.input_components = layout.components;
  cinfo.in_color_space = layout.in_space;
  jpeg_set_defaults(&cinfo);
  jpeg_set_colorspace(&cinfo, layout.stored_space);
  jpeg_set_quality(&cinfo, layout.quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  std::vector<uint8_t> row(static_cast<size_t>(layout.components) * layout.width);
  while (cinfo.next_scanline < cinfo.image_height) {
    fill_row(static_cast<int>(cinfo.next_scanline), row);
    JSAMPROW rows = row.data();
    jpeg_write_scanlines(&cinfo, &rows, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::vector<uint8_t> bytes(buffer, buffer + size);
  std::free(buffer);
  return bytes;
}

// A baseline JPEG of a colour pattern (libjpeg's defaults: YCbCr, quality 75).
std::vector<uint8_t> encode_jpeg(int height, int width) {
  return encode_jpeg_rows({height, width, 3, JCS_RGB, JCS_YCbCr, 75}, [](int scanline, std::vector<uint8_t>& row) {
    for (size_t i = 0; i < row.size(); ++i) row[i] = static_cast<uint8_t>((i * 7 + scanline * 5) % 256);
  });
}

// Where the first marker FF <code> starts.
size_t marker_position(const std::vector<uint8_t>& bytes, uint8_t code) {
  for (size_t i = 0; i + 1 < bytes.size(); ++i) {
    if (bytes[i] == 0xFF && bytes[i + 1] == code) return i;
  }
  ADD_FAILURE() << "no marker FF " << int{code};
  return 0;
}

void put_big_endian_u16(std::vector<uint8_t>& bytes, size_t at, uint16_t value) {
  bytes[at] = static_cast<uint8_t>(value >> 8);
  bytes[at + 1] = static_cast<uint8_t>(value);
}

class DataImage : public ::testing::Test {
 protected:
  std::string path(const std::string& name) const { return dir_.path() + "/" + name; }
  TempDir dir_;
};

TEST_F(DataImage, DecodesRealCifarJpeg) {
  const std::string member = "cifar10/test/airplane/0000.jpg";
  extract_members(data_file("cifar10-jpeg.tar.xz"), dir_.path(), {member});
  const Image image = decode_image(path(member));
  EXPECT_EQ(image.height, 32);
  EXPECT_EQ(image.width, 32);
  EXPECT_EQ(image.channels, 3);

  // The same file cut short is an error naming it, as is garbage with a JPEG extension.
  std::vector<uint8_t> bytes = read_file(path(member));
  write_file(path("truncated.jpg"), bytes.data(), bytes.size() / 2);
  EXPECT_THAT([&] { decode_image(path("truncated.jpg")); },
              ThrowsMessage<engine::Error>(HasSubstr(path("truncated.jpg"))));
  write_file(path("garbage.jpg"), "this is not an image at all");
  EXPECT_THAT([&] { decode_image(path("garbage.jpg")); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(path("garbage.jpg")), HasSubstr("unknown image type"))));
}

// As in PIL: data that ends before the image does is an error, while other corrupt
// data (extraneous bytes before a marker) decodes.
TEST_F(DataImage, JpegCutInItsScanDataIsTruncated) {
  const std::vector<uint8_t> jpeg = encode_jpeg(64, 64);
  const Image reference = decode_image(jpeg.data(), jpeg.size(), "whole.jpg");
  EXPECT_EQ(reference.height, 64);

  const size_t start_of_scan = marker_position(jpeg, 0xDA);
  const size_t end_of_image = jpeg.size() - 2;  // the EOI marker FF D9
  ASSERT_GT(end_of_image, start_of_scan + 100);  // the cut below falls well inside the scan data
  const std::vector<uint8_t> cut(jpeg.begin(), jpeg.begin() + (start_of_scan + end_of_image) / 2);
  write_file(path("cut.jpg"), cut.data(), cut.size());
  EXPECT_THAT([&] { decode_image(path("cut.jpg")); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(path("cut.jpg")), HasSubstr("truncated"))));

  std::vector<uint8_t> junk_before_eoi = jpeg;
  junk_before_eoi.insert(junk_before_eoi.begin() + end_of_image, {0x12, 0x34, 0x56});
  EXPECT_EQ(decode_image(junk_before_eoi.data(), junk_before_eoi.size(), "junk.jpg").pixels, reference.pixels);
}

// Small files whose headers claim far more pixels than kMaxImagePixels fail before
// anything is allocated for them (13 GB for the JPEG, 1.2 GB for the PNG).
TEST_F(DataImage, DecompressionBombsAreRefusedBeforeDecoding) {
  std::vector<uint8_t> jpeg = encode_jpeg(16, 16);
  const size_t frame = marker_position(jpeg, 0xC0);  // SOF0: FF C0, length, precision, height, width
  put_big_endian_u16(jpeg, frame + 5, 65500);
  put_big_endian_u16(jpeg, frame + 7, 65500);
  write_file(path("bomb.jpg"), jpeg.data(), jpeg.size());
  EXPECT_THAT([&] { decode_image(path("bomb.jpg")); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(path("bomb.jpg")), HasSubstr("65500x65500"))));

  write_png(Image(2, 2, 1), path("bomb.png"));
  std::vector<uint8_t> png = read_file(path("bomb.png"));
  // IHDR's width and height are big-endian uint32s at bytes 16 and 20; stb ignores the CRC.
  put_big_endian_u16(png, 18, 20000);
  put_big_endian_u16(png, 22, 20000);
  write_file(path("bomb.png"), png.data(), png.size());
  EXPECT_THAT([&] { decode_image(path("bomb.png")); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(path("bomb.png")), HasSubstr("20000x20000"))));
  // The limit itself is allowed, as in PIL.
  EXPECT_TRUE(within_pixel_limit(kMaxImagePixels / 2, 2));
  EXPECT_FALSE(within_pixel_limit(kMaxImagePixels / 2 + 1, 2));
}

TEST_F(DataImage, PngRoundTripIsExactAndGreyBecomesRgb) {
  Image rgb(3, 5, 3);
  for (size_t i = 0; i < rgb.pixels.size(); ++i) rgb.pixels[i] = static_cast<uint8_t>(i * 17);
  write_png(rgb, path("rgb.png"));
  EXPECT_EQ(decode_image(path("rgb.png")).pixels, rgb.pixels);

  Image grey(2, 2, 1);
  grey.pixels = {0, 100, 200, 255};
  write_png(grey, path("grey.png"));
  const Image decoded = decode_image(path("grey.png"));
  EXPECT_EQ(decoded.channels, 3);
  EXPECT_EQ(decoded.pixels, (std::vector<uint8_t>{0, 0, 0, 100, 100, 100, 200, 200, 200, 255, 255, 255}));

  // Other channel counts are refused, and nothing is written.
  EXPECT_THAT([&] { write_png(Image(2, 2, 4), path("rgba.png")); },
              ThrowsMessage<engine::Error>(
                  AllOf(HasSubstr(path("rgba.png")), HasSubstr("4 channels (expected 1 or 3)"))));
  EXPECT_FALSE(std::filesystem::exists(path("rgba.png")));
}

TEST_F(DataImage, MissingAndEmptyFilesAreErrorsNamingThem) {
  EXPECT_THAT([&] { decode_image(path("missing.jpg")); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(path("missing.jpg")), HasSubstr("No such file"))));
  write_file(path("empty.png"), "");
  EXPECT_THAT([&] { decode_image(path("empty.png")); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(path("empty.png")), HasSubstr("the file is empty"))));
  EXPECT_THAT([&] { decode_image(dir_.path()); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(dir_.path()), HasSubstr("directory"))));
}

TEST(DataFiles, TempDirIsRemovedUnlessReleased) {
  std::string removed, kept;
  {
    TempDir a, b;
    write_file(a.path() + "/x", "x");
    removed = a.path();
    kept = b.release();
    EXPECT_TRUE(b.path().empty());
  }
  EXPECT_EQ(std::filesystem::path(removed).parent_path(), std::filesystem::temp_directory_path());
  EXPECT_FALSE(std::filesystem::exists(removed));
  EXPECT_TRUE(std::filesystem::is_directory(kept));
  std::filesystem::remove_all(kept);
}

TEST(DataImageShape, ANegativeSizeIsAnError) {
  for (const auto& [height, width, channels] : {std::tuple{-2, 3, 3}, {2, -3, 3}, {2, 3, -1}}) {
    EXPECT_THAT([&] { Image(height, width, channels); },
                ThrowsMessage<engine::Error>(
                    HasSubstr(fmt::format("negative size {}x{}x{}", height, width, channels))));
  }
  EXPECT_EQ(Image(2, 3, 1).pixels.size(), 6u);
}

// A failed read or write is an error giving the reason, never a short file taken as whole:
// /proc/self/mem fails its first read (nothing is mapped at address 0), /dev/full every write.
TEST(DataFiles, ReadAndWriteErrorsAreReported) {
  EXPECT_THAT([] { read_file("/proc/self/mem"); },
              ThrowsMessage<engine::Error>(
                  AllOf(HasSubstr("error reading '/proc/self/mem'"), HasSubstr(std::strerror(EIO)))));
  const std::string small = "a few bytes, left in stdio's buffer until the file is closed";
  const std::string large(1 << 20, 'x');  // written through at once
  for (const std::string* text : {&small, &large}) {
    EXPECT_THAT([&] { write_file("/dev/full", *text); },
                ThrowsMessage<engine::Error>(
                    AllOf(HasSubstr("error writing '/dev/full'"), HasSubstr(std::strerror(ENOSPC)))))
        << text->size() << " bytes";
  }
}

// The reason is the failing call's, not a stale errno (set to ENOENT first).
TEST(DataFiles, TempDirErrorsGiveTheReasonOfTheFailingCall) {
  TempDir dir;
  write_file(dir.path() + "/file", "x");
  EXPECT_THAT(
      [&] {
        errno = ENOENT;
        TempDir inside(dir.path() + "/file");
      },
      ThrowsMessage<engine::Error>(AllOf(HasSubstr(dir.path() + "/file"), HasSubstr(std::strerror(ENOTDIR)))));
  write_file(dir.path() + "/.mode-probe", "x");
  EXPECT_THAT(
      [&] {
        errno = ENOENT;
        dir.use_usual_permissions();
      },
      ThrowsMessage<engine::Error>(AllOf(HasSubstr(dir.path()), HasSubstr(std::strerror(EEXIST)))));
}

// A JPEG of `components` random samples a pixel (stored as `stored_space`) at quality 100.
std::vector<uint8_t> encode_random_jpeg(int height, int width, int components, J_COLOR_SPACE in_space,
                                        J_COLOR_SPACE stored_space, uint64_t seed) {
  std::mt19937_64 rng(seed);
  return encode_jpeg_rows({height, width, components, in_space, stored_space, 100}, [&](int, std::vector<uint8_t>& row) {
    for (uint8_t& v : row) v = static_cast<uint8_t>(rng());
  });
}

// The file's samples as libjpeg gives them in `out_space` (its own conversions, no RGB
// forcing): the independent reference for decode_image.
std::vector<uint8_t> libjpeg_samples(const std::vector<uint8_t>& jpeg, J_COLOR_SPACE out_space, int* components) {
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr error;
  cinfo.err = jpeg_std_error(&error);
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, jpeg.data(), static_cast<unsigned long>(jpeg.size()));
  jpeg_read_header(&cinfo, TRUE);
  cinfo.out_color_space = out_space;
  jpeg_start_decompress(&cinfo);
  *components = cinfo.output_components;
  const size_t row_size = static_cast<size_t>(cinfo.output_width) * cinfo.output_components;
  std::vector<uint8_t> samples(row_size * cinfo.output_height);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = samples.data() + cinfo.output_scanline * row_size;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return samples;
}

// A greyscale JPEG becomes RGB with R = G = B = its grey level, as PIL's convert("RGB").
TEST(DataJpeg, GreyscaleBecomesRgbWithEqualChannels) {
  const std::vector<uint8_t> jpeg = encode_random_jpeg(9, 13, 1, JCS_GRAYSCALE, JCS_GRAYSCALE, 5);
  int components = 0;
  const std::vector<uint8_t> grey = libjpeg_samples(jpeg, JCS_GRAYSCALE, &components);
  ASSERT_EQ(components, 1);
  const Image image = decode_image(jpeg.data(), jpeg.size(), "grey.jpg");
  ASSERT_EQ(image.height, 9);
  ASSERT_EQ(image.width, 13);
  ASSERT_EQ(image.channels, 3);
  std::vector<uint8_t> expected;
  for (uint8_t g : grey) expected.insert(expected.end(), {g, g, g});
  EXPECT_EQ(image.pixels, expected);
}

// Adobe CMYK JPEGs, stored as CMYK or (Photoshop's usual) YCCK, store inverted inks: with
// s = 255 - ink, PIL gives channel = round(s_channel * s_k / 255).
TEST(DataJpeg, CmykAndYcckJpegsUsePilsConversion) {
  for (J_COLOR_SPACE stored : {JCS_CMYK, JCS_YCCK}) {
    const std::vector<uint8_t> jpeg = encode_random_jpeg(8, 11, 4, JCS_CMYK, stored, 6);
    int components = 0;
    const std::vector<uint8_t> cmyk = libjpeg_samples(jpeg, JCS_CMYK, &components);
    ASSERT_EQ(components, 4);
    const Image image = decode_image(jpeg.data(), jpeg.size(), "cmyk.jpg");
    ASSERT_EQ(image.height, 8);
    ASSERT_EQ(image.width, 11);
    ASSERT_EQ(image.channels, 3);
    std::vector<uint8_t> expected;
    for (size_t p = 0; p < cmyk.size(); p += 4) {
      for (int c = 0; c < 3; ++c) expected.push_back(static_cast<uint8_t>(std::lround(cmyk[p + c] * cmyk[p + 3] / 255.0)));
    }
    EXPECT_EQ(image.pixels, expected) << (stored == JCS_YCCK ? "YCCK" : "CMYK");
  }
}

}  // namespace
}  // namespace data
