// ImageFolder (synthetic and the imagenet-sample with its synset list) and IDX files.
// CIFAR-10's binary batches: test_data_cifar.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>

#include "data/archive.h"
#include "data/files.h"
#include "data/idx.h"
#include "data/image_folder.h"
#include "data/subset.h"
#include "engine/error.h"
#include "tests/expect_error.h"
#include "tests/shared_data.h"

namespace data {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

const std::string kFashionMnist = "/usr/share/datasets/fashion-mnist";

// A small image whose first pixel encodes `tag`, saved as PNG (whatever the extension says:
// stb detects the format from the content).
void write_tagged_image(const std::string& path, uint8_t tag) {
  Image image(2, 3, 3);
  image.pixels[0] = tag;
  write_png(image, path);
}

TEST(DataImageFolder, SortsClassesAndFilesAndFiltersExtensions) {
  TempDir root;
  for (const char* dir : {"b_dog", "a_cat"}) fs::create_directory(root.path() + "/" + dir);
  write_tagged_image(root.path() + "/a_cat/2.PNG", 2);
  write_tagged_image(root.path() + "/a_cat/1.jpeg", 1);
  write_tagged_image(root.path() + "/b_dog/x.JPG", 3);
  write_file(root.path() + "/a_cat/notes.txt", "not an image");
  write_file(root.path() + "/README", "files in the root are not classes");
  write_tagged_image(root.path() + "/stray.png", 4);  // nor are images there
  fs::create_directory(root.path() + "/a_cat/nested.png");  // a folder in a class is no image

  const ImageFolder folder(root.path());
  EXPECT_THAT(folder.classes(), ElementsAre("a_cat", "b_dog"));
  EXPECT_EQ(folder.num_classes(), 2);
  ASSERT_EQ(folder.size(), 3u);
  EXPECT_EQ(folder.name(0), "a_cat/1.jpeg");
  EXPECT_EQ(folder.name(1), "a_cat/2.PNG");
  EXPECT_EQ(folder.name(2), "b_dog/x.JPG");
  EXPECT_EQ(folder.label(1), 0);
  EXPECT_EQ(folder.label(2), 1);
  const Sample sample = folder.get(2);
  EXPECT_EQ(sample.label, 1);
  EXPECT_EQ(sample.image.pixels[0], 3);
  EXPECT_THAT([&] { folder.label(3); }, ThrowsMessage<engine::Error>(HasSubstr("index 3 out of range (size 3)")));
}

TEST(DataSubset, EvenlySpacedItemsCoverASortedFolder) {
  EXPECT_THAT(evenly_spaced_items(10, 4), ElementsAre(0, 2, 5, 7));
  EXPECT_THAT(evenly_spaced_items(3, 5), ElementsAre(0, 1, 2));  // never more than there are
  TempDir root;
  for (int cls = 0; cls < 3; ++cls) {
    fs::create_directory(root.path() + "/c" + std::to_string(cls));
    for (int i = 0; i < 4; ++i) {
      write_tagged_image(root.path() + "/c" + std::to_string(cls) + "/" + std::to_string(i) + ".png",
                         static_cast<uint8_t>(10 * cls + i));
    }
  }
  const ImageFolder folder(root.path());
  const Subset subset(folder, evenly_spaced_items(folder.size(), 3));  // items 0, 4, 8: one per class
  ASSERT_EQ(subset.size(), 3u);
  EXPECT_EQ(subset.num_classes(), 3);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(subset.label(i), static_cast<int64_t>(i));
    EXPECT_EQ(subset.name(i), "c" + std::to_string(i) + "/0.png");
    EXPECT_EQ(subset.get(i).image.pixels[0], 10 * i);
  }
  EXPECT_THAT([&] { Subset(folder, {12}); }, ThrowsMessage<engine::Error>(HasSubstr("index 12")));
}

