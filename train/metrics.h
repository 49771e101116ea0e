// Run outputs: a JSONL metrics log (one JSON object per line, flushed as it
// goes, so a crashed run keeps its history) and a results JSON written
// atomically at the end.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

namespace engine {

// How far a metrics log has got: its length and the "time" its clock reads.
struct LogPosition {
  int64_t bytes = 0;
  double seconds = 0;
};

class MetricsLog {
 public:
  // Starts the log afresh: an existing file is emptied now, a missing one is
  // created by the first write (so a run that fails before logging anything
  // leaves no new file behind); a path that cannot be written is an error now,
  // naming it.
  explicit MetricsLog(const std::string& path);
  // Continues the log from `at` (saved by an earlier run's position()): cuts
  // the file back to at.bytes, dropping lines a crashed run wrote after that,
  // and carries its clock on from at.seconds. A missing or shorter file is an
  // error naming the path.
  MetricsLog(const std::string& path, const LogPosition& at);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  // Adds "time" (seconds on the log's clock); a failed write (a full disk) is
  // an error naming the path.
  void write(const nlohmann::json& record);
  LogPosition position() const;              // every line written is flushed

 private:
  std::string path_;
  std::FILE* file_;  // null until the first write of a fresh log
  double start_;  // when the clock read 0
  int64_t bytes_;
};

// Pretty-printed JSON, written atomically (temp file + rename).
void write_json_atomic(const std::string& path, const nlohmann::json& value);

}  // namespace engine
