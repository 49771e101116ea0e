// CIFAR-10's official binary batches (CifarBinary) and the tools' dataset opener
// (open_dataset) on them: a synthetic cifar-10-batches-bin/ of random pixels and known labels,
// as a folder and as the downloaded cifar-10-binary.tar.gz; split selection; malformed input.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "data/cifar_binary.h"
#include "data/files.h"
#include "data/image_folder.h"
#include "data/open_dataset.h"
#include "data/transforms.h"
#include "engine/error.h"
#include "tests/shared_data.h"

namespace data {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;
using engine::testing::ScopedEnv;

constexpr size_t kRecord = CifarBinary::kRecordBytes;  // 3073
constexpr int kSide = CifarBinary::kSide;
// batches.meta.txt as the official archive has it (a blank line at the end).
constexpr const char* kMeta = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";

// Records with the given labels and random pixel bytes (never all zero).
std::vector<uint8_t> random_records(const std::vector<int>& labels, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<uint8_t> bytes;
  for (int label : labels) {
    bytes.push_back(static_cast<uint8_t>(label));
    for (size_t i = 1; i < kRecord; ++i) bytes.push_back(static_cast<uint8_t>(byte(rng)));
    bytes[bytes.size() - kRecord + 1] |= 1;  // whatever the draw, a record is never all zero
  }
  return bytes;
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  write_file(path, bytes.data(), bytes.size());
}

// root/cifar-10-batches-bin/ as the official archive unpacks: five training batches (here of
// 3, 2, 4, 1 and 2 records), the test batch (7 records) and batches.meta.txt.
class DataCifarBinaryFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directory(dir_);
    const std::vector<std::vector<int>> train_labels = {{6, 9, 9}, {4, 1}, {1, 2, 7, 8}, {3}, {4, 0}};
    for (size_t b = 0; b < train_labels.size(); ++b) {
      const std::vector<uint8_t> bytes = random_records(train_labels[b], 100 + b);
      write_bytes(dir_ + "/data_batch_" + std::to_string(b + 1) + ".bin", bytes);
      train_.insert(train_.end(), bytes.begin(), bytes.end());
    }
    test_ = random_records({3, 8, 8, 0, 6, 6, 1}, 7);
    write_bytes(dir_ + "/test_batch.bin", test_);
    write_file(dir_ + "/batches.meta.txt", kMeta);
  }

  // Every item of `dataset` against the records in `bytes`: label, and each pixel of the
  // planar R, G, B record at the HWC position of the decoded image.
  static void expect_records(const Dataset& dataset, const std::vector<uint8_t>& bytes) {
    ASSERT_EQ(dataset.size() * kRecord, bytes.size());
    for (size_t i = 0; i < dataset.size(); ++i) {
      const uint8_t* record = bytes.data() + i * kRecord;
      const Sample sample = dataset.get(i);
      EXPECT_EQ(sample.label, record[0]) << i;
      EXPECT_EQ(dataset.label(i), record[0]) << i;
      ASSERT_EQ(sample.image.height, kSide);
      ASSERT_EQ(sample.image.width, kSide);
      ASSERT_EQ(sample.image.channels, 3);
      std::vector<uint8_t> expected(3 * kSide * kSide);
      for (int y = 0; y < kSide; ++y) {
        for (int x = 0; x < kSide; ++x) {
          for (int c = 0; c < 3; ++c) expected[(y * kSide + x) * 3 + c] = record[1 + c * kSide * kSide + y * kSide + x];
        }
      }
      ASSERT_EQ(sample.image.pixels, expected) << "item " << i;
    }
  }

  TempDir root_;
  const std::string dir_ = root_.path() + "/cifar-10-batches-bin";
  std::vector<uint8_t> train_, test_;
};

const CifarBinary& as_cifar(const std::unique_ptr<LabeledDataset>& dataset) {
  const auto* cifar = dynamic_cast<const CifarBinary*>(dataset.get());
  if (cifar == nullptr) throw std::runtime_error("open_dataset did not return a CifarBinary");
  return *cifar;
}