TEST(DataImageFolder, ErrorsNameTheProblem) {
  TempDir root;
  EXPECT_THAT([&] { ImageFolder(root.path() + "/nope"); },
              ThrowsMessage<engine::Error>(HasSubstr(root.path() + "/nope")));
  EXPECT_THAT([&] { ImageFolder{root.path()}; },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(root.path()), HasSubstr("no .jpg"))));
  fs::create_directory(root.path() + "/empty_class");

  fs::create_directory(root.path() + "/stranger");
  write_tagged_image(root.path() + "/stranger/a.png", 0);
  const std::string list = root.path() + "/classes.txt";
  write_file(list, "empty_class\nknown\n");
  EXPECT_THAT([&] { ImageFolder(root.path(), list); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr("'stranger'"), HasSubstr(list))));
  write_file(list, "a\nb\na\n");
  EXPECT_THAT([&] { read_class_list(list); }, ThrowsMessage<engine::Error>(AllOf(HasSubstr(list), HasSubstr("twice"))));
  write_file(list, "\n  \r\n");
  EXPECT_THAT([&] { read_class_list(list); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(list), HasSubstr("is empty"))));
}

// A pipe named like an image (reading it would block for good) and a broken
// link are refused by name when the folder is listed.
TEST(DataImageFolder, AnImageNameThatIsNoRegularFileIsRefused) {
  TempDir root;
  fs::create_directories(root.path() + "/cat");
  write_tagged_image(root.path() + "/cat/a.png", 3);
  ASSERT_EQ(mkfifo((root.path() + "/cat/pipe.jpg").c_str(), 0644), 0);
  EXPECT_THAT([&] { ImageFolder{root.path()}; },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(root.path() + "/cat/pipe.jpg"), HasSubstr("regular"))));
  fs::remove(root.path() + "/cat/pipe.jpg");
  fs::create_symlink(root.path() + "/cat/gone.png", root.path() + "/cat/link.png");
  EXPECT_THAT([&] { ImageFolder{root.path()}; },
              ThrowsMessage<engine::Error>(HasSubstr(root.path() + "/cat/link.png")));
  fs::remove(root.path() + "/cat/link.png");
  EXPECT_EQ(ImageFolder{root.path()}.size(), 1u);
}

// A fresh scratch folder for one test.
std::string scratch_dir(const std::string& name) {
  const std::string dir = engine::testing::scratch_path(name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// A notebook's checkpoint folder or macOS metadata must not become a class or an image.
TEST(DataImageFolder, HiddenFoldersAndFilesAreSkipped) {
  const std::string root = scratch_dir("engine_image_folder_hidden");
  for (const char* dir : {"/.ipynb_checkpoints", "/a_cat", "/b_dog"}) fs::create_directory(root + dir);
  write_tagged_image(root + "/.ipynb_checkpoints/stale.png", 9);
  write_tagged_image(root + "/a_cat/1.png", 1);
  write_tagged_image(root + "/a_cat/._1.png", 8);
  write_tagged_image(root + "/b_dog/2.png", 2);

  const ImageFolder folder(root);
  EXPECT_THAT(folder.classes(), ElementsAre("a_cat", "b_dog"));
  ASSERT_EQ(folder.size(), 2u);
  EXPECT_EQ(folder.name(0), "a_cat/1.png");
  EXPECT_EQ(folder.name(1), "b_dog/2.png");
  EXPECT_EQ(folder.label(1), 1);
}

// An empty folder would take a label and shift the labels of every class after it.
TEST(DataImageFolder, AnEmptyClassFolderIsAnErrorWithoutAClassList) {
  const std::string root = scratch_dir("engine_image_folder_empty");
  for (const char* dir : {"/a_cat", "/b_empty", "/c_dog"}) fs::create_directory(root + dir);
  write_tagged_image(root + "/a_cat/1.png", 1);
  write_file(root + "/b_empty/notes.txt", "not an image");
  write_tagged_image(root + "/c_dog/2.png", 2);
  EXPECT_THAT([&] { ImageFolder{root}; },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr("'" + root + "/b_empty'"), HasSubstr("is empty"),
                                                 HasSubstr("at least one"))));

  // With a class list the labels are fixed, and a class may have no images in this split.
  const std::string list = scratch_dir("engine_image_folder_empty_list") + "/classes.txt";
  write_file(list, "a_cat\nb_empty\nc_dog\nd_unseen\n");
  const ImageFolder folder(root, list);
  EXPECT_EQ(folder.num_classes(), 4);
  ASSERT_EQ(folder.size(), 2u);
  EXPECT_EQ(folder.label(0), 0);
  EXPECT_EQ(folder.label(1), 2);
}

