// CUDA kernels of the optimizer family: fused elementwise updates (AdamW over
// all parameters in one launch), and gradient clipping's deterministic sum of
// squares and scaling, likewise over all gradients at once.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>

#include "engine/cuda/cuda_utils.cuh"
#include "engine/optim/optim_kernels.h"

namespace engine {

namespace {

// ---------------------------------------------------------------- multi-tensor launches

// A multi-tensor kernel covers every tensor of a step in one launch: the host
// cuts each tensor into chunks of at most kChunk elements and uploads one
// table of per-tensor entries (pointers, per-tensor scalars) and chunks;
// block b handles chunk b, which names its tensor's entry.
constexpr int64_t kChunk = 32768;

struct Chunk {
  int64_t tensor, start, length;
};

// The uploaded table; `bytes` keeps it alive until the kernels queued on the
// stream have read it (the caching allocator reuses memory in stream order).
template <typename Entry>
struct ChunkTable {
  Tensor bytes;
  const Entry* entries = nullptr;
  const Chunk* chunks = nullptr;
  unsigned count = 0;
};

template <typename Entry>
ChunkTable<Entry> upload_chunks(const std::vector<Entry>& entries, const std::vector<int64_t>& sizes,
                                Device device) {
  std::vector<Chunk> chunks;
  for (size_t t = 0; t < sizes.size(); ++t) {
    for (int64_t start = 0; start < sizes[t]; start += kChunk) {
      chunks.push_back({static_cast<int64_t>(t), start, std::min(kChunk, sizes[t] - start)});
    }
  }
  const size_t chunks_at = (entries.size() * sizeof(Entry) + 15) / 16 * 16;
  Tensor host = Tensor::empty({static_cast<int64_t>(chunks_at + chunks.size() * sizeof(Chunk))}, DType::U8);
  auto* base = static_cast<uint8_t*>(host.raw_data());
  std::memcpy(base, entries.data(), entries.size() * sizeof(Entry));
  std::memcpy(base + chunks_at, chunks.data(), chunks.size() * sizeof(Chunk));
  ChunkTable<Entry> table;
  table.bytes = host.to(device);
  auto* device_base = static_cast<const uint8_t*>(table.bytes.raw_data());
  table.entries = reinterpret_cast<const Entry*>(device_base);
  table.chunks = reinterpret_cast<const Chunk*>(device_base + chunks_at);
  table.count = static_cast<unsigned>(chunks.size());
  return table;
}

// The dtype shared by all tensors of a multi-tensor call (checked).
template <typename Range, typename Get>
DType common_dtype(const char* op, const Range& items, Get tensor_of) {
  const DType dtype = tensor_of(items.front()).dtype();
  for (const auto& item : items) {
    check(tensor_of(item).dtype() == dtype, "{}: tensors of dtypes {} and {} in one call", op, dtype_name(dtype),
          dtype_name(tensor_of(item).dtype()));
  }
  return dtype;
}

// ---------------------------------------------------------------- AdamW

// One parameter's pointers and scalars; the scalars are computed on the host
// in double and rounded once, exactly as the CPU kernel does.
template <typename T>
struct AdamWEntry {
  T* p;
  const T* g;
  T* m;
  T* v;
  T decay, step_size;
};

// The scalars shared by every parameter of a step.
template <typename T>
struct AdamWShared {
  T beta1, beta2, one_minus_beta1, one_minus_beta2, bias_correction2_sqrt, eps;
};

// One element's update, in the CPU kernel's order of operations.
template <typename T>
__device__ __forceinline__ void adamw_update(T& p, T g, T& m, T& v, const AdamWEntry<T>& e, const AdamWShared<T>& s) {
  m = s.beta1 * m + s.one_minus_beta1 * g;
  v = s.beta2 * v + s.one_minus_beta2 * g * g;
  const T denom = sqrt(v) / s.bias_correction2_sqrt + s.eps;
  p = p * e.decay - e.step_size * m / denom;
}

// Block b updates chunk b: float32 in 16-byte accesses where the four
// tensors allow them (chunks start at multiples of kChunk, so the tensors'
// own alignment decides), then any tail, or everything, one element at a time.
template <typename T>
__global__ void adamw_step_kernel_impl(const AdamWEntry<T>* entries, const Chunk* chunks, AdamWShared<T> s) {
  const Chunk chunk = chunks[blockIdx.x];
  const AdamWEntry<T> e = entries[chunk.tensor];
  const int64_t end = chunk.start + chunk.length;
  int64_t scalar_start = chunk.start;
  if constexpr (std::is_same_v<T, float>) {
    const int64_t at = chunk.start;
    const size_t bytes = sizeof(Pack<T, 4>);
    if (aligned_for(e.p + at, bytes) && aligned_for(e.g + at, bytes) && aligned_for(e.m + at, bytes) &&
        aligned_for(e.v + at, bytes)) {
      const int64_t packs = chunk.length / 4;
      for (int64_t k = threadIdx.x; k < packs; k += blockDim.x) {
        const int64_t i = at + 4 * k;
        Pack<T, 4> p = load_pack<T, 4>(e.p + i), m = load_pack<T, 4>(e.m + i), v = load_pack<T, 4>(e.v + i);
        const Pack<T, 4> g = load_pack<T, 4>(e.g + i);
#pragma unroll
        for (int j = 0; j < 4; ++j) adamw_update(p.v[j], g.v[j], m.v[j], v.v[j], e, s);
        store_pack(e.p + i, p);
        store_pack(e.m + i, m);
        store_pack(e.v + i, v);
      }
      scalar_start = at + 4 * packs;
    }
  }
  for (int64_t i = scalar_start + threadIdx.x; i < end; i += blockDim.x) {
    T p = e.p[i], m = e.m[i], v = e.v[i];
    adamw_update(p, e.g[i], m, v, e, s);
    e.p[i] = p;
    e.m[i] = m;
    e.v[i] = v;
  }
}

void adamw_step_cuda(const std::vector<AdamWParam>& params, double beta1, double beta2, double eps, int64_t step) {
  if (params.empty()) return;
  DeviceGuard guard(params.front().param);
  const double bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  const DType dtype = common_dtype("adamw_step", params, [](const AdamWParam& p) -> const Tensor& { return p.param; });
  dispatch_float(dtype, "adamw_step", [&](auto tag) {
    using T = decltype(tag);
    std::vector<AdamWEntry<T>> entries;
    std::vector<int64_t> sizes;
    for (const AdamWParam& p : params) {
      entries.push_back({mutable_data_of<T>(p.param), data_of<T>(p.grad), mutable_data_of<T>(p.exp_avg),
                         mutable_data_of<T>(p.exp_avg_sq), static_cast<T>(1.0 - p.lr * p.weight_decay),
                         static_cast<T>(p.lr / bias_correction1)});
      sizes.push_back(p.param.numel());
    }
    const AdamWShared<T> shared{static_cast<T>(beta1),       static_cast<T>(beta2),
                                static_cast<T>(1.0 - beta1), static_cast<T>(1.0 - beta2),
                                static_cast<T>(std::sqrt(bias_correction2)), static_cast<T>(eps)};
    const auto table = upload_chunks(entries, sizes, params.front().param.device());
    if (table.count == 0) return;
    adamw_step_kernel_impl<T><<<table.count, kThreads, 0, current_stream()>>>(table.entries, table.chunks, shared);
    CUDA_CHECK_LAUNCH();
  });
}

// ---------------------------------------------------------------- SGD (one tensor per call)

// buf is null without momentum.
template <typename T>
__global__ void sgd_step_kernel_impl(T* p, const T* g, T* buf, T rate, T mu, bool nesterov, T wd, bool first_step,
                                     int64_t n) {
  for (int64_t i : grid_stride(n)) {
    T d = g[i] + wd * p[i];
    if (buf) {
      buf[i] = first_step ? d : mu * buf[i] + d;
      d = nesterov ? d + mu * buf[i] : buf[i];
    }
    p[i] -= rate * d;
  }
}

void sgd_step_cuda(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer, double lr, double momentum,
                   bool nesterov, double weight_decay, bool first_step) {
  DeviceGuard guard(param);
  dispatch_float(param.dtype(), "sgd_step", [&](auto tag) {
    using T = decltype(tag);
    T* buf = momentum != 0.0 ? mutable_data_of<T>(momentum_buffer) : nullptr;
    launch_1d(param.numel(), sgd_step_kernel_impl<T>, mutable_data_of<T>(param), data_of<T>(grad), buf,
              static_cast<T>(lr), static_cast<T>(momentum), nesterov, static_cast<T>(weight_decay), first_step,
              param.numel());
  });
}

// ---------------------------------------------------------------- gradient clipping

// out[block] = the block's share of sum(x) over n values, in double (one
// block: the final sum of the partials, in order).
__global__ void sum_partials_kernel(const double* x, int64_t n, double* out) {
  double total = 0.0;
  for (int64_t i : grid_stride(n)) total += x[i];
  total = block_sum(total);
  if (threadIdx.x == 0) out[blockIdx.x] = total;
}

// partials[b] = sum of x^2 over chunk b, in double.
template <typename T>
__global__ void chunk_squares_kernel(const T* const* tensors, const Chunk* chunks, double* partials) {
  const Chunk chunk = chunks[blockIdx.x];
  const T* x = tensors[chunk.tensor];
  double total = 0.0;
  for (int64_t i = chunk.start + threadIdx.x; i < chunk.start + chunk.length; i += blockDim.x) {
    const double value = static_cast<double>(x[i]);
    total += value * value;
  }
  total = block_sum(total);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

template <typename T>
__global__ void chunk_scale_kernel(T* const* tensors, const Chunk* chunks, T factor) {
  const Chunk chunk = chunks[blockIdx.x];
  T* x = tensors[chunk.tensor];
  for (int64_t i = chunk.start + threadIdx.x; i < chunk.start + chunk.length; i += blockDim.x) x[i] *= factor;
}

// The tensors' data pointers and sizes, for a chunk table.
template <typename T>
std::pair<std::vector<T*>, std::vector<int64_t>> pointers_and_sizes(const std::vector<Tensor>& xs) {
  std::pair<std::vector<T*>, std::vector<int64_t>> out;
  for (const Tensor& x : xs) {
    out.first.push_back(mutable_data_of<T>(x));
    out.second.push_back(x.numel());
  }
  return out;
}

const Tensor& itself(const Tensor& t) { return t; }

// Deterministic: each chunk's sum, then the chunks' sums added in order by
// one block; one device-to-host copy for all tensors.
double sum_of_squares_cuda(const std::vector<Tensor>& xs) {
  if (xs.empty()) return 0.0;
  DeviceGuard guard(xs.front());
  double result = 0.0;
  dispatch_float(common_dtype("sum_of_squares", xs, itself), "sum_of_squares", [&](auto tag) {
    using T = decltype(tag);
    const auto [pointers, sizes] = pointers_and_sizes<T>(xs);
    const auto table = upload_chunks(pointers, sizes, xs.front().device());
    if (table.count == 0) return;
    Tensor partials = Tensor::empty({static_cast<int64_t>(table.count)}, DType::F64, xs.front().device());
    Tensor total = Tensor::empty({1}, DType::F64, xs.front().device());
    chunk_squares_kernel<T><<<table.count, kThreads, 0, current_stream()>>>(
        reinterpret_cast<const T* const*>(table.entries), table.chunks, mutable_data_of<double>(partials));
    CUDA_CHECK_LAUNCH();
    sum_partials_kernel<<<1, kThreads, 0, current_stream()>>>(data_of<double>(partials), table.count,
                                                             mutable_data_of<double>(total));
    CUDA_CHECK_LAUNCH();
    result = total.item<double>();  // copies to the host, waiting for the kernels
  });
  return result;
}

void scale_cuda(const std::vector<Tensor>& xs, double factor) {
  if (xs.empty()) return;
  DeviceGuard guard(xs.front());
  dispatch_float(common_dtype("scale", xs, itself), "scale", [&](auto tag) {
    using T = decltype(tag);
    const auto [pointers, sizes] = pointers_and_sizes<T>(xs);
    const auto table = upload_chunks(pointers, sizes, xs.front().device());
    if (table.count == 0) return;
    chunk_scale_kernel<T><<<table.count, kThreads, 0, current_stream()>>>(table.entries, table.chunks,
                                                                         static_cast<T>(factor));
    CUDA_CHECK_LAUNCH();
  });
}

const bool registered = [] {
  adamw_step_kernel.cuda = &adamw_step_cuda;
  sgd_step_kernel.cuda = &sgd_step_cuda;
  sum_of_squares_kernel.cuda = &sum_of_squares_cuda;
  scale_kernel.cuda = &scale_cuda;
  return true;
}();

}  // namespace

}  // namespace engine
