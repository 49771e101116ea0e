// A multi-threaded, prefetching, deterministic batch loader over a Dataset.
//
//   DataLoader loader(dataset, transform, options);
//   for (int64_t epoch = 0; epoch < epochs; ++epoch) {
//     loader.start_epoch(epoch);
//     for (Batch batch; loader.next(batch);) { ... }
//   }
//
// Determinism: the sample order of epoch e depends only on (seed, e), batch k always holds
// the same samples, and sample i's augmentation RNG is seeded from (seed, e, i). Batches
// are yielded in order, so results do not depend on the number of workers or on timing.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "data/dataset.h"

namespace data {

// Writes one sample, channels * height * width floats (LoaderOptions' shape), to out_chw.
// Called concurrently from worker threads: it must be thread-safe.
using Transform = std::function<void(const Image& image, float* out_chw, std::mt19937_64& rng)>;

struct LoaderOptions {
  size_t batch_size = 32;
  bool shuffle = false;
  bool drop_last = false;   // drop the final batch when it is smaller than batch_size
  int num_workers = 2;      // 0: load in the calling thread
  int prefetch_batches = 4; // batches loaded ahead of the consumer; >= num_workers keeps all busy
  uint64_t seed = 0;
  // Skip items whose decoding fails (an engine::Error from Dataset::get) instead of failing;
  // the batch holding one is then shorter. Errors from the transform always propagate.
  bool skip_bad_images = false;
  int channels = 3, height = 0, width = 0;  // shape of every transformed sample
};

struct Batch {
  std::vector<float> images;     // n x c x h x w
  std::vector<int64_t> labels;   // n
  std::vector<size_t> indices;   // n dataset indices
  int n = 0, c = 0, h = 0, w = 0;
};

class DataLoader {
 public:
  // The dataset must outlive the loader.
  DataLoader(const Dataset& dataset, Transform transform, LoaderOptions options);
  ~DataLoader();  // stops and joins the workers
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Starts loading epoch `epoch`, abandoning what is left of the previous one. A resumed
  // run passes first_batch > 0 to skip the batches it already trained on, without
  // loading them: the batches that follow are exactly those of an uninterrupted epoch.
  void start_epoch(int64_t epoch, size_t first_batch = 0);

  // The next batch of the current epoch; false once it is exhausted. An error while
  // loading a batch (in any thread) is rethrown here when that batch is reached, and ends
  // the epoch. Without skip_bad_images, an undecodable image's error names its file.
  bool next(Batch& batch);

  // Batches per epoch (before any are emptied by skipped images, which are not yielded).
  size_t num_batches() const;

  // Distinct items skipped so far as undecodable (skip_bad_images), and their names.
  size_t bad_images() const;
  std::vector<std::string> bad_image_names() const;

 private:
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };

  Slot load_slot(size_t batch_index);
  Batch load_batch(size_t batch_index);
  void worker_loop();
  void stop_workers();

  const Dataset& dataset_;
  const Transform transform_;
  const LoaderOptions options_;

  // Current epoch; written only by the consumer while no worker runs.
  std::vector<size_t> order_;
  uint64_t epoch_seed_ = 0;
  bool started_ = false;

  mutable std::mutex mutex_;  // guards everything below
  std::condition_variable changed_;
  size_t next_to_claim_ = 0;  // next batch a worker will load
  size_t next_to_yield_ = 0;  // next batch next() returns
  std::map<size_t, Slot> ready_;
  std::atomic<bool> stopping_{false};  // also read without the lock between samples
  std::set<std::string> bad_names_;
  std::vector<std::thread> workers_;
};

}  // namespace data
