// Decoding: real JPEGs, PNG round trips, and errors that name the file.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "data/archive.h"
#include "data/files.h"
#include "data/image.h"
#include "engine/error.h"

namespace data {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

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
}

TEST_F(DataImage, MissingAndEmptyFilesAreErrorsNamingThem) {
  EXPECT_THAT([&] { decode_image(path("missing.jpg")); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(path("missing.jpg")), HasSubstr("No such file"))));
  write_file(path("empty.png"), "");
  EXPECT_THAT([&] { decode_image(path("empty.png")); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(path("empty.png")), HasSubstr("empty"))));
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
  EXPECT_FALSE(std::filesystem::exists(removed));
  EXPECT_TRUE(std::filesystem::is_directory(kept));
  std::filesystem::remove_all(kept);
}

}  // namespace
}  // namespace data
