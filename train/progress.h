// A one-line terminal progress bar with rate, ETA and extra fields (loss,
// accuracy). Redraws at most ~10 times a second; prints plain periodic lines
// instead when stderr is not a terminal (CI logs stay readable).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace engine {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, std::string unit = "img");
  // Advance by `count` items; `status` is appended (e.g. "loss 0.412").
  void update(int64_t count, const std::string& status = "");
  void finish(const std::string& status = "");
  double elapsed_seconds() const;
  double rate() const;  // items per second so far

 private:
  void draw(bool final);
  std::string label_, unit_, status_;
  int64_t total_, done_ = 0;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace engine