// The sample holds 50 of the 1000 classes; labels must be their line in synsets.txt.
TEST(DataImageFolder, ImagenetSampleUsesGlobalSynsetIndices) {
  TempDir cache;
  const std::string root = extract_archive_once(data_file("imagenet-sample.tar"), cache.path()) + "/imagenet-sample";
  const std::string synsets_file = root + "/synsets.txt";
  const ImageFolder folder(root + "/val", synsets_file);

  std::vector<std::string> synsets;
  std::ifstream in(synsets_file);
  for (std::string line; std::getline(in, line);) synsets.push_back(line);
  ASSERT_EQ(synsets.size(), 1000u);

  EXPECT_EQ(folder.num_classes(), 1000);
  ASSERT_EQ(folder.size(), 50u);
  for (size_t i = 0; i < folder.size(); ++i) {
    const std::string synset = folder.name(i).substr(0, folder.name(i).find('/'));
    EXPECT_EQ(synsets.at(folder.label(i)), synset) << folder.name(i);
  }
  EXPECT_EQ(folder.name(0), "n01440764/n01440764_tench.JPEG");
  EXPECT_EQ(folder.label(0), 0);     // tench is ImageNet class 0
  EXPECT_EQ(folder.label(49), 980);  // volcano
  EXPECT_EQ(folder.get(49).label, 980);
}

TEST(DataIdx, ReadsFashionMnistTestSet) {
  ASSERT_TRUE(fs::exists(kFashionMnist)) << kFashionMnist << " is missing: apt-get install dataset-fashion-mnist";
  const IdxDataset fashion = IdxDataset::from_dir(kFashionMnist, Split::Test);
  ASSERT_EQ(fashion.size(), 10000u);
  EXPECT_EQ(fashion.height(), 28);
  EXPECT_EQ(fashion.width(), 28);
  EXPECT_EQ(fashion.num_classes(), 10);
  std::vector<int> per_class(10);
  for (size_t i = 0; i < fashion.size(); ++i) per_class.at(fashion.label(i))++;
  EXPECT_THAT(per_class, ::testing::Each(1000));  // the test set is balanced
  const Sample sample = fashion.get(0);
  EXPECT_EQ(sample.image.channels, 1);
  EXPECT_EQ(sample.image.pixels.size(), 28u * 28u);
  EXPECT_EQ(fashion.name(3), "t10k-images-idx3-ubyte.gz#3");
}

std::vector<uint8_t> idx_header(uint8_t dims, std::vector<uint32_t> sizes) {
  std::vector<uint8_t> bytes = {0, 0, 0x08, dims};
  for (uint32_t s : sizes) {
    for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<uint8_t>(s >> shift));
  }
  return bytes;
}

TEST(DataIdx, PlainFilesAndCorruptFiles) {
  TempDir dir;
  const std::string images = dir.path() + "/images", labels = dir.path() + "/labels";
  std::vector<uint8_t> image_bytes = idx_header(3, {2, 2, 3});
  for (int i = 0; i < 12; ++i) image_bytes.push_back(static_cast<uint8_t>(i));
  std::vector<uint8_t> label_bytes = idx_header(1, {2});
  label_bytes.insert(label_bytes.end(), {4, 3});
  write_file(images, image_bytes.data(), image_bytes.size());
  write_file(labels, label_bytes.data(), label_bytes.size());

  const IdxDataset idx(images, labels);
  EXPECT_EQ(idx.num_classes(), 5);  // classes need not start at 0 (EMNIST letters start at 1)
  EXPECT_EQ(idx.get(1).image.pixels, (std::vector<uint8_t>{6, 7, 8, 9, 10, 11}));

  EXPECT_THAT([&] { IdxDataset(labels, labels); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(labels), HasSubstr("magic"))));
  write_file(images, image_bytes.data(), image_bytes.size() - 1);  // truncated
  EXPECT_THAT([&] { IdxDataset(images, labels); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(images), HasSubstr("12 bytes"))));
  write_file(images, "\x1f\x8b garbage that claims to be gzip");
  EXPECT_THAT([&] { IdxDataset(images, labels); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(images), HasSubstr("unknown compression method"))));
}