TEST(DataCifarBinary, OfficialLabelOrderIsTheSortedOrderOfAnImageFolder) {
  const std::vector<std::string>& official = CifarBinary::official_classes();
  ASSERT_EQ(official.size(), 10u);
  EXPECT_TRUE(std::is_sorted(official.begin(), official.end()));
  // An ImageFolder of CIFAR-10 (class folders made in another order) numbers them alike.
  TempDir root;
  for (size_t k = official.size(); k-- > 0;) {
    fs::create_directory(root.path() + "/" + official[k]);
    write_png(Image(1, 1, 3), root.path() + "/" + official[k] + "/0.png");
  }
  EXPECT_EQ(ImageFolder(root.path()).classes(), official);
}

TEST(DataCifarBinary, OfficialLabelOrderIsTheSharedModelsLabelOrder) {
  REQUIRE_SHARED("models/vit-cifar10-tiny/config.json");
  std::ifstream in(engine::testing::shared_path("models/vit-cifar10-tiny/config.json"));
  const auto names = nlohmann::json::parse(in).at("pretrained_cfg").at("label_names").get<std::vector<std::string>>();
  EXPECT_EQ(names, CifarBinary::official_classes());  // the model trained on the JPEG ImageFolder
}

TEST_F(DataCifarBinaryFiles, OpensTheTestSplitOfTheBatchFolder) {
  const auto dataset = open_dataset(dir_, "test");
  const CifarBinary& cifar = as_cifar(dataset);
  EXPECT_EQ(cifar.size(), 7u);
  EXPECT_EQ(cifar.num_classes(), 10);
  EXPECT_EQ(cifar.classes(), CifarBinary::official_classes());  // read from batches.meta.txt
  EXPECT_EQ(cifar.root(), dir_);
  EXPECT_EQ(cifar.name(4), "test_batch.bin#4");
  expect_records(cifar, test_);
  EXPECT_EQ(cifar.label(1), 8);
  EXPECT_THAT([&] { cifar.get(7); }, ThrowsMessage<engine::Error>(HasSubstr("index 7 out of range (size 7)")));
}

TEST_F(DataCifarBinaryFiles, OpensTheTrainSplitThroughItsParentFolder) {
  const auto dataset = open_dataset(root_.path(), "cifar-10-batches-bin/train");
  const CifarBinary& cifar = as_cifar(dataset);
  EXPECT_EQ(cifar.size(), 12u);  // 3 + 2 + 4 + 1 + 2, in file order
  EXPECT_EQ(cifar.name(0), "data_batch_1.bin#0");
  EXPECT_EQ(cifar.name(3), "data_batch_2.bin#0");
  EXPECT_EQ(cifar.name(11), "data_batch_5.bin#1");
  expect_records(cifar, train_);
  // The parent folder with the bare split finds cifar-10-batches-bin/ inside it, a trailing
  // slash is fine, and a class list naming the same classes is accepted.
  EXPECT_EQ(open_dataset(root_.path(), "test/")->size(), 7u);
  const std::string list = root_.path() + "/classes.txt";
  write_file(list, kMeta);
  EXPECT_EQ(open_dataset(dir_, "train", list)->size(), 12u);
}

TEST_F(DataCifarBinaryFiles, OpensTheDownloadedArchive) {
  const std::string archive = root_.path() + "/cifar-10-binary.tar.gz";
  const std::string command = "tar -czf '" + archive + "' -C '" + root_.path() + "' cifar-10-batches-bin";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  ScopedEnv cache("ENGINE_CACHE_DIR", root_.path() + "/cache");

  const auto test = open_dataset(archive, "test");
  EXPECT_EQ(as_cifar(test).root(), root_.path() + "/cache/cifar-10-binary/cifar-10-batches-bin");
  expect_records(*test, test_);
  const auto train = open_dataset(archive, "cifar-10-batches-bin/train");  // unpacked once, reused
  expect_records(*train, train_);
  EXPECT_EQ(as_cifar(train).classes(), CifarBinary::official_classes());
}

TEST_F(DataCifarBinaryFiles, TheSplitMustBeChosen) {
  EXPECT_THAT([&] { open_dataset(dir_, ""); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(dir_), HasSubstr("'train' or 'test'"))));
  EXPECT_THAT([&] { open_dataset(root_.path(), "cifar-10-batches-bin"); },
              ThrowsMessage<engine::Error>(HasSubstr("'cifar-10-batches-bin/train' or 'cifar-10-batches-bin/test'")));
  EXPECT_THAT([&] { open_dataset(dir_, "validation"); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(dir_ + "/validation' does not exist"),
                                                 HasSubstr("test_batch.bin"))));
}

