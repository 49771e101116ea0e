#include "engine/caching_allocator.h"

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
  auto found = free_blocks_.find(size);
  if (found != free_blocks_.end() && !found->second.empty()) {
    void* ptr = found->second.back();
    found->second.pop_back();
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

void CachingAllocator::release(void* ptr) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  const size_t size = block_sizes_.at(ptr);
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

CachingAllocator::Stats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

}  // namespace engine
