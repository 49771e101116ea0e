// The emulated GPU (see emu_runtime.h). A pool of worker threads plays the
// threads of one block at a time; blocks run one after another.
#include "emu_runtime.h"

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace emu {

namespace {

// A reusable barrier for `count` threads; a wait that lasts 60 s is a
// deadlock (a thread skipped a __syncthreads, or a shuffle was divergent).
class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}
  void wait(const char* what) {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t generation = generation_;
    if (++waiting_ == count_) {
      waiting_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    if (!cv_.wait_for(lock, std::chrono::seconds(60), [&] { return generation_ != generation; })) {
      std::fprintf(stderr, "emu: deadlock at %s (%d of %d threads arrived)\n", what, waiting_, count_);
      std::abort();
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int count_, waiting_ = 0;
  uint64_t generation_ = 0;
};

struct Block {
  std::vector<float4> shared;
  std::unique_ptr<Barrier> barrier;
  std::vector<std::unique_ptr<Barrier>> warp_barriers;
  std::vector<std::array<float, 32>> exchange;
};

struct PendingCopy {
  float* dst;
  float values[4];
};

thread_local Block* tl_block = nullptr;
thread_local std::vector<std::vector<PendingCopy>> tl_groups;  // committed groups, oldest first
thread_local std::vector<PendingCopy> tl_open;                 // issued, not yet committed

std::atomic<int> async_mode{static_cast<int>(AsyncMode::kEager)};
std::mutex fault_mutex;
Faults faults;
std::map<const void*, int> max_smem;

void note(int64_t Faults::*counter, const std::string& what) {
  std::lock_guard<std::mutex> lock(fault_mutex);
  if (!faults.any()) faults.first = what;
  ++(faults.*counter);
}

int lane() { return static_cast<int>(threadIdx.x % 32); }
int warp() { return static_cast<int>(threadIdx.x / 32); }

void land(const PendingCopy& copy) { std::memcpy(copy.dst, copy.values, 16); }

}  // namespace

void note_misaligned(const void* address) {
  char buffer[96];
  std::snprintf(buffer, sizeof buffer, "misaligned float4 access at %p", address);
  note(&Faults::misaligned, buffer);
}

void set_async_mode(AsyncMode mode) { async_mode = static_cast<int>(mode); }

void set_max_dynamic_smem(const void* kernel, int bytes) {
  std::lock_guard<std::mutex> lock(fault_mutex);
  max_smem[kernel] = bytes;
  if (bytes > 227 * 1024) {
    if (!faults.any()) faults.first = "more than 227 KB of dynamic shared memory requested";
    ++faults.smem_overflow;
  }
}

float4* block_shared() { return tl_block->shared.data(); }

void copy16_async(float* dst, const float* src, bool valid) {
  if (reinterpret_cast<uintptr_t>(dst) % 16 != 0 || (valid && reinterpret_cast<uintptr_t>(src) % 16 != 0)) {
    char buffer[128];
    std::snprintf(buffer, sizeof buffer, "misaligned cp.async: shared %p <- global %p", static_cast<void*>(dst),
                  static_cast<const void*>(src));
    note(&Faults::misaligned_async, buffer);
  }
  PendingCopy copy{dst, {0, 0, 0, 0}};
  if (valid) std::memcpy(copy.values, src, 16);
  if (static_cast<AsyncMode>(async_mode.load()) == AsyncMode::kEager) {
    land(copy);
  } else {
    tl_open.push_back(copy);
  }
}

void async_commit() {
  tl_groups.push_back(std::move(tl_open));
  tl_open.clear();
}

void async_wait(int pending) {
  // Retires the oldest groups until at most `pending` remain (copies issued
  // but not committed stay in flight, as on the hardware).
  while (static_cast<int>(tl_groups.size()) > pending) {
    for (const PendingCopy& copy : tl_groups.front()) land(copy);
    tl_groups.erase(tl_groups.begin());
  }
}

Faults take_faults() {
  std::lock_guard<std::mutex> lock(fault_mutex);
  Faults out = faults;
  faults = Faults{};
  return out;
}

namespace {

// Worker threads, reused from block to block: worker t plays threadIdx.x = t.
class Pool {
 public:
  void run(int threads, const std::function<void(int)>& body) {
    grow(threads);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      body_ = &body;
      active_ = threads;
      remaining_ = threads;
      ++round_;
    }
    start_.notify_all();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return remaining_ == 0; });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    start_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

 private:
  void grow(int threads) {
    while (static_cast<int>(workers_.size()) < threads) {
      const int index = static_cast<int>(workers_.size());
      workers_.emplace_back([this, index] { loop(index); });
    }
  }
  void loop(int index) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* body;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        start_.wait(lock, [&] { return stop_ || (round_ != seen && index < active_); });
        if (stop_) return;
        seen = round_;
        body = body_;
      }
      (*body)(index);
      std::lock_guard<std::mutex> lock(mutex_);
      if (--remaining_ == 0) done_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable start_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* body_ = nullptr;
  int active_ = 0, remaining_ = 0;
  uint64_t round_ = 0;
  bool stop_ = false;
};

