#include "engine/bench_timing.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "engine/error.h"

namespace engine {

double median(std::vector<double> values) {
  check(!values.empty(), "median of no values");
  std::sort(values.begin(), values.end());
  const size_t half = values.size() / 2;
  return values.size() % 2 == 1 ? values[half] : (values[half - 1] + values[half]) / 2;
}

double median_time_ms(Device device, const std::function<void()>& run, int calls, int rounds, int warmup) {
  for (int i = 0; i < warmup; ++i) run();
  std::vector<double> times;
  for (int r = 0; r < rounds; ++r) {
    times.push_back(device_time_ms(device, [&] {
      for (int i = 0; i < calls; ++i) run();
    }) / calls);
  }
  return median(std::move(times));
}

}  // namespace engine
