// DataLoader: determinism across worker counts and epochs, batching, bad images, errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <numeric>
#include <set>
#include <thread>

#include "data/files.h"
#include "data/image_folder.h"
#include "data/loader.h"
#include "data/random.h"
#include "engine/error.h"

namespace data {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

// Item i: a 2x2 RGB image filled with i, label i % 3.
class CountingDataset : public Dataset {
 public:
  explicit CountingDataset(size_t size) : size_(size) {}
  size_t size() const override { return size_; }
  int num_classes() const override { return 3; }
  Sample get(size_t i) const override {
    Image image(2, 2, 3);
    std::fill(image.pixels.begin(), image.pixels.end(), static_cast<uint8_t>(i));
    return {image, label(i)};
  }
  int64_t label(size_t i) const override { return static_cast<int64_t>(i % 3); }
  std::string name(size_t i) const override { return "item" + std::to_string(i); }

 private:
  size_t size_;
};

// Pixel value plus random noise: the output depends on the sample's RNG stream.
void noisy_transform(const Image& image, float* out, std::mt19937_64& rng) {
  for (size_t i = 0; i < image.pixels.size(); ++i) out[i] = image.pixels[i] + static_cast<float>(uniform01(rng));
}

LoaderOptions small_options(int num_workers) {
  LoaderOptions options;
  options.batch_size = 7;
  options.shuffle = true;
  options.num_workers = num_workers;
  options.prefetch_batches = 3;
  options.seed = 42;
  options.channels = 3;
  options.height = 2;
  options.width = 2;
  return options;
}

std::vector<Batch> load_epoch(DataLoader& loader, int64_t epoch) {
  loader.start_epoch(epoch);
  std::vector<Batch> batches;
  for (Batch batch; loader.next(batch);) batches.push_back(std::move(batch));
  return batches;
}

std::vector<size_t> indices_of(const std::vector<Batch>& batches) {
  std::vector<size_t> indices;
  for (const Batch& b : batches) indices.insert(indices.end(), b.indices.begin(), b.indices.end());
  return indices;
}

// Each batch row holds its dataset item: CountingDataset's label, and its
// pixel value i under noise in [0, 1).
void expect_rows_hold_their_items(const Batch& batch) {
  ASSERT_EQ(batch.indices.size(), static_cast<size_t>(batch.n));
  ASSERT_EQ(batch.labels.size(), static_cast<size_t>(batch.n));
  const size_t row = static_cast<size_t>(batch.c) * batch.h * batch.w;
  ASSERT_EQ(batch.images.size(), batch.n * row);
  for (int r = 0; r < batch.n; ++r) {
    const size_t item = batch.indices[r];
    EXPECT_EQ(batch.labels[r], static_cast<int64_t>(item % 3)) << "row " << r;
    for (size_t p = 0; p < row; ++p) {
      const float value = batch.images[r * row + p];
      ASSERT_TRUE(value >= item && value < item + 1) << "row " << r << " (item " << item << ") holds " << value;
    }
  }
}

TEST(DataLoader, SameBatchesForAnyNumberOfWorkers) {
  const CountingDataset dataset(50);
  DataLoader sync(dataset, noisy_transform, small_options(0));
  DataLoader one(dataset, noisy_transform, small_options(1));
  DataLoader three(dataset, noisy_transform, small_options(3));
  for (int64_t epoch : {0, 1}) {
    const std::vector<Batch> expected = load_epoch(one, epoch);
    ASSERT_EQ(expected.size(), 8u);  // 7 full batches and one of 1
    EXPECT_EQ(expected.back().n, 1);
    for (const Batch& batch : expected) expect_rows_hold_their_items(batch);
    for (DataLoader* loader : {&sync, &three}) {
      const std::vector<Batch> got = load_epoch(*loader, epoch);
      ASSERT_EQ(got.size(), expected.size());
      for (size_t b = 0; b < got.size(); ++b) {
        EXPECT_EQ(got[b].indices, expected[b].indices);
        EXPECT_EQ(got[b].labels, expected[b].labels);
        EXPECT_EQ(got[b].images, expected[b].images);  // bit-identical augmentation
        EXPECT_EQ(std::vector<int>({got[b].c, got[b].h, got[b].w}), std::vector<int>({3, 2, 2}));
      }
    }
  }
}

TEST(DataLoader, EachEpochIsADifferentPermutation) {
  const CountingDataset dataset(50);
  DataLoader loader(dataset, noisy_transform, small_options(2));
  const std::vector<size_t> epoch0 = indices_of(load_epoch(loader, 0));
  const std::vector<size_t> epoch1 = indices_of(load_epoch(loader, 1));
  EXPECT_NE(epoch0, epoch1);
  EXPECT_EQ(indices_of(load_epoch(loader, 0)), epoch0);  // depends only on (seed, epoch)
  std::vector<size_t> sorted = epoch1;
  std::sort(sorted.begin(), sorted.end());
  std::vector<size_t> all(50);
  std::iota(all.begin(), all.end(), size_t{0});
  EXPECT_EQ(sorted, all);

  LoaderOptions in_order = small_options(2);
  in_order.shuffle = false;
  in_order.drop_last = true;
  DataLoader sequential(dataset, noisy_transform, in_order);
  EXPECT_EQ(sequential.num_batches(), 7u);
  EXPECT_EQ(indices_of(load_epoch(sequential, 3)), std::vector<size_t>(all.begin(), all.begin() + 49));
}

// Augmentations are redrawn every epoch: a sample's RNG stream depends on the
// epoch as well as on the sample, so no image repeats its crop or flip from
// one epoch to the next. Within an epoch the streams differ between samples.
TEST(DataLoader, EachEpochRedrawsEverySamplesAugmentation) {
  const CountingDataset dataset(20);
  LoaderOptions options = small_options(2);
  options.shuffle = false;
  DataLoader loader(dataset, noisy_transform, options);
  // The noise of item i's first value, in each epoch (pixel value i removed).
  auto first_noise = [&](int64_t epoch) {
    std::vector<float> noise(dataset.size());
    for (const Batch& batch : load_epoch(loader, epoch)) {
      const size_t row = static_cast<size_t>(batch.c) * batch.h * batch.w;
      for (int r = 0; r < batch.n; ++r) {
        noise[batch.indices[r]] = batch.images[r * row] - static_cast<float>(batch.indices[r]);
      }
    }
    return noise;
  };
  const std::vector<float> epoch0 = first_noise(0), epoch1 = first_noise(1);
  EXPECT_EQ(first_noise(0), epoch0);  // the same epoch draws the same values again
  for (size_t i = 0; i < dataset.size(); ++i) EXPECT_NE(epoch0[i], epoch1[i]) << "item " << i;
  EXPECT_EQ(std::set<float>(epoch0.begin(), epoch0.end()).size(), dataset.size());
}

TEST(DataLoader, StartingMidEpochYieldsTheRemainingBatchesUnchanged) {
  const CountingDataset dataset(50);
  DataLoader loader(dataset, noisy_transform, small_options(2));
  const std::vector<Batch> whole = load_epoch(loader, 1);
  loader.start_epoch(1, 5);
  std::vector<Batch> rest;
  for (Batch batch; loader.next(batch);) rest.push_back(std::move(batch));
  ASSERT_EQ(rest.size(), whole.size() - 5);
  for (size_t b = 0; b < rest.size(); ++b) {
    EXPECT_EQ(rest[b].indices, whole[b + 5].indices);
    EXPECT_EQ(rest[b].images, whole[b + 5].images);
  }
  EXPECT_THAT([&] { loader.start_epoch(1, 9); }, ThrowsMessage<engine::Error>(HasSubstr("first batch 9")));
  loader.start_epoch(1, 8);  // a run saved at the end of the epoch resumes with nothing left of it
  Batch batch;
  EXPECT_FALSE(loader.next(batch));
}

// A folder of 5 good PNGs and one corrupt JPEG.
class DataLoaderBadImages : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directory(root_.path() + "/cls");
    for (int i = 0; i < 5; ++i) write_png(Image(2, 2, 3), root_.path() + "/cls/" + std::to_string(i) + ".png");
    write_file(root_.path() + "/cls/3_bad.jpg", "\xff\xd8\xff garbage");
  }
  LoaderOptions options(bool skip) const {
    LoaderOptions o = small_options(2);
    o.batch_size = 2;
    o.skip_bad_images = skip;
    return o;
  }
  TempDir root_;
};

