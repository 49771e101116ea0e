// Training-loop pieces shared by the training tools (train_distill, train_avit):
// an endless shuffled batch stream, the warmup + cosine schedule for a step
// budget, and the output-folder guard.
#pragma once
#include <string>

#include "data/dataset.h"
#include "data/loader.h"
#include "engine/optim/optimizer.h"
#include "models/vit.h"

namespace engine {

struct StreamOptions {
  int64_t batch_size = 64;
  int workers = 2;
  Device device = Device::cpu();
};

// An endless, shuffled, deterministic stream of training batches on a device,
// through the model's eval transform plus a random horizontal flip.
class BatchStream {
 public:
  BatchStream(const data::Dataset& dataset, const Preprocess& preprocess, const StreamOptions& options, uint64_t seed);
  void next(Tensor* images, Tensor* labels);

 private:
  data::DataLoader loader_;
  Device device_;
  int64_t epoch_ = 0;
};

// Warmup over warmup_fraction of `steps`, then cosine decay to 0.
WarmupCosineSchedule warmup_cosine(double lr, int64_t steps, double warmup_fraction);

// Fails when out_dir already holds results.json and overwrite is off; creates out_dir.
void prepare_out_dir(const std::string& out_dir, bool overwrite);

}  // namespace engine
