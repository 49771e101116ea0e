// A host emulation of the CUDA execution model, enough to run the scan
// kernels' device code on the CPU: blocks run one after another; the threads
// of a block are fibers (ucontext) on one OS thread, switched only at
// __syncthreads and warp shuffles, so every run is deterministic. Shared
// memory is static storage (one block at a time); dynamic shared memory is
// a buffer filled with NaN bytes before every block. Shuffles exchange the
// 32 lanes' values through a per-warp mailbox between two warp barriers and
// check that every lane of the warp takes part in the same kind of shuffle
// (full mask). A thread that finishes leaves the block barrier's count (as on
// the GPU); a warp shuffle or barrier that can never complete is reported as
// a deadlock. EMU_SCHEDULE=random picks the next thread at random at every
// switch, so that a missing barrier shows as a wrong result.
#pragma once
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace emu {

[[noreturn]] inline void die(const char* what) {
  std::fprintf(stderr, "emu: %s\n", what);
  std::abort();
}

struct Barrier {
  int expected = 0, arrived = 0;
  uint64_t generation = 0;
};

enum class ShuffleKind : int { kNone, kXor, kIdx, kUp, kSyncWarp };

struct Fiber {
  ucontext_t context;
  uint3 thread_idx;
  int lane = 0, warp = 0;
  bool done = false;
};

struct Warp {
  Barrier barrier;
  uint64_t slot[32];
  ShuffleKind kind[32];
  int width[32];
};

struct State {
  ucontext_t main_context;
  std::vector<Fiber> fibers;
  std::vector<std::vector<char>> stacks;
  std::vector<Warp> warps;
  Barrier block_barrier;
  Fiber* current = nullptr;
  int current_index = 0;
  int live = 0;
  long yields_without_progress = 0;
  uint3 block_idx;
  dim3 block_dim, grid_dim;
  std::vector<unsigned char> dynamic_shared;
  size_t max_dynamic_shared = 48 * 1024;  // raised by cudaFuncSetAttribute
  const std::function<void()>* body = nullptr;
  uint64_t shuffles = 0, barriers = 0;
  bool random_schedule = false;
  uint64_t rng_state = 0x9e3779b97f4a7c15ull;
  uint64_t random() {  // splitmix64
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
};

inline State& state() {
  static State s = [] {
    State init;
    const char* schedule = std::getenv("EMU_SCHEDULE");
    init.random_schedule = schedule && std::strcmp(schedule, "random") == 0;
    return init;
  }();
  return s;
}

inline void progress() { state().yields_without_progress = 0; }

// Runs the next fiber that has not finished (round robin); back to the
// launcher when none is left.
inline void yield() {
  State& s = state();
  Fiber* me = s.current;
  const int n = static_cast<int>(s.fibers.size());
  if (++s.yields_without_progress > (s.random_schedule ? 64L : 4L) * n + 16) die("deadlock: no thread of the block can go on (divergent barrier or shuffle?)");
  // EMU_SCHEDULE=random: the next thread is picked at random (a reproducible
  // stream), which varies the interleaving of warps between barriers.
  const int start = s.random_schedule ? static_cast<int>(s.random() % n) : s.current_index + 1;
  for (int step = 0; step < n; ++step) {
    const int i = (start + step) % n;
    if (!s.fibers[i].done) {
      if (&s.fibers[i] == me) return;
      s.current_index = i;
      s.current = &s.fibers[i];
      swapcontext(&me->context, &s.fibers[i].context);
      return;
    }
  }
  s.current = nullptr;
  swapcontext(&me->context, &s.main_context);
}

inline void wait(Barrier& b) {
  const uint64_t generation = b.generation;
  if (++b.arrived >= b.expected) {
    b.arrived = 0;
    ++b.generation;
    progress();
    return;
  }
  while (b.generation == generation) yield();
  progress();
}

inline void sync_block() {
  ++state().barriers;
  wait(state().block_barrier);
}

// One full-mask warp-wide exchange: returns the value of lane `source(lane)`.
template <typename T, typename Source>
T exchange(unsigned mask, T value, ShuffleKind kind, int width, Source source) {
  static_assert(sizeof(T) <= 8, "values up to 8 bytes");
  State& s = state();
  if (mask != 0xffffffffu) die("only full-mask shuffles are emulated");
  if (width <= 0 || width > 32 || (width & (width - 1))) die("shuffle width must be a power of 2 up to 32");
  Fiber& f = *s.current;
  Warp& w = s.warps[f.warp];
  ++s.shuffles;
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  w.slot[f.lane] = bits;
  w.kind[f.lane] = kind;
  w.width[f.lane] = width;
  wait(w.barrier);
  for (int l = 0; l < 32; ++l) {
    if (w.kind[l] != kind || w.width[l] != width) die("lanes of a warp are in different shuffles");
  }
  const int src = source(f.lane);
  T out;
  const uint64_t got = w.slot[src];
  std::memcpy(&out, &got, sizeof(T));
  wait(w.barrier);
  return out;
}

inline void fiber_main(int index) {
  State& s = state();
  (*s.body)();
  s.fibers[index].done = true;
  --s.live;
  // A finished thread leaves the block barrier; the warps' barriers keep
  // counting it (a shuffle with an exited lane never completes).
  --s.block_barrier.expected;
  if (s.block_barrier.arrived > 0 && s.block_barrier.arrived >= s.block_barrier.expected) {
    s.block_barrier.arrived = 0;
    ++s.block_barrier.generation;
  }
  progress();
  yield();
  die("a finished thread was resumed");
}

struct LaunchConfig {
  dim3 grid, block;
  size_t shared;
};

inline LaunchConfig config(dim3 grid, dim3 block, size_t shared = 0, void* /*stream*/ = nullptr) {
  return {grid, block, shared};
}

// Runs body once per thread of every block of the grid.
inline void launch(const LaunchConfig& cfg, const std::function<void()>& body) {
  State& s = state();
  const int threads = static_cast<int>(cfg.block.x * cfg.block.y * cfg.block.z);
  if (threads <= 0 || threads > 1024) die("bad block size");
  if (threads % 32 != 0) die("blocks of whole warps only");
  if (cfg.shared > s.max_dynamic_shared) die("dynamic shared memory above the kernel's limit");
  if (cfg.shared > 227 * 1024) die("dynamic shared memory above 227 KiB");
  s.grid_dim = cfg.grid;
  s.block_dim = cfg.block;
  s.body = &body;
  // EMU_STACK_KB: the threads' stack size (smaller is faster under ASan,
  // which clears a stack's shadow at every switch).
  static const size_t kStack = std::getenv("EMU_STACK_KB") ? std::atoi(std::getenv("EMU_STACK_KB")) * size_t{1024} : 512 * 1024;
  if (s.stacks.size() < static_cast<size_t>(threads)) s.stacks.resize(threads);
  for (int i = 0; i < threads; ++i) {
    if (s.stacks[i].empty()) s.stacks[i].resize(kStack);
  }
  for (unsigned bz = 0; bz < cfg.grid.z; ++bz) {
    for (unsigned by = 0; by < cfg.grid.y; ++by) {
      for (unsigned bx = 0; bx < cfg.grid.x; ++bx) {
        s.block_idx = {bx, by, bz};
        s.dynamic_shared.assign(cfg.shared + 64, 0xff);  // NaN in every float or double
        s.fibers.assign(threads, Fiber{});
        s.warps.assign(threads / 32, Warp{});
        for (Warp& w : s.warps) w.barrier.expected = 32;
        s.block_barrier = Barrier{};
        s.block_barrier.expected = threads;
        s.live = threads;
        for (int i = 0; i < threads; ++i) {
          Fiber& f = s.fibers[i];
          f.thread_idx = {static_cast<unsigned>(i % cfg.block.x), static_cast<unsigned>(i / cfg.block.x % cfg.block.y),
                          static_cast<unsigned>(i / (cfg.block.x * cfg.block.y))};
          f.lane = i % 32;
          f.warp = i / 32;
          getcontext(&f.context);
          f.context.uc_stack.ss_sp = s.stacks[i].data();
          f.context.uc_stack.ss_size = kStack;
          f.context.uc_link = nullptr;
          makecontext(&f.context, reinterpret_cast<void (*)()>(&fiber_main), 1, i);
        }
        s.current_index = 0;
        s.current = &s.fibers[0];
        progress();
        swapcontext(&s.main_context, &s.fibers[0].context);
        if (s.live != 0) die("the block ended with threads still running");
      }
    }
  }
  s.body = nullptr;
}

inline unsigned char* dynamic_shared() {
  return reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(state().dynamic_shared.data()) + 63) & ~uintptr_t{63});
}