TEST_F(DataLoaderBadImages, SkippedAndCounted) {
  const ImageFolder folder(root_.path());
  ASSERT_EQ(folder.size(), 6u);
  DataLoader loader(folder, noisy_transform, options(true));
  size_t samples = 0;
  for (const Batch& batch : load_epoch(loader, 0)) samples += batch.n;
  EXPECT_EQ(samples, 5u);
  EXPECT_EQ(loader.bad_images(), 1u);
  EXPECT_THAT(loader.bad_image_names(), ElementsAre("cls/3_bad.jpg"));
}

// With one image a batch, the corrupt one's batch holds nothing: it is not yielded.
TEST_F(DataLoaderBadImages, ABatchOfOnlySkippedImagesIsNotYielded) {
  const ImageFolder folder(root_.path());
  LoaderOptions one_a_batch = options(true);
  one_a_batch.batch_size = 1;
  DataLoader loader(folder, noisy_transform, one_a_batch);
  ASSERT_EQ(loader.num_batches(), 6u);
  const std::vector<Batch> batches = load_epoch(loader, 0);
  ASSERT_EQ(batches.size(), 5u);
  for (const Batch& batch : batches) EXPECT_NE(folder.name(batch.indices.at(0)), "cls/3_bad.jpg");
}

TEST_F(DataLoaderBadImages, WithoutSkippingTheErrorNamesTheFile) {
  const ImageFolder folder(root_.path());
  DataLoader loader(folder, noisy_transform, options(false));
  EXPECT_THAT([&] { load_epoch(loader, 0); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(root_.path() + "/cls/3_bad.jpg"), HasSubstr("cannot decode"))));
  Batch batch;
  EXPECT_FALSE(loader.next(batch));  // the failed epoch is over
}

