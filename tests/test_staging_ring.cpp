// The staging ring's bookkeeping (engine/staging_ring.h) with integer events:
// over long random runs of claims, no claim ever hands out bytes that a
// stretch still in flight occupies, the waits come oldest first, and a ring
// that has room never waits.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "engine/random.h"
#include "engine/staging_ring.h"
#include "tests/expect_error.h"

namespace engine {
namespace {

struct Copy {
  size_t begin, end;
  bool in_flight;
};

// Claims `count` stretches of random sizes up to max_size and commits each
// (event = its index), checking every claim against the stretches in flight.
void random_run(size_t capacity, size_t max_size, int count, uint64_t seed) {
  StagingRing<int> ring(capacity);
  Rng rng(seed);
  std::vector<Copy> copies;
  int last_waited = -1;
  for (int i = 0; i < count; ++i) {
    const size_t size = 1 + static_cast<size_t>(rng.integer(static_cast<int64_t>(max_size)));
    const size_t head = copies.empty() ? 0 : copies.back().end;
    std::vector<int> waited;
    const size_t begin = ring.claim(size, [&](int event) {
      EXPECT_GT(event, last_waited) << "waits must come oldest first";
      last_waited = event;
      copies[static_cast<size_t>(event)].in_flight = false;
      waited.push_back(event);
    });
    ASSERT_LE(begin + size, capacity) << "claim " << i;
    for (int event : waited) {  // only for copies that the claim overwrites or skips over
      const Copy& c = copies[static_cast<size_t>(event)];
      const bool overwritten = c.begin < begin + size && begin < c.end;
      const bool skipped = begin < head && c.begin >= head;
      EXPECT_TRUE(overwritten || skipped) << "claim " << i << " [" << begin << ", " << begin + size
                                          << ") waited for copy " << event << " [" << c.begin << ", " << c.end << ")";
    }
    for (size_t j = 0; j < copies.size(); ++j) {
      const Copy& c = copies[j];
      ASSERT_FALSE(c.in_flight && c.begin < begin + size && begin < c.end)
          << "claim " << i << " [" << begin << ", " << begin + size << ") overwrites copy " << j << " ["
          << c.begin << ", " << c.end << ") in flight";
    }
    ring.commit(i);
    copies.push_back({begin, begin + size, true});
  }
}

TEST(StagingRing, NeverHandsOutBytesInFlight) {
  random_run(1000, 10, 20000, 1);     // many small stretches, many laps
  random_run(1000, 400, 20000, 2);    // large ones: wraps that skip long tails
  random_run(1000, 1000, 5000, 3);    // up to the whole ring
  random_run(4096, 256, 20000, 4);
}

TEST(StagingRing, WaitsOnlyWhenItComesBackToStretchesInFlight) {
  StagingRing<int> ring(100);
  int waits = 0;
  auto count_wait = [&](int) { ++waits; };
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(ring.claim(10, count_wait), static_cast<size_t>(10 * i));
    ring.commit(i);
  }
  EXPECT_EQ(waits, 0) << "a lap that fits waits for nothing";
  EXPECT_EQ(ring.claim(25, count_wait), 0u);  // covers the first three stretches
  EXPECT_EQ(waits, 3);
  ring.commit(10);
  EXPECT_EQ(ring.claim(80, count_wait), 0u);  // does not fit after 25: wraps, waits for all
  EXPECT_EQ(waits, 3 + 7 + 1);
  EXPECT_EQ(ring.in_flight(), 0u);
}

TEST(StagingRing, RejectsClaimsItCannotHold) {
  StagingRing<int> ring(64);
  testing::expect_error_mentioning([&] { ring.claim(65, [](int) {}); }, {"65", "64"});
  testing::expect_error_mentioning([&] { ring.claim(0, [](int) {}); }, {"cannot claim 0"});
}

}  // namespace
}  // namespace engine
