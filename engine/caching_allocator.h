// A caching allocator: freed blocks go to a free list keyed by their rounded
// size and are handed out again, so a training or evaluation loop that
// allocates the same shapes every step stops calling the system allocator
// (on the CPU: no mmap/munmap and page faults per op; on CUDA: no cudaMalloc in
// the steady state). The cache is capped and flushed when an allocation fails.
#pragma once
#include <cstddef>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace engine {

class CachingAllocator {
 public:
  using RawAlloc = void* (*)(size_t nbytes);  // returns nullptr on failure
  using RawFree = void (*)(void* ptr);

  CachingAllocator(RawAlloc raw_alloc, RawFree raw_free, size_t max_cached_bytes);
  ~CachingAllocator();  // returns cached blocks to the system
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // nullptr only if the system is out of memory even after flushing the cache.
  void* allocate(size_t nbytes);
  void release(void* ptr);  // ptr must come from allocate()
  void flush();             // frees every cached block

  // For capturing a CUDA graph, whose replays write again every block that
  // the captured work allocated: none of those may be handed to anyone else
  // while the graph lives. Between begin_holding() and end_holding(),
  // released blocks go to a held list instead of the cache (allocations take
  // from it first, so the captured work reuses memory as it would eagerly:
  // its ops run in stream order). end_holding() hands the held blocks to the
  // caller, who gives them back with release_held() once the replays are
  // over. One holder at a time.
  struct Held {
    std::vector<void*> blocks;
    size_t still_live = 0;  // blocks allocated while holding and not released
  };
  void begin_holding();
  Held end_holding();
  void release_held(const std::vector<void*>& blocks);

  // For work queued on two streams at once (run_branches): a block that one
  // stream's work releases may still be read by kernels queued there when the
  // other stream's work asks for memory. Between begin_deferring() and
  // end_deferring(), released blocks wait in a list; end_deferring(), called
  // once the streams have joined again, releases them (to the cache, or to
  // the held list while holding). Calls nest.
  void begin_deferring();
  void end_deferring();

  struct Stats {
    size_t system_allocations = 0;  // calls that reached raw_alloc
    size_t cache_hits = 0;
    size_t cached_bytes = 0;
  };
  Stats stats() const;

  // Sizes are rounded up to this granularity so near-equal requests share blocks.
  static size_t rounded(size_t nbytes);

 private:
  void flush_locked();  // flush() with mutex_ held
  void release_locked(void* ptr);
  void* allocate_locked(size_t size);
  // A block of `size` from one of the lists, or nullptr.
  static void* take(std::unordered_map<size_t, std::vector<void*>>& lists, size_t size);
  RawAlloc raw_alloc_;
  RawFree raw_free_;
  size_t max_cached_bytes_;
  mutable std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_blocks_;  // rounded size -> blocks
  std::unordered_map<void*, size_t> block_sizes_;               // every live or cached block
  bool holding_ = false;
  std::unordered_map<size_t, std::vector<void*>> held_blocks_;  // released while holding
  std::unordered_set<void*> allocated_while_holding_;           // and not yet released
  int deferring_ = 0;                                           // begin_deferring() calls not yet ended
  std::vector<void*> deferred_;                                 // released while deferring
  Stats stats_;
};

// The statistics of the allocator behind device_alloc for one device (the
// host's, or a GPU's): tests check that a steady-state step reaches the
// system allocator (cudaMalloc) no more.
struct Device;
CachingAllocator::Stats device_allocator_stats(Device device);

}  // namespace engine