// The header must be exactly 0, 0, 0x08, the number of dimensions and each dimension (big
// endian), followed by exactly as many bytes as they promise; anything else is an error naming
// the file.
TEST(DataIdx, AHeaderOrSizeOffByAnyByteIsAnError) {
  TempDir dir;
  const std::string images = dir.path() + "/images", labels = dir.path() + "/labels";
  std::vector<uint8_t> label_bytes = idx_header(1, {2});
  label_bytes.insert(label_bytes.end(), {1, 0});
  write_file(labels, label_bytes.data(), label_bytes.size());
  std::vector<uint8_t> image_bytes = idx_header(3, {2, 1, 1});
  image_bytes.insert(image_bytes.end(), {7, 9});
  const auto images_error = [&](const std::vector<uint8_t>& bytes) {
    write_file(images, bytes.data(), bytes.size());
    return engine::testing::error_of([&] { IdxDataset(images, labels); });
  };
  const std::string bad_magic = "'" + images + "' is not an IDX file of unsigned bytes with 3 dimensions";

  std::vector<uint8_t> bytes = image_bytes;
  bytes[0] = 1;
  EXPECT_THAT(images_error(bytes), HasSubstr(bad_magic));
  EXPECT_THAT(images_error({image_bytes.begin(), image_bytes.begin() + 8}), HasSubstr(bad_magic));  // cut in the header
  bytes = image_bytes;
  bytes.push_back(5);  // a byte more than promised
  EXPECT_THAT(images_error(bytes), HasSubstr("'" + images + "': header promises 2 bytes of data, found 3"));
  bytes = idx_header(3, {0x01000001, 1, 1});  // the most significant byte of a dimension counts too
  bytes.push_back(7);
  EXPECT_THAT(images_error(bytes), HasSubstr("promises 16777217 bytes of data, found 1"));
  // An images file (3 dimensions) given as the labels.
  write_file(images, image_bytes.data(), image_bytes.size());
  EXPECT_THAT([&] { IdxDataset(images, images); },
              ThrowsMessage<engine::Error>(
                  HasSubstr("'" + images + "' is not an IDX file of unsigned bytes with 1 dimensions")));
  const IdxDataset idx(images, labels);
  EXPECT_EQ(idx.get(1).image.pixels, std::vector<uint8_t>{9});
  EXPECT_THAT([&] { idx.get(2); }, ThrowsMessage<engine::Error>(HasSubstr("index 2 out of range (size 2)")));
  label_bytes = idx_header(1, {0});
  write_file(labels, label_bytes.data(), label_bytes.size());
  EXPECT_THAT(images_error(idx_header(3, {0, 1, 1})), HasSubstr("'" + images + "' holds no images"));
}

// A corrupt header whose dimensions multiply past 2^64 must not wrap around to the file's
// size (0 here) and pass: the first get() would then allocate 2^60 bytes.
TEST(DataIdx, DimensionsWhoseProductOverflowsAreAnError) {
  TempDir dir;
  const std::string images = dir.path() + "/images", labels = dir.path() + "/labels";
  const std::vector<uint8_t> image_bytes = idx_header(3, {16, 1u << 30, 1u << 30});
  std::vector<uint8_t> label_bytes = idx_header(1, {16});
  for (uint8_t label = 0; label < 16; ++label) label_bytes.push_back(label);
  write_file(images, image_bytes.data(), image_bytes.size());
  write_file(labels, label_bytes.data(), label_bytes.size());
  EXPECT_THAT([&] { IdxDataset(images, labels); },
              ThrowsMessage<engine::Error>(
                  HasSubstr("'" + images + "': header promises 16 x 1073741824 x 1073741824 bytes of data, found 0")));
}