TEST(DataLoader, TransformErrorsReachTheConsumerInOrder) {
  const CountingDataset dataset(30);
  LoaderOptions options = small_options(3);
  options.shuffle = false;
  const Transform failing = [](const Image& image, float* out, std::mt19937_64& rng) {
    engine::check(image.pixels[0] != 20, "transform failed on item 20");
    noisy_transform(image, out, rng);
  };
  DataLoader loader(dataset, failing, options);
  loader.start_epoch(0);
  Batch batch;
  for (int b = 0; b < 2; ++b) ASSERT_TRUE(loader.next(batch));  // items 0..13 come first
  EXPECT_THAT([&] { loader.next(batch); }, ThrowsMessage<engine::Error>(HasSubstr("item 20")));
}

// An epoch that failed to start (first batch past its end) leaves no epoch to
// read: next() is refused rather than yielding the abandoned epoch's batches
// (or, with workers, waiting for batches no worker will make).
TEST(DataLoader, NextAfterAFailedStartIsRefused) {
  const CountingDataset dataset(20);
  DataLoader loader(dataset, noisy_transform, small_options(0));
  loader.start_epoch(0);
  Batch batch;
  ASSERT_TRUE(loader.next(batch));
  EXPECT_THROW(loader.start_epoch(1, 99), engine::Error);
  EXPECT_THAT([&] { loader.next(batch); }, ThrowsMessage<engine::Error>(HasSubstr("before start_epoch")));
}

TEST(DataLoader, AbandoningAnEpochShutsDownCleanly) {
  const CountingDataset dataset(1000);
  DataLoader loader(dataset, noisy_transform, small_options(3));
  loader.start_epoch(0);
  Batch batch;
  ASSERT_TRUE(loader.next(batch));
  loader.start_epoch(1);  // restarts with prefetched batches in flight
  ASSERT_TRUE(loader.next(batch));
}  // the destructor joins the workers mid-epoch

TEST(DataLoader, RejectsBadOptions) {
  const CountingDataset dataset(4);
  LoaderOptions no_shape = small_options(1);
  no_shape.height = 0;
  EXPECT_THROW(DataLoader(dataset, noisy_transform, no_shape), engine::Error);
  EXPECT_THROW(DataLoader(dataset, nullptr, small_options(1)), engine::Error);
  for (int* dimension : {&no_shape.channels, &no_shape.height, &no_shape.width}) {
    no_shape = small_options(1);
    *dimension = 0;
    EXPECT_THAT([&] { DataLoader(dataset, noisy_transform, no_shape); },
                ThrowsMessage<engine::Error>(HasSubstr("sample shape")));
  }
  LoaderOptions no_batch = small_options(1);
  no_batch.batch_size = 0;
  EXPECT_THAT([&] { DataLoader(dataset, noisy_transform, no_batch); },
              ThrowsMessage<engine::Error>(HasSubstr("batch_size must be positive")));
  LoaderOptions no_prefetch = small_options(1);
  no_prefetch.prefetch_batches = 0;  // no worker could ever claim a batch
  EXPECT_THAT([&] { DataLoader(dataset, noisy_transform, no_prefetch); },
              ThrowsMessage<engine::Error>(HasSubstr("prefetch_batches must be >= 1, got 0")));
  EXPECT_NO_THROW(DataLoader(dataset, noisy_transform, small_options(256)));  // no thread until start_epoch
  EXPECT_THROW(DataLoader(dataset, noisy_transform, small_options(257)), engine::Error);
  EXPECT_THAT([&] { DataLoader(dataset, noisy_transform, small_options(100000)); },
              ::testing::ThrowsMessage<engine::Error>(
                  ::testing::AllOf(::testing::HasSubstr("100000 loader workers"), ::testing::HasSubstr("256"))));
  DataLoader loader(dataset, noisy_transform, small_options(1));
  Batch batch;
  EXPECT_THROW(loader.next(batch), engine::Error);  // no start_epoch yet
}

