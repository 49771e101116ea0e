#include <gtest/gtest.h>

#include <cstdlib>
#include <vector>

#include "engine/caching_allocator.h"
#include "engine/error.h"

namespace engine {
namespace {

int g_system_frees = 0;
void* counting_alloc(size_t n) { return std::malloc(n); }
void counting_free(void* p) {
  ++g_system_frees;
  std::free(p);
}

// A system with room for two blocks, whatever their size.
int g_blocks_left = 0;
void* two_block_alloc(size_t n) {
  if (g_blocks_left == 0) return nullptr;
  --g_blocks_left;
  return std::malloc(n);
}
void two_block_free(void* p) {
  ++g_blocks_left;
  std::free(p);
}

TEST(CachingAllocator, ReusesFreedBlocksOfTheSameSize) {
  CachingAllocator allocator(counting_alloc, counting_free, 1 << 20);
  EXPECT_EQ(allocator.allocate(0), nullptr);  // needs no block
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

// When the system is out of memory, the cached blocks go back to it and the
// allocation is tried once more; nullptr only when that fails too.
TEST(CachingAllocator, FlushesTheCacheWhenTheSystemIsOutOfMemory) {
  g_blocks_left = 2;
  CachingAllocator allocator(two_block_alloc, two_block_free, 1 << 20);
  void* cached = allocator.allocate(3000);
  void* live = allocator.allocate(5000);
  allocator.release(cached);
  void* other_size = allocator.allocate(700);
  EXPECT_NE(other_size, nullptr);
  EXPECT_EQ(allocator.stats().cached_bytes, 0u);
  EXPECT_EQ(allocator.allocate(3000), nullptr);
  allocator.release(live);
  allocator.release(other_size);
}

TEST(CachingAllocator, RoundingBoundsWaste) {
  for (size_t n : {1ul, 511ul, 513ul, (1ul << 20) + 1, 3ul << 22, 1000000007ul}) {
    const size_t r = CachingAllocator::rounded(n);
    EXPECT_GE(r, n);
    EXPECT_LE(r, n + n / 8 + 512) << n;
  }
}

// A graph capture's memory: blocks released while holding are reused by the
// captured work itself but by nobody else until they are given back.
TEST(CachingAllocator, HeldBlocksStayOutOfTheCacheUntilGivenBack) {
  CachingAllocator allocator(counting_alloc, counting_free, 1 << 20);
  void* cached = allocator.allocate(3000);
  allocator.release(cached);
  allocator.begin_holding();
  void* first = allocator.allocate(3000);  // the cache serves the capture too
  EXPECT_EQ(first, cached);
  allocator.release(first);
  void* second = allocator.allocate(3000);  // the captured work reuses its own block
  EXPECT_EQ(second, first);
  void* kept = allocator.allocate(700);
  allocator.release(second);
  const CachingAllocator::Held held = allocator.end_holding();
  ASSERT_EQ(held.blocks.size(), 1u);
  EXPECT_EQ(held.blocks[0], first);
  EXPECT_EQ(held.still_live, 1u);  // `kept`
  void* after = allocator.allocate(3000);  // the graph's block is not handed out
  EXPECT_NE(after, first);
  allocator.release_held(held.blocks);
  EXPECT_EQ(allocator.allocate(3000), first);  // now it is
  EXPECT_THROW(
      {
        allocator.begin_holding();
        allocator.begin_holding();
      },
      Error);
  allocator.end_holding();
  for (void* p : {after, first, kept}) allocator.release(p);
}

// After a capture, released blocks are cached again as usual; a second
// capture never takes the first's blocks (its graph still replays into
// them), and blocks given back count as cached.
TEST(CachingAllocator, EachCaptureKeepsItsOwnBlocks) {
  CachingAllocator allocator(counting_alloc, counting_free, 1 << 20);
  allocator.begin_holding();
  void* first_graphs = allocator.allocate(3000);
  allocator.release(first_graphs);
  const CachingAllocator::Held first = allocator.end_holding();
  EXPECT_EQ(first.blocks, std::vector<void*>{first_graphs});
  void* eager = allocator.allocate(700);
  allocator.release(eager);
  EXPECT_EQ(allocator.stats().cached_bytes, CachingAllocator::rounded(700));
  EXPECT_EQ(allocator.allocate(700), eager);
  allocator.begin_holding();
  void* second_graphs = allocator.allocate(3000);
  ASSERT_NE(second_graphs, first_graphs);
  allocator.release(second_graphs);
  const CachingAllocator::Held second = allocator.end_holding();
  EXPECT_EQ(second.blocks, std::vector<void*>{second_graphs});
  allocator.release_held(first.blocks);
  allocator.release_held(second.blocks);
  EXPECT_EQ(allocator.stats().cached_bytes, 2 * CachingAllocator::rounded(3000));
  allocator.release(eager);
}

// run_branches: a block released by one stream's work is not handed to the
// other's until the streams have joined (end_deferring), then as usual.
TEST(CachingAllocator, DeferredReleasesWaitForTheEnd) {
  CachingAllocator allocator(counting_alloc, counting_free, 1 << 20);
  void* released = allocator.allocate(3000);
  allocator.begin_deferring();
  allocator.release(released);
  void* other = allocator.allocate(3000);
  EXPECT_NE(other, released);
  allocator.begin_deferring();  // nested: only the outer end releases
  allocator.end_deferring();
  void* another = allocator.allocate(3000);
  EXPECT_NE(another, released);
  allocator.end_deferring();
  EXPECT_EQ(allocator.allocate(3000), released);
  EXPECT_THROW(allocator.end_deferring(), Error);
  for (void* p : {released, other, another}) allocator.release(p);
}

// A deferred block is released once, at the end of its own branches: the
// next run of branches does not release it again while it is in use.
TEST(CachingAllocator, DeferredBlocksAreReleasedOnce) {
  CachingAllocator allocator(counting_alloc, counting_free, 1 << 20);
  allocator.begin_deferring();
  void* block = allocator.allocate(3000);
  allocator.release(block);
  allocator.end_deferring();
  void* reused = allocator.allocate(3000);
  ASSERT_EQ(reused, block);
  allocator.begin_deferring();
  allocator.end_deferring();
  void* fresh = allocator.allocate(3000);
  ASSERT_NE(fresh, reused) << "a block in use was handed out again";
  allocator.release(reused);
  allocator.release(fresh);
}

// Branches inside a graph capture: a deferred block ends up held for the graph.
TEST(CachingAllocator, DeferredReleasesWhileHoldingAreHeld) {
  CachingAllocator allocator(counting_alloc, counting_free, 1 << 20);
  allocator.begin_holding();
  allocator.begin_deferring();
  void* block = allocator.allocate(3000);
  allocator.release(block);
  void* live = allocator.allocate(3000);
  EXPECT_NE(live, block);
  allocator.end_deferring();
  const CachingAllocator::Held held = allocator.end_holding();
  ASSERT_EQ(held.blocks.size(), 1u);
  EXPECT_EQ(held.blocks[0], block);
  EXPECT_EQ(held.still_live, 1u);  // `live`
  allocator.release_held(held.blocks);
  allocator.release(live);
}

}  // namespace
}  // namespace engine
