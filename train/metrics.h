// Run outputs: a JSONL metrics log (one JSON object per line, flushed as it
// goes, so a crashed run keeps its history) and a results JSON written
// atomically at the end.
#pragma once
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

namespace engine {

class MetricsLog {
 public:
  // Truncates the file, or appends to it (a resumed run continues its log);
  // an error names the path.
  explicit MetricsLog(const std::string& path, bool append = false);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  void write(const nlohmann::json& record);  // adds "time" (seconds since start)

 private:
  std::FILE* file_;
  double start_;
};

// Pretty-printed JSON, written atomically (temp file + rename).
void write_json_atomic(const std::string& path, const nlohmann::json& value);

}  // namespace engine
