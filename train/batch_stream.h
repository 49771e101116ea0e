// Training-loop pieces shared by the training tools (train_distill, train_avit):
// their [data] and [run] settings, an endless shuffled batch stream, the warmup +
// cosine schedule for a step budget, and the output-folder guard.
#pragma once
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/loader.h"
#include "engine/config.h"
#include "engine/optim/optimizer.h"
#include "models/vit.h"
#include "train/evaluate.h"

namespace engine {

// [data] path, train_subdir, test_subdir, test_limit, batch_size, workers; [run] device, precision.
struct DataSettings {
  std::string data;  // dataset folder or archive: ImageFolder or CIFAR-10 binary (data/open_dataset.h)
  std::string train_subdir, test_subdir;
  int64_t test_limit = 0;  // 0: the whole test folder
  int64_t batch_size = 64;
  int workers = 2;
  Device device = Device::cpu();
  std::string precision = "fp32";  // fp32 | bf16: the GEMMs' mixed precision, on a GPU (engine/ops/matmul/matmul.h)

  void read_data_settings(const Config& config);  // [data] path is required
  EvalOptions eval_options() const;                // test_limit, batch_size * 4 (at most 256), workers, device
  // [section] budget_images, a training budget spent in whole batches of
  // batch_size (read_data_settings first): anything but a positive multiple
  // of it (or 0 when zero_allowed) is an error naming both values.
  int64_t read_budget(const Config& config, const std::string& section, int64_t def, bool zero_allowed = false) const;
};

// [run] device (default auto); a bad name is an error naming where it was set.
Device read_device(const Config& config);

// [eval] latency_batches: a non-empty list of batch sizes, each at least 1.
std::vector<int64_t> read_latency_batches(const Config& config, const std::vector<int64_t>& def);

// An endless, shuffled, deterministic stream of training batches on a device,
// through the model's eval transform plus a random horizontal flip.
class BatchStream {
 public:
  BatchStream(const data::Dataset& dataset, const Preprocess& preprocess, const DataSettings& options, uint64_t seed);
  void next(Tensor* images, Tensor* labels);

 private:
  data::DataLoader loader_;
  Device device_;
  int64_t epoch_ = 0;
};

// The steps (of `steps`) whose losses are logged and shown: every 10th and the
// last. Reading a loss waits for the GPU, so the other steps leave it alone
// and the host queues the next step's work while the GPU runs this one.
inline bool is_log_step(int64_t step, int64_t steps) { return step % 10 == 0 || step + 1 == steps; }

// Warmup over warmup_fraction of `steps`, then cosine decay to 0.
WarmupCosineSchedule warmup_cosine(double lr, int64_t steps, double warmup_fraction);

// Refuses an [output] dir that is empty, a link to nothing, or not a folder.
void check_out_dir(const std::string& out_dir);

// Makes out_dir ready for a run that writes `outputs` there (names; an entry
// ending in '*' matches every name that starts with the rest). Fails when the
// folder already holds any of them and overwrite is off; with overwrite on,
// removes them. Creates out_dir. `inputs` are paths the run reads later (a
// teacher it loads again): one inside an output to remove is an error.
// `resumable`: the refusal also tells how to continue the earlier run.
void prepare_out_dir(const std::string& out_dir, bool overwrite, const std::vector<std::string>& outputs,
                     const std::vector<std::string>& inputs = {}, bool resumable = false);

}  // namespace engine
