// The emulated GPU: launches run each block's threads as std::threads, with
// shared memory, barriers, warp exchanges and cp.async groups per block.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace emu {

// How cp.async lands: kEager copies at issue (what the kernels' plain-copy
// fallback does), kLazy only when a wait_group retires its group (the latest
// the hardware may), so a read before the matching wait sees stale data.
enum class AsyncMode { kEager, kLazy };
void set_async_mode(AsyncMode mode);

// The block's dynamic shared memory (filled with NaN before each block, so
// reading what nobody wrote poisons the results).
float4* block_shared();

// cp.async of 16 bytes (valid = false: zero-fill, nothing read), and the group
// commit and wait of the issuing thread.
void copy16_async(float* dst, const float* src, bool valid);
void async_commit();
void async_wait(int pending);

// Warp-level matrix instructions (attention_mma.cu), as the PTX ISA lays
// out their fragments; every lane of the warp must take part (each call is
// one warp barrier). ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16: lane l
// gives row l % 8 of matrix l / 8 (16-byte aligned, inside the block's shared
// memory, else a fault), r[i] receives matrix i's row l / 4, elements
// 2 (l % 4) and + 1 (.trans: its column l / 4, rows 2 (l % 4) and + 1).
void ldmatrix_x4(uint32_t* r, bool trans, const void* row);
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, c += a b: the exact
// products summed in double, rounded once to float.
void mma_m16n8k16_bf16(float* c, const uint32_t* a, uint32_t b0, uint32_t b1);

// Runs body() on grid x block emulated threads.
void run_grid(dim3 grid, dim3 block, size_t smem_bytes, const void* kernel, const std::function<void()>& body);

// kernel<<<grid, block, smem, stream>>>(args...) becomes
// emu::launcher(kernel, grid, block, smem, stream)(args...).
template <typename Kernel>
struct Launch {
  Kernel* kernel;
  dim3 grid, block;
  size_t smem;
  template <typename... Args>
  void operator()(const Args&... args) const {
    Kernel* k = kernel;
    run_grid(grid, block, smem, reinterpret_cast<const void*>(kernel), [&] { k(args...); });
  }
};
template <typename Kernel>
Launch<Kernel> launcher(Kernel* kernel, dim3 grid, dim3 block, size_t smem = 0, cudaStream_t = nullptr) {
  return {kernel, grid, block, smem};
}

// Problems seen since the last reset: misaligned float4 accesses, copies
// never waited for, shared memory beyond the opted-in size.
struct Faults {
  int64_t misaligned = 0, unwaited_copies = 0, smem_overflow = 0, misaligned_async = 0, bad_ldmatrix = 0;
  std::string first;
  bool any() const { return misaligned || unwaited_copies || smem_overflow || misaligned_async || bad_ldmatrix; }
};
Faults take_faults();

}  // namespace emu
