#include "train/progress.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace engine {

namespace {
std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds);
  return s >= 3600 ? fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
                   : fmt::format("{:02}:{:02}", s / 60, s % 60);
}
}  // namespace

ProgressBar::ProgressBar(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), tty_(isatty(fileno(stderr)) != 0),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

double ProgressBar::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

double ProgressBar::rate() const {
  return per_second(static_cast<double>(done_), elapsed_seconds());
}

void ProgressBar::update(int64_t count, const std::string& status) {
  done_ += count;
  if (!status.empty()) status_ = status;
  const auto now = std::chrono::steady_clock::now();
  const double since_draw = std::chrono::duration<double>(now - last_draw_).count();
  // The last update is left to finish(), which always draws.
  if (since_draw >= (tty_ ? 0.1 : 10.0) && done_ < total_) {
    last_draw_ = now;
    draw(false);
  }
}

void ProgressBar::finish(const std::string& status) {
  if (!status.empty()) status_ = status;
  draw(true);
}

void ProgressBar::draw(bool final) {
  const double fraction = total_ > 0 ? std::min(1.0, static_cast<double>(done_) / total_) : 1.0;
  const double r = rate();
  const double eta = r > 0 && total_ > done_ ? (total_ - done_) / r : 0.0;
  const int width = 30;
  const int filled = static_cast<int>(fraction * width);
  const std::string bar = std::string(filled, '#') + std::string(width - filled, '-');
  const std::string line =
      fmt::format("{} [{}] {:3.0f}% {}/{} {:.0f} img/s {} eta {} {}", label_, bar, 100 * fraction, done_, total_, r,
                  format_duration(elapsed_seconds()), format_duration(eta), status_);
  std::fflush(stdout);  // keep the tool's own stdout lines in order with the bar
  if (tty_) fmt::print(stderr, "\r{}\033[K{}", line, final ? "\n" : "");
  else fmt::print(stderr, "{}\n", line);
  std::fflush(stderr);
}

}  // namespace engine