// The MUFU base-2 exponential (ex2.approx.ftz.f32), as exactly as the host can.
inline float ex2(float x) {
  if (std::fpclassify(x) == FP_SUBNORMAL) x = 0.0f;
  const float r = std::exp2(x);
  return std::fpclassify(r) == FP_SUBNORMAL ? 0.0f : r;
}

// Vector accesses must be aligned as on the GPU.
template <typename P, typename T>
P aligned_load(const T* at) {
  if (reinterpret_cast<uintptr_t>(at) % alignof(P) != 0) die("misaligned vector load");
  P out;
  std::memcpy(&out, at, sizeof(P));
  return out;
}
template <typename P, typename T>
void aligned_store(T* at, const P& value) {
  if (reinterpret_cast<uintptr_t>(at) % alignof(P) != 0) die("misaligned vector store");
  std::memcpy(at, &value, sizeof(P));
}

inline void poison(void* data, size_t bytes) { std::memset(data, 0xff, bytes); }

}  // namespace emu

// ---- the CUDA names the kernels use
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __restrict__

#define threadIdx (::emu::state().current->thread_idx)
#define blockIdx (::emu::state().block_idx)
#define blockDim (::emu::state().block_dim)
#define gridDim (::emu::state().grid_dim)

inline void __syncthreads() { ::emu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::emu::exchange(mask, 0, ::emu::ShuffleKind::kSyncWarp, 32, [](int lane) { return lane; });
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
  return ::emu::exchange(mask, var, ::emu::ShuffleKind::kXor, width, [&](int lane) {
    const int src = lane ^ lane_mask;
    return (src / width == lane / width) ? src : lane;  // outside the segment: own value
  });
}
template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {
  return ::emu::exchange(mask, var, ::emu::ShuffleKind::kIdx, width,
                         [&](int lane) { return lane / width * width + (src_lane % width + width) % width; });
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  return ::emu::exchange(mask, var, ::emu::ShuffleKind::kUp, width, [&](int lane) {
    const int src = lane - static_cast<int>(delta);
    return src >= lane / width * width ? src : lane;
  });
}
inline unsigned __umulhi(unsigned a, unsigned b) { return static_cast<unsigned>((uint64_t{a} * b) >> 32); }
inline int __float_as_int(float f) {
  int i;
  std::memcpy(&i, &f, sizeof i);
  return i;
}
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}