// The noise of each item's first value in one epoch, by dataset index.
std::vector<float> first_noise_by_item(DataLoader& loader, int64_t epoch, size_t size) {
  std::vector<float> noise(size, -1.0f);
  for (const Batch& batch : load_epoch(loader, epoch)) {
    const size_t row = static_cast<size_t>(batch.c) * batch.h * batch.w;
    for (int r = 0; r < batch.n; ++r) noise.at(batch.indices[r]) = batch.images[r * row] - static_cast<float>(batch.indices[r]);
  }
  return noise;
}

// The seed decides both the order and the augmentations: two seeds give two runs.
TEST(DataLoader, TheSeedChangesTheOrderAndTheAugmentations) {
  const CountingDataset dataset(40);
  LoaderOptions options = small_options(2);
  DataLoader a(dataset, noisy_transform, options), again(dataset, noisy_transform, options);
  options.seed = 43;
  DataLoader b(dataset, noisy_transform, options);
  EXPECT_EQ(indices_of(load_epoch(again, 0)), indices_of(load_epoch(a, 0)));
  EXPECT_NE(indices_of(load_epoch(b, 0)), indices_of(load_epoch(a, 0)));
  const std::vector<float> noise_a = first_noise_by_item(a, 0, 40), noise_b = first_noise_by_item(b, 0, 40);
  for (size_t i = 0; i < 40; ++i) EXPECT_NE(noise_a[i], noise_b[i]) << "item " << i;
}

// An item's augmentation stream is keyed by (seed, epoch, item), not by where the shuffle
// put it: with shuffling on or off, and at any batch size, item i draws the same numbers.
TEST(DataLoader, AnItemsAugmentationDoesNotDependOnItsPosition) {
  const CountingDataset dataset(30);
  LoaderOptions shuffled = small_options(2);
  LoaderOptions in_order = small_options(0);
  in_order.shuffle = false;
  in_order.batch_size = 4;
  DataLoader a(dataset, noisy_transform, shuffled), b(dataset, noisy_transform, in_order);
  for (int64_t epoch : {0, 3}) {
    const std::vector<float> noise_a = first_noise_by_item(a, epoch, 30);
    ASSERT_NE(indices_of(load_epoch(a, epoch)), indices_of(load_epoch(b, epoch)));  // the positions differ
    EXPECT_EQ(noise_a, first_noise_by_item(b, epoch, 30)) << "epoch " << epoch;
  }
}

// Counts the items loaded.
class CountedDataset : public CountingDataset {
 public:
  using CountingDataset::CountingDataset;
  Sample get(size_t i) const override {
    ++loaded;
    return CountingDataset::get(i);
  }
  mutable std::atomic<size_t> loaded{0};
};

