#include "data/loader.h"

#include <algorithm>
#include <numeric>

#include "data/random.h"
#include "engine/error.h"

namespace data {
namespace {
// Key of the shuffle stream; sample streams use the sample index, always smaller.
constexpr uint64_t kOrderStream = ~uint64_t{0};
}  // namespace

DataLoader::DataLoader(const Dataset& dataset, Transform transform, LoaderOptions options)
    : dataset_(dataset), transform_(std::move(transform)), options_(options) {
  engine::check(static_cast<bool>(transform_), "DataLoader: no transform given");
  engine::check(options_.batch_size > 0, "DataLoader: batch_size must be positive");
  // (The cap: a typo such as 100000 would fail in thread creation, mid-epoch and without the number.)
  engine::check(options_.num_workers >= 0 && options_.num_workers <= 256,
                "{} loader workers (threads): the number must be between 0 and 256", options_.num_workers);
  engine::check(options_.prefetch_batches >= 1, "DataLoader: prefetch_batches must be >= 1, got {}",
                options_.prefetch_batches);
  engine::check(options_.channels > 0 && options_.height > 0 && options_.width > 0,
                "DataLoader: sample shape {}x{}x{} must be set (LoaderOptions channels, height, width)",
                options_.channels, options_.height, options_.width);
}

DataLoader::~DataLoader() { stop_workers(); }

size_t DataLoader::num_batches() const {
  const size_t n = dataset_.size();
  return options_.drop_last ? n / options_.batch_size : (n + options_.batch_size - 1) / options_.batch_size;
}

void DataLoader::start_epoch(int64_t epoch, size_t first_batch) {
  stop_workers();
  started_ = false;  // until the workers run: next() must not wait on an epoch that failed to start
  engine::check(first_batch <= num_batches(), "DataLoader: first batch {} is past the epoch's {} batches",
                first_batch, num_batches());
  epoch_seed_ = mix_seed(options_.seed, static_cast<uint64_t>(epoch));
  order_.resize(dataset_.size());
  std::iota(order_.begin(), order_.end(), size_t{0});
  if (options_.shuffle) {
    std::mt19937_64 rng(mix_seed(epoch_seed_, kOrderStream));
    shuffle(order_, rng);
  }
  next_to_claim_ = first_batch;
  next_to_yield_ = first_batch;
  for (int i = 0; i < options_.num_workers; ++i) workers_.emplace_back(&DataLoader::worker_loop, this);
  started_ = true;
}

bool DataLoader::next(Batch& batch) {
  engine::check(started_, "DataLoader::next called before start_epoch");
  while (next_to_yield_ < num_batches()) {
    Slot slot;
    if (options_.num_workers == 0) {
      slot = load_slot(next_to_yield_);
    } else {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [&] { return ready_.count(next_to_yield_) > 0; });
      slot = std::move(ready_.at(next_to_yield_));
      ready_.erase(next_to_yield_);
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++next_to_yield_;
    }
    changed_.notify_all();  // a worker may now claim one more batch
    if (slot.error) {
      stop_workers();
      next_to_yield_ = num_batches();  // the epoch ends here
      std::rethrow_exception(slot.error);
    }
    if (slot.batch.n > 0) {  // a batch of nothing but skipped images is not yielded
      batch = std::move(slot.batch);
      return true;
    }
  }
  stop_workers();  // all claimed batches are done; this just joins
  return false;
}

size_t DataLoader::bad_images() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return bad_names_.size();
}

std::vector<std::string> DataLoader::bad_image_names() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {bad_names_.begin(), bad_names_.end()};
}

void DataLoader::worker_loop() {
  const size_t total = num_batches();
  while (true) {
    size_t batch_index;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [&] {
        return stopping_ || next_to_claim_ >= total ||
               next_to_claim_ < next_to_yield_ + static_cast<size_t>(options_.prefetch_batches);
      });
      if (stopping_ || next_to_claim_ >= total) return;
      batch_index = next_to_claim_++;
    }
    Slot slot = load_slot(batch_index);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ready_.emplace(batch_index, std::move(slot));
    }
    changed_.notify_all();
  }
}

void DataLoader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
  ready_.clear();
  stopping_ = false;
}

DataLoader::Slot DataLoader::load_slot(size_t batch_index) {
  Slot slot;
  try {
    slot.batch = load_batch(batch_index);
  } catch (...) {
    slot.error = std::current_exception();
  }
  return slot;
}

Batch DataLoader::load_batch(size_t batch_index) {
  const size_t begin = batch_index * options_.batch_size;
  const size_t end = std::min(begin + options_.batch_size, order_.size());
  const size_t sample_floats = static_cast<size_t>(options_.channels) * options_.height * options_.width;

  Batch batch;
  batch.c = options_.channels;
  batch.h = options_.height;
  batch.w = options_.width;
  batch.images.resize((end - begin) * sample_floats);
  for (size_t position = begin; position < end && !stopping_; ++position) {
    const size_t index = order_[position];
    Sample sample;
    try {
      sample = dataset_.get(index);
    } catch (const engine::Error&) {
      if (!options_.skip_bad_images) throw;
      std::lock_guard<std::mutex> lock(mutex_);
      bad_names_.insert(dataset_.name(index));
      continue;
    }
    std::mt19937_64 rng(mix_seed(epoch_seed_, index));
    transform_(sample.image, batch.images.data() + batch.n * sample_floats, rng);
    batch.labels.push_back(sample.label);
    batch.indices.push_back(index);
    ++batch.n;
  }
  batch.images.resize(batch.n * sample_floats);
  return batch;
}

}  // namespace data
