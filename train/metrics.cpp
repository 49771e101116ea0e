#include "train/metrics.h"

#include <cerrno>
#include <chrono>
#include <filesystem>

#include <unistd.h>

#include "engine/error.h"
#include "engine/os_error.h"
#include "engine/safetensors.h"

namespace engine {

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::FILE* open_log(const std::string& path, const char* mode) {
  std::FILE* file = std::fopen(path.c_str(), mode);
  if (file == nullptr) fail_os_error(errno, "cannot write metrics log", path);
  return file;
}

// Fails, naming `path`, unless a log could be written there: an existing file
// must be writable, else its folder.
void check_writable(const std::string& path) {
  namespace fs = std::filesystem;
  check(!fs::is_directory(path), "cannot write metrics log '{}': it is a folder", path);
  const fs::path target = fs::exists(path) ? fs::path(path) : fs::absolute(path).parent_path();
  if (access(target.c_str(), W_OK) != 0) fail_os_error(errno, "cannot write metrics log", path);
}

// Opens `path` for appending after cutting it back to `bytes`, which it must have at least.
std::FILE* continue_log(const std::string& path, int64_t bytes) {
  namespace fs = std::filesystem;
  check(fs::is_regular_file(path), "cannot continue metrics log '{}' from byte {}: there is no such file", path,
        bytes);
  const auto size = static_cast<int64_t>(fs::file_size(path));
  check(size >= bytes, "cannot continue metrics log '{}' from byte {}: it has only {} bytes", path, bytes, size);
  fs::resize_file(path, static_cast<uintmax_t>(bytes));
  return open_log(path, "a");
}

}  // namespace

MetricsLog::MetricsLog(const std::string& path) : path_(path), file_(nullptr), start_(now_seconds()), bytes_(0) {
  check_writable(path);
  // An earlier log at this path (eval_imagenet --log) is emptied now: it must
  // not pass for this run's if the run fails before its first record.
  if (std::filesystem::exists(path)) file_ = open_log(path, "w");
}

MetricsLog::MetricsLog(const std::string& path, const LogPosition& at)
    : path_(path),
      file_(continue_log(path, at.bytes)),
      start_(now_seconds() - at.seconds),
      bytes_(at.bytes) {}

MetricsLog::~MetricsLog() {
  if (file_ != nullptr) std::fclose(file_);
}

void MetricsLog::write(const nlohmann::json& record) {
  nlohmann::json line = record;
  line["time"] = now_seconds() - start_;
  const std::string text = line.dump() + "\n";
  if (file_ == nullptr) file_ = open_log(path_, "w");
  const bool written = std::fputs(text.c_str(), file_) >= 0 && std::fflush(file_) == 0;
  if (!written) fail_os_error(errno, "cannot write metrics log", path_);
  bytes_ += static_cast<int64_t>(text.size());
}

LogPosition MetricsLog::position() const { return {bytes_, now_seconds() - start_}; }

void write_json_atomic(const std::string& path, const nlohmann::json& value) {
  write_file_atomic(path, value.dump(2) + "\n");
}

}  // namespace engine