// One corrupt label byte (200 among Fashion-MNIST's 0-9) would make 201 classes.
TEST(DataIdx, AClassMissingBetweenTheSmallestAndLargestLabelIsAnError) {
  TempDir dir;
  const std::string images = dir.path() + "/images", labels = dir.path() + "/labels";
  std::vector<uint8_t> image_bytes = idx_header(3, {6, 1, 1});
  image_bytes.resize(image_bytes.size() + 6);
  write_file(images, image_bytes.data(), image_bytes.size());
  const auto write_labels = [&](const std::vector<uint8_t>& values) {
    std::vector<uint8_t> bytes = idx_header(1, {6});
    bytes.insert(bytes.end(), values.begin(), values.end());
    write_file(labels, bytes.data(), bytes.size());
  };

  write_labels({0, 1, 2, 200, 4, 1});
  EXPECT_THAT([&] { IdxDataset(images, labels); },
              ThrowsMessage<engine::Error>(
                  AllOf(HasSubstr(labels), HasSubstr("from 0 to 200 but classes 3, 5-199 have no example"))));
  // A test set may hold a subset of the classes (its labels are checked against the train set's).
  EXPECT_EQ(IdxDataset(images, labels, /*every_class_present=*/false).num_classes(), 201);
  write_labels({0, 1, 2, 3, 4, 1});
  EXPECT_EQ(IdxDataset(images, labels).num_classes(), 5);
}

// A class list edited on Windows (CRLF line ends), with stray spaces and blank lines, names
// the same classes: "b\r" is no class of its own, so the folders keep their listed labels.
// As a Windows editor saves it: a UTF-8 byte-order mark first, CRLF line ends.
TEST(DataImageFolder, AClassListFromWindowsGivesTheListedLabels) {
  TempDir root;
  for (const char* dir : {"a", "b"}) fs::create_directory(root.path() + "/" + dir);
  write_tagged_image(root.path() + "/a/x.png", 1);
  write_tagged_image(root.path() + "/b/y.png", 2);
  const std::string list = root.path() + "/classes.txt";
  write_file(list, "\xEF\xBB\xBF  c\r\n\r\nb \r\n\ta\r\n");
  const ImageFolder folder(root.path(), list);
  EXPECT_THAT(folder.classes(), ElementsAre("c", "b", "a"));
  ASSERT_EQ(folder.size(), 2u);
  EXPECT_EQ(folder.label(0), 2);  // a/x.png
  EXPECT_EQ(folder.label(1), 1);  // b/y.png
  EXPECT_EQ(folder.get(0).image.pixels[0], 1);
}

// Images of height 2 and width 3, each a different run of random bytes: the shape comes
// from the header's dimensions in order, and item i is the i-th block of 6 bytes.
TEST(DataIdx, NonSquareImagesKeepTheirShapeAndBytes) {
  TempDir dir;
  const std::string images = dir.path() + "/images", labels = dir.path() + "/labels";
  std::mt19937_64 rng(17);
  std::vector<uint8_t> pixels(3 * 2 * 3);
  for (uint8_t& p : pixels) p = static_cast<uint8_t>(rng() | 1);
  std::vector<uint8_t> image_bytes = idx_header(3, {3, 2, 3});
  image_bytes.insert(image_bytes.end(), pixels.begin(), pixels.end());
  std::vector<uint8_t> label_bytes = idx_header(1, {3});
  label_bytes.insert(label_bytes.end(), {2, 0, 1});
  write_file(images, image_bytes.data(), image_bytes.size());
  write_file(labels, label_bytes.data(), label_bytes.size());

  const IdxDataset idx(images, labels);
  EXPECT_EQ(idx.height(), 2);
  EXPECT_EQ(idx.width(), 3);
  for (size_t i = 0; i < 3; ++i) {
    const Sample sample = idx.get(i);
    EXPECT_EQ(sample.image.height, 2);
    EXPECT_EQ(sample.image.width, 3);
    EXPECT_EQ(sample.image.channels, 1);
    EXPECT_EQ(sample.image.pixels, std::vector<uint8_t>(pixels.begin() + 6 * i, pixels.begin() + 6 * (i + 1)));
    EXPECT_EQ(sample.label, label_bytes[8 + i]);
  }
}

