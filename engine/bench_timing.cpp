#include "engine/bench_timing.h"

#include <algorithm>
#include <vector>

namespace engine {

double median_time_ms(Device device, const std::function<void()>& run, int calls, int rounds, int warmup) {
  for (int i = 0; i < warmup; ++i) run();
  std::vector<double> times;
  for (int r = 0; r < rounds; ++r) {
    times.push_back(device_time_ms(device, [&] {
      for (int i = 0; i < calls; ++i) run();
    }) / calls);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace engine
