// A one-line terminal progress bar with rate, ETA and extra fields (loss,
// accuracy). Redraws at most ~10 times a second; prints plain periodic lines
// instead when stderr is not a terminal (CI logs stay readable).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace engine {

// count / seconds, and 0 before any time has passed: every img/s of the bars,
// logs and results. The logs pass their own image counts, not bar.rate(),
// which counts only what a shown bar was given.
inline double per_second(double count, double seconds) { return seconds > 0 ? count / seconds : 0.0; }

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total);  // counts images
  // Advance by `count` items; `status` is appended (e.g. "loss 0.412").
  void update(int64_t count, const std::string& status = "");
  void finish(const std::string& status = "");
  double elapsed_seconds() const;
  double rate() const;  // items per second so far (of the items passed to update())

 private:
  void draw(bool final);
  std::string label_, status_;
  int64_t total_, done_ = 0;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace engine