Pool& pool() {
  static Pool instance;
  return instance;
}

}  // namespace

void run_grid(dim3 grid, dim3 block, size_t smem_bytes, const void* kernel, const std::function<void()>& body) {
  if (smem_bytes > 48 * 1024) {
    std::lock_guard<std::mutex> lock(fault_mutex);
    auto it = max_smem.find(kernel);
    if (it == max_smem.end() || static_cast<size_t>(it->second) < smem_bytes) {
      if (!faults.any()) faults.first = "dynamic shared memory above 48 KB without cudaFuncSetAttribute";
      ++faults.smem_overflow;
    }
  }
  const int threads = static_cast<int>(block.x * block.y * block.z);
  if (block.y != 1 || block.z != 1 || threads % 32 != 0) {
    std::fprintf(stderr, "emu: only 1-D blocks of whole warps are emulated\n");
    std::abort();
  }
  const int warps = threads / 32;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        Block b;
        b.shared.assign((smem_bytes + 15) / 16, float4(std::numeric_limits<float>::quiet_NaN(),
                                                       std::numeric_limits<float>::quiet_NaN(),
                                                       std::numeric_limits<float>::quiet_NaN(),
                                                       std::numeric_limits<float>::quiet_NaN()));
        b.barrier = std::make_unique<Barrier>(threads);
        for (int w = 0; w < warps; ++w) b.warp_barriers.push_back(std::make_unique<Barrier>(32));
        b.exchange.resize(warps);
        pool().run(threads, [&](int t) {
          threadIdx = {static_cast<unsigned>(t), 0, 0};
          blockIdx = {x, y, z};
          blockDim = block;
          gridDim = grid;
          tl_block = &b;
          tl_groups.clear();
          tl_open.clear();
          body();
          int64_t unwaited = static_cast<int64_t>(tl_open.size());
          for (const auto& group : tl_groups) unwaited += static_cast<int64_t>(group.size());
          if (unwaited > 0) note(&Faults::unwaited_copies, "cp.async copies never waited for");
          tl_block = nullptr;
        });
      }
    }
  }
}

}  // namespace emu

void __syncthreads() { emu::tl_block->barrier->wait("__syncthreads"); }

void __syncwarp(unsigned mask) {
  if (mask != 0xffffffffu) {
    std::fprintf(stderr, "emu: only full-warp __syncwarp is emulated\n");
    std::abort();
  }
  emu::tl_block->warp_barriers[emu::warp()]->wait("__syncwarp");
}

float __shfl_xor_sync(unsigned mask, float value, int lane_mask, int width) {
  if (mask != 0xffffffffu || width != 32) {
    std::fprintf(stderr, "emu: only full-warp shuffles are emulated\n");
    std::abort();
  }
  auto& slots = emu::tl_block->exchange[emu::warp()];
  auto& barrier = *emu::tl_block->warp_barriers[emu::warp()];
  slots[emu::lane()] = value;
  barrier.wait("__shfl_xor_sync (write)");
  const float result = slots[emu::lane() ^ lane_mask];
  barrier.wait("__shfl_xor_sync (read)");
  return result;
}
