#include "train/metrics.h"

#include <cerrno>
#include <chrono>
#include <cstring>

#include "engine/error.h"
#include "engine/safetensors.h"

namespace engine {

namespace {
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

MetricsLog::MetricsLog(const std::string& path, bool append)
    : file_(std::fopen(path.c_str(), append ? "a" : "w")), start_(now_seconds()) {
  check(file_ != nullptr, "cannot write metrics log '{}': {}", path, std::strerror(errno));
}

MetricsLog::~MetricsLog() { std::fclose(file_); }

void MetricsLog::write(const nlohmann::json& record) {
  nlohmann::json line = record;
  line["time"] = now_seconds() - start_;
  std::fputs((line.dump() + "\n").c_str(), file_);
  std::fflush(file_);
}

void write_json_atomic(const std::string& path, const nlohmann::json& value) {
  write_file_atomic(path, value.dump(2) + "\n");
}

}  // namespace engine
