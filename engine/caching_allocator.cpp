#include "engine/caching_allocator.h"

#include "engine/error.h"

namespace engine {

CachingAllocator::CachingAllocator(RawAlloc raw_alloc, RawFree raw_free, size_t max_cached_bytes)
    : raw_alloc_(raw_alloc), raw_free_(raw_free), max_cached_bytes_(max_cached_bytes) {}

CachingAllocator::~CachingAllocator() { flush(); }

size_t CachingAllocator::rounded(size_t nbytes) {
  // 512-byte steps for small blocks; above 1 MiB, 1/16 of the next power of two
  // bounds the waste at ~6% while letting similar large shapes share blocks.
  if (nbytes <= (1u << 20)) return (nbytes + 511) / 512 * 512;
  size_t power = 1u << 20;
  while (power < nbytes) power <<= 1;
  const size_t step = power / 16;
  return (nbytes + step - 1) / step * step;
}

void* CachingAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  const size_t size = rounded(nbytes);
  std::lock_guard<std::mutex> lock(mutex_);
  void* ptr = allocate_locked(size);
  if (ptr != nullptr && holding_) allocated_while_holding_.insert(ptr);
  return ptr;
}

void* CachingAllocator::allocate_locked(size_t size) {
  if (holding_) {
    if (void* ptr = take(held_blocks_, size)) return ptr;
  }
  if (void* ptr = take(free_blocks_, size)) {
    stats_.cached_bytes -= size;
    ++stats_.cache_hits;
    return ptr;
  }
  void* ptr = raw_alloc_(size);
  if (ptr == nullptr) {  // give the cache back and try once more
    flush_locked();
    ptr = raw_alloc_(size);
    if (ptr == nullptr) return nullptr;
  }
  ++stats_.system_allocations;
  block_sizes_[ptr] = size;
  return ptr;
}

void* CachingAllocator::take(std::unordered_map<size_t, std::vector<void*>>& lists, size_t size) {
  auto found = lists.find(size);
  if (found == lists.end() || found->second.empty()) return nullptr;
  void* ptr = found->second.back();
  found->second.pop_back();
  return ptr;
}

void CachingAllocator::release(void* ptr) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (deferring_ > 0) {
    deferred_.push_back(ptr);
    return;
  }
  release_locked(ptr);
}

void CachingAllocator::release_locked(void* ptr) {
  const size_t size = block_sizes_.at(ptr);
  if (holding_) {
    allocated_while_holding_.erase(ptr);
    held_blocks_[size].push_back(ptr);
    return;
  }
  if (stats_.cached_bytes + size > max_cached_bytes_) {
    raw_free_(ptr);
    block_sizes_.erase(ptr);
    return;
  }
  free_blocks_[size].push_back(ptr);
  stats_.cached_bytes += size;
}

void CachingAllocator::flush() {
  std::lock_guard<std::mutex> lock(mutex_);
  flush_locked();
}

void CachingAllocator::flush_locked() {
  for (auto& [size, blocks] : free_blocks_) {
    for (void* block : blocks) {
      raw_free_(block);
      block_sizes_.erase(block);
    }
  }
  free_blocks_.clear();
  stats_.cached_bytes = 0;
}

void CachingAllocator::begin_holding() {
  std::lock_guard<std::mutex> lock(mutex_);
  check(!holding_, "the caching allocator is already holding blocks for another capture");
  holding_ = true;
}

CachingAllocator::Held CachingAllocator::end_holding() {
  std::lock_guard<std::mutex> lock(mutex_);
  Held held;
  for (auto& [size, blocks] : held_blocks_) held.blocks.insert(held.blocks.end(), blocks.begin(), blocks.end());
  held.still_live = allocated_while_holding_.size();
  held_blocks_.clear();
  allocated_while_holding_.clear();
  holding_ = false;
  return held;
}

void CachingAllocator::release_held(const std::vector<void*>& blocks) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (void* ptr : blocks) {
    const size_t size = block_sizes_.at(ptr);
    free_blocks_[size].push_back(ptr);
    stats_.cached_bytes += size;
  }
}

void CachingAllocator::begin_deferring() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++deferring_;
}

void CachingAllocator::end_deferring() {
  std::lock_guard<std::mutex> lock(mutex_);
  check(deferring_ > 0, "the caching allocator is not deferring releases");
  if (--deferring_ > 0) return;
  for (void* ptr : deferred_) release_locked(ptr);
  deferred_.clear();
}

CachingAllocator::Stats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

}  // namespace engine
