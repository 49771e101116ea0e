// Timing for benchmarks (./bench_kernels, ./bench_vit).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/device.h"

namespace engine {

// The median of `values` (the mean of the middle two for an even count);
// at least one value.
double median(std::vector<double> values);

// After `warmup` untimed calls, the median over `rounds` of the per-call time
// (ms) of `calls` back-to-back calls of `run`, each round timed on the device
// by device_time_ms (CUDA events on a GPU).
double median_time_ms(Device device, const std::function<void()>& run, int calls, int rounds = 5, int warmup = 3);

// Queues about `exponentials` hardware base-2 exponentials on a GPU (all SMs
// full, nothing else in the loop; the selective scan's compute ceiling) and
// returns how many exactly. Only with CUDA.
int64_t cuda_exp2_probe(int device, int64_t exponentials);
// The same for float32 fused multiply-adds (FFMA, 2 FLOPs each): the ceiling
// of the float32 GEMMs and attention, which do not use the tensor cores.
int64_t cuda_fma_probe(int device, int64_t fmas);

}  // namespace engine
