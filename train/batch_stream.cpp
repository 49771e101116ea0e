#include "train/batch_stream.h"

#include <algorithm>
#include <filesystem>

namespace engine {

namespace {

data::LoaderOptions loader_options(const Preprocess& p, const DataSettings& s, uint64_t seed) {
  data::LoaderOptions o;
  o.batch_size = static_cast<size_t>(s.batch_size);
  o.shuffle = true;
  o.drop_last = true;
  o.num_workers = s.workers;
  o.seed = seed;
  o.height = o.width = static_cast<int>(p.input_size);
  return o;
}

}  // namespace

void DataSettings::read_data_settings(const Config& c) {
  data = c.get_string("data", "path");
  train_subdir = c.get_string("data", "train_subdir", "");
  test_subdir = c.get_string("data", "test_subdir", "");
  test_limit = c.get_int_at_least("data", "test_limit", 0, 0);
  batch_size = c.get_int_at_least("data", "batch_size", batch_size, 1);
  workers = static_cast<int>(c.get_int_at_least("data", "workers", workers, 0));
  device = read_device(c);
  precision = c.get_choice("run", "precision", precision, {"fp32", "bf16"});
}

Device read_device(const Config& c) {
  const std::string name = c.get_string("run", "device", "auto");
  return in_context(c, "run", "device", [&] { return Device::parse(name); });
}

int64_t DataSettings::read_budget(const Config& c, const std::string& section, int64_t def,
                                  bool zero_allowed) const {
  // The loops run whole batches: a remainder would go untrained while
  // results.json records the budget as given. The built-in default is
  // rounded down to whole batches (at least one); a value set must be whole.
  const int64_t whole_default = def == 0 ? 0 : std::max(batch_size, def / batch_size * batch_size);
  const int64_t images = c.get_int_at_least(section, "budget_images", whole_default, zero_allowed ? 0 : 1);
  const int64_t below = images / batch_size * batch_size;
  check(images % batch_size == 0,
        "{}: [{}] budget_images = {} is not a whole number of batches ([data] batch_size = {}): use {}{}",
        c.where(section, "budget_images"), section, images, batch_size,
        below > 0 ? fmt::format("{} or ", below) : "", below + batch_size);
  return images;
}

std::vector<int64_t> read_latency_batches(const Config& c, const std::vector<int64_t>& def) {
  const std::vector<int64_t> batches = c.get_int_list("eval", "latency_batches", def);
  const bool valid = !batches.empty() && std::all_of(batches.begin(), batches.end(), [](int64_t b) { return b >= 1; });
  check(valid, "{}: [eval] latency_batches = '{}' must list batch sizes of at least 1",
        c.where("eval", "latency_batches"), c.get_string("eval", "latency_batches", ""));
  return batches;
}

EvalOptions DataSettings::eval_options() const {
  EvalOptions options;
  options.batch_size = std::min<int64_t>(batch_size * 4, 256);
  options.limit = test_limit;
  options.num_workers = workers;
  options.device = device;
  return options;
}

BatchStream::BatchStream(const data::Dataset& dataset, const Preprocess& preprocess, const DataSettings& options,
                         uint64_t seed)
    : loader_(dataset, eval_transform(preprocess, /*random_flip=*/true), loader_options(preprocess, options, seed)),
      device_(options.device) {
  // Batches are whole (drop_last): a smaller set would give none, ever.
  check(dataset.size() >= static_cast<size_t>(options.batch_size),
        "the training set holds {} images, fewer than one batch ([data] batch_size = {})", dataset.size(),
        options.batch_size);
  loader_.start_epoch(epoch_);
}

void BatchStream::next(Tensor* images, Tensor* labels) {
  data::Batch batch;
  while (!loader_.next(batch)) loader_.start_epoch(++epoch_);
  *images = Tensor::from_vector(batch.images, {batch.n, batch.c, batch.h, batch.w}).to(device_);
  *labels = Tensor::from_vector(batch.labels, {batch.n}).to(device_);
}

WarmupCosineSchedule warmup_cosine(double lr, int64_t steps, double warmup_fraction) {
  WarmupCosineSchedule schedule;
  schedule.base_lr = lr;
  // The cosine ends one step past the run: warmup_fraction = 1 (every step a
  // warmup step) is then still a schedule (warmup_steps < total_steps).
  schedule.total_steps = std::max<int64_t>(steps, 1) + 1;
  schedule.warmup_steps = static_cast<int64_t>(warmup_fraction * steps);
  return schedule;
}

namespace {

// A name in `outputs`, or one starting with an entry that ends in '*'.
bool is_run_output(const std::string& name, const std::vector<std::string>& outputs) {
  for (const std::string& output : outputs) {
    const bool prefix = !output.empty() && output.back() == '*';
    if (prefix ? name.rfind(output.substr(0, output.size() - 1), 0) == 0 : name == output) return true;
  }
  return false;
}

// Whether `path` is `folder` or lies inside it.
bool lies_in(const std::filesystem::path& path, const std::filesystem::path& folder) {
  const std::filesystem::path inner = std::filesystem::weakly_canonical(path);
  const std::filesystem::path outer = std::filesystem::weakly_canonical(folder);
  return std::mismatch(outer.begin(), outer.end(), inner.begin(), inner.end()).first == outer.end();
}

}  // namespace

void check_out_dir(const std::string& out_dir) {
  namespace fs = std::filesystem;
  check(!out_dir.empty(), "[output] dir is empty: name the folder for the run's outputs");
  check(!fs::is_symlink(out_dir) || fs::exists(out_dir), "[output] dir = '{}' is a link to nothing", out_dir);
  check(!fs::exists(out_dir) || fs::is_directory(out_dir), "[output] dir = '{}' is not a folder", out_dir);
}

void prepare_out_dir(const std::string& out_dir, bool overwrite, const std::vector<std::string>& outputs,
                     const std::vector<std::string>& inputs, bool resumable) {
  namespace fs = std::filesystem;
  check_out_dir(out_dir);
  std::vector<fs::path> found;
  if (fs::exists(out_dir)) {
    for (const fs::directory_entry& entry : fs::directory_iterator(out_dir)) {
      if (is_run_output(entry.path().filename().string(), outputs)) found.push_back(entry.path());
    }
  }
  // Every check before any removal: a refused run leaves the earlier one whole.
  for (const fs::path& path : found) {
    for (const std::string& input : inputs) {
      check(input.empty() || !lies_in(input, path), "{} is an earlier run's output in [output] dir = '{}', which this "
            "run would replace before reading it: choose another output folder", input, out_dir);
    }
    check(overwrite, "output folder '{}' already holds a run's {} (set [output] {}overwrite = true to replace it)",
          out_dir, path.filename().string(), resumable ? "resume = true to continue it or " : "");
  }
  // Removed now rather than replaced at the end, so that a run that fails
  // or is stopped leaves no earlier results beside its own partial log.
  for (const fs::path& path : found) fs::remove_all(path);
  fs::create_directories(out_dir);
}

}  // namespace engine
