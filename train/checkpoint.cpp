#include "train/checkpoint.h"

#include <filesystem>

#include "engine/safetensors.h"
#include "models/vit_checkpoint.h"

namespace engine {

namespace fs = std::filesystem;

namespace {

constexpr const char* kStateFile = "train_state.safetensors";
constexpr const char* kStateFormat = "engine.train_state.v1";
constexpr const char* kStaging = ".partial";   // the folder being written
constexpr const char* kPrevious = ".previous";  // the last complete one, while the new one moves in

// Sibling folders of `dir`, named by suffix ("runs/x/checkpoint" -> "runs/x/checkpoint.previous").
fs::path sibling(const std::string& dir, const char* suffix) {
  fs::path path = fs::path(dir).lexically_normal();
  if (!path.has_filename()) path = path.parent_path();  // a trailing slash
  return path.string() + suffix;
}

}  // namespace

void write_directory_atomically(const std::string& dir, const std::function<void(const std::string&)>& write) {
  const fs::path target = sibling(dir, "");
  const fs::path staging = sibling(dir, kStaging);
  const fs::path previous = sibling(dir, kPrevious);
  fs::remove_all(staging);  // left by a save that failed or was killed
  fs::create_directories(staging);
  write(staging.string());
  if (fs::exists(target)) {
    fs::remove_all(previous);
    fs::rename(target, previous);
  }
  fs::rename(staging, target);
  fs::remove_all(previous);
}

std::vector<std::string> atomic_directory_names(const std::string& name) {
  return {name, name + kStaging, name + kPrevious};
}

std::string find_complete_directory(const std::string& dir) {
  for (const fs::path& candidate : {sibling(dir, ""), sibling(dir, kPrevious)}) {
    if (fs::is_directory(candidate)) return candidate.string();
  }
  return "";
}

void save_train_state(const std::string& path, const Optimizer& optimizer, const nlohmann::json& progress) {
  save_safetensors(path, optimizer.state(), {{"format", kStateFormat}, {"progress", progress.dump()}});
}

namespace {

// The progress JSON object that train state `file` (read from `path`) holds.
nlohmann::json progress_of(const SafetensorsFile& file, const std::string& path) {
  const Metadata& metadata = file.metadata();
  const auto format = metadata.find("format");
  check(format != metadata.end() && format->second == kStateFormat,
        "{}: not a training state (metadata 'format' should be '{}')", path, kStateFormat);
  const auto progress = metadata.find("progress");
  check(progress != metadata.end(), "{}: metadata has no 'progress' entry", path);
  nlohmann::json parsed;
  try {
    parsed = nlohmann::json::parse(progress->second);
  } catch (const std::exception& e) {
    fail("{}: {}", path, e.what());
  }
  check(parsed.is_object(), "{}: metadata 'progress' is {}, not a JSON object", path, progress->second);
  return parsed;
}

}  // namespace

nlohmann::json read_train_progress(const std::string& path) { return progress_of(SafetensorsFile::open(path), path); }

nlohmann::json load_train_state(const std::string& path, Optimizer& optimizer) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  nlohmann::json progress = progress_of(file, path);
  NamedTensors state;
  for (const std::string& name : file.names()) state.emplace_back(name, file.get(name));
  try {
    optimizer.load_state(state);
  } catch (const std::exception& e) {
    fail("{}: {}", path, e.what());
  }
  return progress;
}

void save_checkpoint(const std::string& dir, VisionTransformer& model, const Optimizer& optimizer,
                     const nlohmann::json& progress) {
  write_directory_atomically(dir, [&](const std::string& staging) {
    save_vit(model, staging);
    save_train_state(train_state_file(staging), optimizer, progress);
  });
}

std::string train_state_file(const std::string& dir) { return (fs::path(dir) / kStateFile).string(); }

nlohmann::json load_checkpoint_into(const std::string& dir, VisionTransformer& model, Optimizer& optimizer) {
  const std::string model_file = (fs::path(dir) / "model.safetensors").string();
  load_parameters(model, load_checkpoint(model_file).tensors, model_file);
  return load_train_state(train_state_file(dir), optimizer);
}

}  // namespace engine