// Raw bytes, no decoding: a record becomes the same Image as a lossless file of its pixels,
// so every transform (resize, crop, flip, normalisation) treats both alike.
TEST_F(DataCifarBinaryFiles, ImagesGoThroughTheSameTransformsAsDecodedFiles) {
  const auto cifar = open_dataset(dir_, "test");
  // The ImageFolder version: the records as PNGs in the folders of their classes, labelled by
  // the class list (the 7 records leave some classes without images).
  TempDir folder_root;
  const std::string class_list = folder_root.path() + "/classes.txt";
  write_file(class_list, fmt::format("{}\n", fmt::join(cifar->classes(), "\n")));
  for (size_t i = 0; i < cifar->size(); ++i) {
    const std::string dir = folder_root.path() + "/" + cifar->classes().at(cifar->label(i));
    fs::create_directories(dir);
    write_png(cifar->get(i).image, dir + "/" + std::to_string(i) + ".png");
  }
  const auto folder = open_dataset(folder_root.path(), "", class_list);
  ASSERT_EQ(folder->size(), cifar->size());
  const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, stddev[3] = {0.247f, 0.2435f, 0.2616f};
  auto transform = [&](const Image& image, uint64_t seed) {
    std::mt19937_64 rng(seed);
    const Image resized = resize_and_center_crop(image, 36, 0.9, Interp::Bicubic);
    const Image out = hflip(random_crop_reflect_pad(resized, 32, 4, rng));
    std::vector<float> chw(3 * 32 * 32);
    to_normalized_chw(out, mean, stddev, chw.data());
    return chw;
  };
  for (size_t j = 0; j < folder->size(); ++j) {
    const std::string name = folder->name(j);  // "<class>/<record index>.png"
    const size_t i = std::stoul(name.substr(name.find('/') + 1));
    EXPECT_EQ(folder->label(j), cifar->label(i)) << name;
    EXPECT_EQ(folder->get(j).image.pixels, cifar->get(i).image.pixels) << name;
    EXPECT_THAT(transform(cifar->get(i).image, j), ElementsAreArray(transform(folder->get(j).image, j))) << name;
  }
}

TEST_F(DataCifarBinaryFiles, BadInputIsOneErrorNamingTheFile) {
  const std::string test_batch = dir_ + "/test_batch.bin";
  std::vector<uint8_t> truncated(test_.begin(), test_.end() - 100);
  write_bytes(test_batch, truncated);
  EXPECT_THAT([&] { open_dataset(dir_, "test"); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(test_batch), HasSubstr("21411 bytes"),
                                                 HasSubstr("3073-byte records"), HasSubstr("truncated"))));
  // Two-label records of 3074 bytes (CIFAR-100's binary form) are not CIFAR-10's.
  write_bytes(test_batch, std::vector<uint8_t>(2 * 3074, 1));
  EXPECT_THAT([&] { open_dataset(dir_, "test"); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(test_batch), HasSubstr("6148 bytes"))));
  write_bytes(test_batch, {});
  EXPECT_THAT([&] { open_dataset(dir_, "test"); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(test_batch), HasSubstr("empty"))));
  std::vector<uint8_t> bad_label = test_;
  bad_label[2 * kRecord] = 10;
  write_bytes(test_batch, bad_label);
  EXPECT_THAT([&] { open_dataset(dir_, "test"); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(test_batch), HasSubstr("record 2 has label 10"))));
  fs::remove(test_batch);
  EXPECT_THAT([&] { open_dataset(dir_, "test"); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(test_batch), HasSubstr("missing"))));
  // The training split is still complete; a missing training batch is named the same way.
  EXPECT_EQ(open_dataset(dir_, "train")->size(), 12u);
  fs::remove(dir_ + "/data_batch_4.bin");
  EXPECT_THAT([&] { open_dataset(dir_, "train"); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(dir_ + "/data_batch_4.bin"), HasSubstr("missing"))));
  // With every batch gone, batches.meta.txt still marks the folder as CIFAR-10's.
  for (const std::string& batch : CifarBinary::batch_files(Split::Train)) fs::remove(dir_ + "/" + batch);
  EXPECT_THAT([&] { open_dataset(root_.path(), "test"); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(test_batch + "' is missing"))));
}