// More labels than images, and values that are not unsigned bytes (type 0x0D: float32),
// are errors naming the files.
TEST(DataIdx, CountMismatchAndOtherValueTypesAreErrors) {
  TempDir dir;
  const std::string images = dir.path() + "/images", labels = dir.path() + "/labels";
  std::vector<uint8_t> image_bytes = idx_header(3, {2, 1, 1});
  image_bytes.insert(image_bytes.end(), {7, 9});
  std::vector<uint8_t> label_bytes = idx_header(1, {3});
  label_bytes.insert(label_bytes.end(), {0, 1, 0});
  write_file(images, image_bytes.data(), image_bytes.size());
  write_file(labels, label_bytes.data(), label_bytes.size());
  EXPECT_THAT([&] { IdxDataset(images, labels); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(images), HasSubstr("2 images"), HasSubstr(labels),
                                                 HasSubstr("3 labels"))));

  label_bytes = idx_header(1, {2});
  label_bytes.insert(label_bytes.end(), {0, 1});
  write_file(labels, label_bytes.data(), label_bytes.size());
  EXPECT_EQ(IdxDataset(images, labels).size(), 2u);
  std::vector<uint8_t> floats = idx_header(3, {2, 1, 1});
  floats[2] = 0x0D;
  floats.resize(floats.size() + 2 * 4, 0x3f);
  write_file(images, floats.data(), floats.size());
  EXPECT_THAT([&] { IdxDataset(images, labels); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(images), HasSubstr("magic"))));
}

// Files come in sorted (byte) order whatever order the directory lists them in: 40 files
// written in a shuffled order.
TEST(DataImageFolder, FilesAreSortedByName) {
  TempDir root;
  fs::create_directory(root.path() + "/c");
  std::vector<std::string> names;
  for (int k = 0; k < 40; ++k) names.push_back(fmt::format("{:02d}_{}.png", (k * 17) % 40, k % 3 == 0 ? "Z" : "a"));
  std::mt19937_64 rng(5);
  std::shuffle(names.begin(), names.end(), rng);
  for (const std::string& name : names) write_tagged_image(root.path() + "/c/" + name, 1);
  const ImageFolder folder(root.path());
  std::vector<std::string> expected;
  for (const std::string& name : names) expected.push_back("c/" + name);
  std::sort(expected.begin(), expected.end());
  std::vector<std::string> got;
  for (size_t i = 0; i < folder.size(); ++i) got.push_back(folder.name(i));
  EXPECT_EQ(got, expected);
}

// from_dir checks that every class is present in the train split only: a test split may
// hold a subset (labels 0 and 2 here), the same labels as a train split are an error.
TEST(DataIdx, FromDirLetsOnlyTheTestSplitMissAClass) {
  TempDir dir;
  for (const char* prefix : {"train", "t10k"}) {
    std::vector<uint8_t> image_bytes = idx_header(3, {3, 1, 2});
    image_bytes.insert(image_bytes.end(), {1, 2, 3, 4, 5, 6});
    std::vector<uint8_t> label_bytes = idx_header(1, {3});
    label_bytes.insert(label_bytes.end(), {2, 0, 2});
    write_file(dir.path() + "/" + prefix + "-images-idx3-ubyte", image_bytes.data(), image_bytes.size());
    write_file(dir.path() + "/" + prefix + "-labels-idx1-ubyte", label_bytes.data(), label_bytes.size());
  }
  const IdxDataset test = IdxDataset::from_dir(dir.path(), Split::Test);
  EXPECT_EQ(test.size(), 3u);
  EXPECT_EQ(test.num_classes(), 3);
  EXPECT_EQ(test.name(1), "t10k-images-idx3-ubyte#1");
  EXPECT_THAT([&] { IdxDataset::from_dir(dir.path(), Split::Train); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr("train-labels-idx1-ubyte"), HasSubstr("classes 1 have no example"))));
}

}  // namespace
}  // namespace data