// Workers stay at most prefetch_batches ahead of the consumer (memory stays bounded): an
// upper bound, so waiting longer can only make a loader that ignores it fail.
TEST(DataLoader, WorkersLoadAtMostPrefetchBatchesAhead) {
  const CountedDataset dataset(400);
  LoaderOptions options = small_options(3);
  options.batch_size = 4;
  options.prefetch_batches = 2;
  DataLoader loader(dataset, noisy_transform, options);
  loader.start_epoch(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_LE(dataset.loaded.load(), 2u * 4u);
  Batch batch;
  ASSERT_TRUE(loader.next(batch));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_LE(dataset.loaded.load(), 3u * 4u);
  EXPECT_GE(dataset.loaded.load(), 4u);
}

// Images are tagged by their file (pixel value 10 * (k + 1)); with corrupt files skipped
// in between, every row still holds the image of the index reported for it.
TEST(DataLoader, RowsAfterASkippedImageHoldTheirOwnImages) {
  TempDir root;
  std::filesystem::create_directory(root.path() + "/cls");
  for (int k = 0; k < 9; ++k) {
    Image image(2, 2, 3);
    std::fill(image.pixels.begin(), image.pixels.end(), static_cast<uint8_t>(10 * (k + 1)));
    write_png(image, root.path() + "/cls/" + std::to_string(k) + ".png");
  }
  for (const char* bad : {"/cls/2_bad.jpg", "/cls/5_bad.jpg"}) write_file(root.path() + bad, "\xff\xd8\xff garbage");
  const ImageFolder folder(root.path());
  ASSERT_EQ(folder.size(), 11u);
  LoaderOptions options = small_options(2);
  options.batch_size = 3;
  options.skip_bad_images = true;
  DataLoader loader(folder, noisy_transform, options);
  size_t rows = 0;
  for (const Batch& batch : load_epoch(loader, 0)) {
    ASSERT_EQ(batch.images.size(), static_cast<size_t>(batch.n) * 12);
    for (int r = 0; r < batch.n; ++r) {
      const std::string name = folder.name(batch.indices[r]);  // "cls/<k>.png"
      const float tag = 10.0f * (std::stoi(name.substr(4)) + 1);
      for (int p = 0; p < 12; ++p) {
        const float value = batch.images[r * 12 + p];
        ASSERT_TRUE(value >= tag && value < tag + 1) << name << " in row " << r << " holds " << value;
      }
      ++rows;
    }
  }
  EXPECT_EQ(rows, 9u);
  EXPECT_EQ(loader.bad_images(), 2u);
}

// The first batch's items load slowly, so a later batch is ready first: batches are still
// yielded in order.
class SlowStartDataset : public CountingDataset {
 public:
  using CountingDataset::CountingDataset;
  Sample get(size_t i) const override {
    if (i < 3) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return CountingDataset::get(i);
  }
};

TEST(DataLoader, ALaterBatchReadyFirstWaitsForItsTurn) {
  const SlowStartDataset dataset(12);
  LoaderOptions options = small_options(3);
  options.shuffle = false;
  options.batch_size = 3;
  DataLoader loader(dataset, noisy_transform, options);
  const std::vector<Batch> batches = load_epoch(loader, 0);
  ASSERT_EQ(batches.size(), 4u);
  for (size_t b = 0; b < 4; ++b) {
    EXPECT_THAT(batches[b].indices, ElementsAre(3 * b, 3 * b + 1, 3 * b + 2)) << "batch " << b;
    expect_rows_hold_their_items(batches[b]);
  }
}

// Batches prefetched for an abandoned epoch are dropped: the next epoch yields only its own,
// exactly those of a fresh loader.
TEST(DataLoader, BatchesPrefetchedForAnAbandonedEpochAreDropped) {
  const CountedDataset dataset(50);
  LoaderOptions options = small_options(1);  // one worker: batches 1..3 are loaded whole, in turn
  options.prefetch_batches = 3;
  DataLoader loader(dataset, noisy_transform, options);
  loader.start_epoch(0);
  Batch batch;
  ASSERT_TRUE(loader.next(batch));
  while (dataset.loaded.load() < 4 * options.batch_size) std::this_thread::yield();  // batches 1..3 ready
  DataLoader fresh(dataset, noisy_transform, options);
  const std::vector<Batch> expected = load_epoch(fresh, 1);
  const std::vector<Batch> got = load_epoch(loader, 1);
  ASSERT_EQ(got.size(), expected.size());
  for (size_t b = 0; b < got.size(); ++b) {
    EXPECT_EQ(got[b].indices, expected[b].indices) << "batch " << b;
    EXPECT_EQ(got[b].images, expected[b].images) << "batch " << b;
  }
}

// A resumed epoch does not load the batches it skips: only those it yields.
TEST(DataLoader, ResumingMidEpochLoadsOnlyTheRemainingBatches) {
  const CountedDataset dataset(40);
  LoaderOptions options = small_options(2);
  options.batch_size = 4;
  options.prefetch_batches = 2;
  DataLoader loader(dataset, noisy_transform, options);
  loader.start_epoch(0, 7);
  size_t yielded = 0;
  for (Batch batch; loader.next(batch);) yielded += batch.n;
  EXPECT_EQ(yielded, 12u);
  EXPECT_EQ(dataset.loaded.load(), 12u);
}

}  // namespace
}  // namespace data
