#include <gtest/gtest.h>

#include <cstdlib>

#include "engine/caching_allocator.h"

namespace engine {
namespace {

int g_system_frees = 0;
void* counting_alloc(size_t n) { return std::malloc(n); }
void counting_free(void* p) {
  ++g_system_frees;
  std::free(p);
}

TEST(CachingAllocator, ReusesFreedBlocksOfTheSameSize) {
  CachingAllocator allocator(counting_alloc, counting_free, 1 << 20);
  void* a = allocator.allocate(1000);
  allocator.release(a);
  void* b = allocator.allocate(900);  // rounds to the same 1024-byte class
  EXPECT_EQ(a, b);
  void* c = allocator.allocate(5000);  // a different class: a new block
  EXPECT_NE(c, b);
  CachingAllocator::Stats stats = allocator.stats();
  EXPECT_EQ(stats.system_allocations, 2u);
  EXPECT_EQ(stats.cache_hits, 1u);
  allocator.release(b);
  allocator.release(c);
  EXPECT_EQ(allocator.stats().cached_bytes, CachingAllocator::rounded(900) + CachingAllocator::rounded(5000));
}

TEST(CachingAllocator, CapReturnsBlocksToTheSystem) {
  g_system_frees = 0;
  CachingAllocator allocator(counting_alloc, counting_free, 2048);
  void* a = allocator.allocate(2048);
  void* b = allocator.allocate(2048);
  allocator.release(a);  // fits the cap: cached
  allocator.release(b);  // would exceed it: freed
  EXPECT_EQ(g_system_frees, 1);
  allocator.flush();
  EXPECT_EQ(g_system_frees, 2);
  EXPECT_EQ(allocator.stats().cached_bytes, 0u);
}

TEST(CachingAllocator, RoundingBoundsWaste) {
  for (size_t n : {1ul, 511ul, 513ul, (1ul << 20) + 1, 3ul << 22, 1000000007ul}) {
    const size_t r = CachingAllocator::rounded(n);
    EXPECT_GE(r, n);
    EXPECT_LE(r, n + n / 8 + 512) << n;
  }
}

}  // namespace
}  // namespace engine