TEST_F(DataCifarBinaryFiles, BadClassNamesOrPathsAreErrorsNamingThem) {
  const std::string list = root_.path() + "/classes.txt";
  write_file(list, "cat\ndog\n");
  EXPECT_THAT([&] { open_dataset(dir_, "test", list); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(list), HasSubstr("does not match"))));
  const std::string meta = dir_ + "/batches.meta.txt";
  write_file(meta, "airplane\nautomobile\nbird\n");
  EXPECT_THAT([&] { open_dataset(dir_, "test"); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(meta), HasSubstr("3 names, expected 10"))));
  write_file(meta, std::string(kMeta) + "extra\n");
  EXPECT_THAT([&] { open_dataset(dir_, "test"); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(meta), HasSubstr("11 names, expected 10"))));
  fs::remove(meta);  // without it, the official names
  EXPECT_EQ(open_dataset(dir_, "test")->classes(), CifarBinary::official_classes());

  EXPECT_THAT([&] { open_dataset(dir_ + "/test_batch.bin", "test"); },
              ThrowsMessage<engine::Error>(
                  AllOf(HasSubstr(dir_ + "/test_batch.bin"), HasSubstr("is a single file"))));
  EXPECT_THAT([&] { open_dataset(root_.path() + "/nowhere", "test"); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(root_.path() + "/nowhere"),
                                                 HasSubstr("https://www.cs.toronto.edu/~kriz/cifar.html"))));
}

// The opener still gives an ImageFolder for everything else, with the class list.
TEST(DataOpenDataset, OpensAnImageFolderAsBefore) {
  TempDir root;
  for (const char* dir : {"split/b", "split/a"}) fs::create_directories(root.path() + "/" + dir);
  write_png(Image(2, 2, 3), root.path() + "/split/a/x.png");
  write_png(Image(2, 2, 3), root.path() + "/split/b/y.png");
  const auto folder = open_dataset(root.path(), "split");
  ASSERT_NE(dynamic_cast<const ImageFolder*>(folder.get()), nullptr);
  EXPECT_EQ(folder->classes(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(folder->root(), root.path() + "/split");
  EXPECT_EQ(folder->label(1), 1);
  const std::string list = root.path() + "/list.txt";
  write_file(list, "z\nb\na\n");
  EXPECT_EQ(open_dataset(root.path(), "split", list)->label(0), 2);
  // A relative class list found as given (from the working folder) is read from there.
  EXPECT_EQ(open_dataset(root.path(), "split", fs::relative(list).string())->label(0), 2);
  // A mistyped split lists what the folder holds, sorted, hidden entries left out.
  for (const char* file : {"z.txt", "a.txt", ".hidden"}) write_file(root.path() + "/" + file, "");
  EXPECT_THAT([&] { open_dataset(root.path(), "splt"); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(root.path() + "/splt' does not exist"),
                                                 HasSubstr("holds: a.txt list.txt split/ z.txt)"))));
  EXPECT_THAT([] { open_dataset("", ""); }, ThrowsMessage<engine::Error>(HasSubstr("no dataset given (--data")));
}

// A relative class list not found as given is read from inside the unpacked archive, as the
// subdir is (ImageNet samples ship their synsets.txt beside val/).
TEST(DataOpenDataset, FindsARelativeClassListInsideTheArchive) {
  TempDir root;
  fs::create_directories(root.path() + "/sample/val/b");
  write_png(Image(2, 2, 3), root.path() + "/sample/val/b/y.png");
  write_file(root.path() + "/sample/classes.txt", "z\nb\n");
  const std::string archive = root.path() + "/sample.tar";
  const std::string command = "tar -cf '" + archive + "' -C '" + root.path() + "' sample";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  ScopedEnv cache("ENGINE_CACHE_DIR", root.path() + "/cache");
  ASSERT_FALSE(fs::exists("sample/classes.txt"));

  const auto folder = open_dataset(archive, "sample/val", "sample/classes.txt");
  EXPECT_EQ(folder->classes(), (std::vector<std::string>{"z", "b"}));
  EXPECT_EQ(folder->label(0), 1);
  EXPECT_THAT([&] { open_dataset(archive, "sample/val", "sample/synsets.txt"); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr("'sample/synsets.txt' does not exist"),
                                                 HasSubstr(root.path() + "/cache/sample"),
                                                 HasSubstr("classes.txt"))));
}

}  // namespace
}  // namespace data
