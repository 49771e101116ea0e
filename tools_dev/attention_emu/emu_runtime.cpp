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

// One warp's fragments for a collective matrix instruction: two slots used
// alternately (a lane writes slot c % 2 for its c-th collective, one barrier,
// reads the others'; it can only write that slot again after the next
// barrier, which every lane reaches after its reads).
struct WarpSlots {
  const void* address[2][32];
  uint32_t a[2][32][4];
  uint32_t b[2][32][2];
};

struct Block {
  std::vector<float4> shared;
  size_t shared_bytes = 0;
  std::vector<WarpSlots> slots;
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
thread_local uint64_t tl_collectives = 0;                      // warp matrix instructions so far

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

void ldmatrix_x4(uint32_t* r, bool trans, const void* row) {
  Block& block = *tl_block;
  const char* base = reinterpret_cast<const char*>(block.shared.data());
  const char* address = static_cast<const char*>(row);
  if (reinterpret_cast<uintptr_t>(address) % 16 != 0 || address < base ||
      address + 16 > base + block.shared_bytes) {
    char buffer[128];
    std::snprintf(buffer, sizeof buffer, "ldmatrix row address %p misaligned or outside shared memory",
                  static_cast<const void*>(address));
    note(&Faults::bad_ldmatrix, buffer);
    row = base;  // read something harmless; the fault fails the case
  }
  WarpSlots& slots = block.slots[warp()];
  const int slot = static_cast<int>(tl_collectives++ % 2), l = lane();
  slots.address[slot][l] = row;
  block.warp_barriers[warp()]->wait("ldmatrix");
  auto element = [&](int matrix, int r_, int c_) {  // element (r_, c_) of 8 x 8 matrix `matrix`
    uint16_t value;
    std::memcpy(&value, static_cast<const char*>(slots.address[slot][8 * matrix + r_]) + 2 * c_, 2);
    return static_cast<uint32_t>(value);
  };
  for (int i = 0; i < 4; ++i) {
    const int g = l / 4, t = l % 4;
    r[i] = trans ? element(i, 2 * t, g) | element(i, 2 * t + 1, g) << 16
                 : element(i, g, 2 * t) | element(i, g, 2 * t + 1) << 16;
  }
}

namespace {
double bf16_value(uint32_t bits) {
  const uint32_t u = (bits & 0xffffu) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace

void mma_m16n8k16_bf16(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  Block& block = *tl_block;
  WarpSlots& slots = block.slots[warp()];
  const int slot = static_cast<int>(tl_collectives++ % 2), l = lane();
  for (int i = 0; i < 4; ++i) slots.a[slot][l][i] = a[i];
  slots.b[slot][l][0] = b0;
  slots.b[slot][l][1] = b1;
  block.warp_barriers[warp()]->wait("mma");
  // A[row][k]: lane 4 (row % 8) + (k % 8) / 2, register (row >= 8) + 2 (k >= 8), half k % 2.
  auto A = [&](int row, int k) {
    return bf16_value(slots.a[slot][4 * (row % 8) + (k % 8) / 2][(row >= 8) + 2 * (k >= 8)] >> (16 * (k % 2)));
  };
  // B[k][col]: lane 4 col + (k % 8) / 2, register (k >= 8), half k % 2.
  auto B = [&](int k, int col) { return bf16_value(slots.b[slot][4 * col + (k % 8) / 2][k >= 8] >> (16 * (k % 2))); };
  const int g = l / 4, t = l % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
    double sum = c[i];
    for (int k = 0; k < 16; ++k) sum += A(row, k) * B(k, col);
    c[i] = static_cast<float>(sum);
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
        b.shared_bytes = smem_bytes;
        b.slots.resize(warps);
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
          tl_collectives = 0;
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
