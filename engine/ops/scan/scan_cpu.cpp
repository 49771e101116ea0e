// CPU reference kernels of the scan family. Work is split over (batch,
// channel) — the recurrences are independent there — with OpenMP. Reductions
// over batch or channels (the parameter gradients) go through per-task
// partial sums added up afterwards in a fixed order, so results do not depend
// on the thread count.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/ops/elementwise/elementwise_math.h"
#include "engine/ops/scan/scan_kernels.h"
#include "engine/ops/strided.h"
#include "engine/ops/vector_math.h"

namespace engine {

namespace {

// The [B, L, C] kernels below run one task per (batch, block of channels):
// each walks its block along the sequence with a contiguous inner loop.
constexpr int64_t kChannelBlock = 64;

int64_t channel_blocks(int64_t channels) { return (channels + kChannelBlock - 1) / kChannelBlock; }

// Calls body(b, c_begin, c_end) for every task, in parallel when `work` is large.
template <typename Body>
void for_each_channel_block(int64_t batch, int64_t channels, int64_t work, const Body& body) {
  const int64_t blocks = channel_blocks(channels);
#pragma omp parallel for schedule(static) if (work >= kParallelElements)
  for (int64_t task = 0; task < batch * blocks; ++task) {
    const int64_t b = task / blocks, begin = task % blocks * kChannelBlock;
    body(b, begin, std::min(channels, begin + kChannelBlock));
  }
}

// out[i] = sum of partial[r * n + i] over r = 0..rows-1, added in order.
template <typename T>
void sum_rows(const T* partial, int64_t rows, int64_t n, T* out) {
  std::fill(out, out + n, T(0));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < n; ++i) out[i] += partial[r * n + i];
  }
}

// ---------------------------------------------------------------- linear_scan

void linear_scan_cpu(const Tensor& a, const Tensor& b, const Tensor& h, bool reverse) {
  dispatch_float(a.dtype(), "linear_scan", [&](auto tag) {
    using T = decltype(tag);
    const int64_t batch = a.shape()[0], length = a.shape()[1], channels = a.shape()[2];
    const SequenceOrder order{length, reverse};
    const T* pa = data_or_null<const T>(a);
    const T* pb = data_or_null<const T>(b);
    T* ph = data_or_null<T>(h);
    for_each_channel_block(batch, channels, a.numel(), [&](int64_t n, int64_t c0, int64_t c1) {
      const int64_t base = n * length * channels;
      const int64_t first = base + order.at(0) * channels;
      std::copy(pb + first + c0, pb + first + c1, ph + first + c0);  // h_0 = b_0 (the state before is 0)
      for (int64_t k = 1; k < length; ++k) {
        const int64_t at = base + order.at(k) * channels;
        const T* prev = ph + base + order.at(k - 1) * channels;
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) ph[at + c] = pa[at + c] * prev[c] + pb[at + c];
      }
    });
  });
}

void linear_scan_backward_cpu(const Tensor& a, const Tensor& h, const Tensor& g, const Tensor& da, const Tensor& db,
                              bool reverse) {
  dispatch_float(a.dtype(), "linear_scan_backward", [&](auto tag) {
    using T = decltype(tag);
    const int64_t batch = a.shape()[0], length = a.shape()[1], channels = a.shape()[2];
    const SequenceOrder order{length, reverse};
    const T* pa = data_or_null<const T>(a);
    const T* ph = data_or_null<const T>(h);
    const T* pg = data_or_null<const T>(g);
    T* pda = data_or_null<T>(da);
    T* pdb = data_or_null<T>(db);
    // db holds dL/dh_t, built from the last step back: dh_t = g_t + a_next * dh_next.
    for_each_channel_block(batch, channels, a.numel(), [&](int64_t n, int64_t c0, int64_t c1) {
      const int64_t base = n * length * channels;
      // The loops below have no branches, so that they vectorise: the last
      // step (no next) and the first (no previous state) are their own.
      for (int64_t k = length - 1; k >= 0; --k) {
        const int64_t at = base + order.at(k) * channels;
        if (k + 1 < length) {
          const int64_t next = base + order.at(k + 1) * channels;
#pragma omp simd
          for (int64_t c = c0; c < c1; ++c) pdb[at + c] = pg[at + c] + pa[next + c] * pdb[next + c];
        } else {
          std::copy(pg + at + c0, pg + at + c1, pdb + at + c0);
        }
        if (k > 0) {
          const T* prev = ph + base + order.at(k - 1) * channels;
#pragma omp simd
          for (int64_t c = c0; c < c1; ++c) pda[at + c] = pdb[at + c] * prev[c];
        } else {
          std::fill(pda + at + c0, pda + at + c1, T(0));
        }
      }
    });
  });
}

// ----------------------------------------------------------------- gated_scan

// Where gated_scan's tensors keep batch n's rows: u and gate at a row stride
// of their own, h and the gradients contiguous, keep one value per step.
template <typename T>
struct GatedScanCpu {
  const T *u, *gate, *keep;
  int64_t length, channels, row_stride;
  SequenceOrder order;
  std::vector<T> zero_row;  // the state before the first step

  GatedScanCpu(const GatedScanInputs& in, const Tensor& h, bool reverse)
      : u(data_or_null<const T>(in.u)), gate(data_or_null<const T>(in.gate)), keep(data_or_null<const T>(in.keep)),
        length(h.shape()[1]), channels(h.shape()[2]), row_stride(in.row_stride()), order{length, reverse},
        zero_row(static_cast<size_t>(channels), T(0)) {}
  int64_t input_row(int64_t n, int64_t k) const { return (n * length + order.at(k)) * row_stride; }
  int64_t output_row(int64_t n, int64_t k) const { return (n * length + order.at(k)) * channels; }
  T keep_at(int64_t n, int64_t k) const { return keep ? keep[n * length + order.at(k)] : T(1); }
};

void gated_scan_cpu(const GatedScanInputs& in, const Tensor& h, bool reverse) {
  dispatch_float(h.dtype(), "gated_scan", [&](auto tag) {
    using T = decltype(tag);
    const GatedScanCpu<T> scan(in, h, reverse);
    const bool has_keep = scan.keep != nullptr;
    T* ph = data_or_null<T>(h);
    for_each_channel_block(h.shape()[0], scan.channels, h.numel(), [&](int64_t n, int64_t c0, int64_t c1) {
      for (int64_t k = 0; k < scan.length; ++k) {
        const T* u = scan.u + scan.input_row(n, k);
        const T* gate = scan.gate + scan.input_row(n, k);
        const T* prev = k > 0 ? ph + scan.output_row(n, k - 1) : scan.zero_row.data();
        T* out = ph + scan.output_row(n, k);
        const T keep = scan.keep_at(n, k);
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) {
          const StepGate<T> step = step_gate(gate[c], keep, has_keep);
          out[c] = step.a * prev[c] + step.w * u[c];
        }
      }
    });
  });
}

// Walks back from the last step with dL/dh of every channel in `dh` and the
// next step's coefficient in `a_next` (0 past the last step).
void gated_scan_backward_cpu(const GatedScanInputs& in, const Tensor& h, const Tensor& g, const Tensor& du,
                             const Tensor& dgate, bool reverse) {
  dispatch_float(h.dtype(), "gated_scan_backward", [&](auto tag) {
    using T = decltype(tag);
    const GatedScanCpu<T> scan(in, h, reverse);
    const bool has_keep = scan.keep != nullptr;
    const T* ph = data_or_null<const T>(h);
    const T* pg = data_or_null<const T>(g);
    T* pdu = data_or_null<T>(du);
    T* pdgate = data_or_null<T>(dgate);
    for_each_channel_block(h.shape()[0], scan.channels, h.numel(), [&](int64_t n, int64_t c0, int64_t c1) {
      std::vector<T> dh_row(static_cast<size_t>(c1 - c0), T(0)), a_row(static_cast<size_t>(c1 - c0), T(0));
      T* dh = dh_row.data() - c0;
      T* a_next = a_row.data() - c0;
      for (int64_t k = scan.length - 1; k >= 0; --k) {
        const T* u = scan.u + scan.input_row(n, k);
        const T* gate = scan.gate + scan.input_row(n, k);
        const T* prev = k > 0 ? ph + scan.output_row(n, k - 1) : scan.zero_row.data();
        const int64_t at = scan.output_row(n, k);
        const T keep = scan.keep_at(n, k);
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) {
          const StepGate<T> step = step_gate(gate[c], keep, has_keep);
          dh[c] = pg[at + c] + a_next[c] * dh[c];
          pdu[at + c] = dh[c] * step.w;
          pdgate[at + c] = dh[c] * (prev[c] - u[c]) * keep * step.s * (T(1) - step.s);
          a_next[c] = step.a;
        }
      }
    });
  });
}

// ------------------------------------------------------------- selective_scan

// Channels per backward task: the task owns [L, S] partial sums of dBm and dCm.
constexpr int64_t kSelectiveChannelBlock = 16;

// One (batch, channel) recurrence of the selective scan, on raw pointers.
template <typename T>
struct SelectiveScanCpu {
  const T *x, *dt, *A, *Bm, *Cm, *D;
  int64_t batch, length, channels, state;
  int64_t row_stride;  // between Bm's (and Cm's) rows: S, or more in a wider tensor
  SequenceOrder order;
  std::vector<T> a_from_log;  // A = -exp(A_log) when the inputs hold A_log (A points here)
  std::vector<T> zero_state;  // [S] zeros: the state before the first step

  SelectiveScanCpu(const SelectiveScanInputs& in, bool reverse)
      : x(data_or_null<const T>(in.x)), dt(data_or_null<const T>(in.dt)), A(data_or_null<const T>(in.A)), Bm(data_or_null<const T>(in.Bm)),
        Cm(data_or_null<const T>(in.Cm)), D(data_or_null<const T>(in.D)), batch(in.x.shape()[0]), length(in.x.shape()[1]),
        channels(in.x.shape()[2]), state(in.A.shape()[1]), row_stride(in.row_stride()), order{length, reverse},
        zero_state(static_cast<size_t>(state), T(0)) {
    if (!in.a_is_log) return;
    a_from_log.resize(static_cast<size_t>(channels * state));
    for (size_t i = 0; i < a_from_log.size(); ++i) a_from_log[i] = -std::exp(A[i]);
    A = a_from_log.data();
  }
  SelectiveScanCpu(const SelectiveScanCpu&) = delete;  // A may point into a_from_log

  int64_t work() const { return batch * length * channels * state; }
  int64_t seq_index(int64_t b, int64_t t, int64_t c) const { return (b * length + t) * channels + c; }
  int64_t state_row(int64_t b, int64_t t) const { return (b * length + t) * row_stride; }

  // next = exp(dt_t A) * prev + dt_t Bm_t x_t for channel c (next may alias
  // prev). The states' loops run in vector lanes (`omp simd`, with glibc's
  // vector exp where vector_math.h declares it).
  void advance(int64_t b, int64_t t, int64_t c, const T* prev, T* next) const {
    const int64_t i = seq_index(b, t, c);
    const T step = dt[i], input = step * x[i];
    const T* a = A + c * state;
    const T* bt = Bm + state_row(b, t);
#pragma omp simd
    for (int64_t s = 0; s < state; ++s) next[s] = std::exp(step * a[s]) * prev[s] + input * bt[s];
  }

  // y for channel c of batch b, keeping the state in h ([S] scratch).
  void forward(int64_t b, int64_t c, T* h, T* y) const {
    std::fill(h, h + state, T(0));
    for (int64_t k = 0; k < length; ++k) {
      const int64_t t = order.at(k), i = seq_index(b, t, c);
      advance(b, t, c, h, h);
      const T* ct = Cm + state_row(b, t);
      T out = D[c] * x[i];
#pragma omp simd reduction(+ : out)
      for (int64_t s = 0; s < state; ++s) out += ct[s] * h[s];
      y[i] = out;
    }
  }

  // Gradients of channel c of batch b. dx, ddt are written in place; dBm and
  // dCm ([L, S], this task's partials), dA ([S]) and dD accumulate.
  // `states` ([L, S] scratch) receives the recomputed forward states, `dh`
  // ([S] scratch) carries dL/dh backward through the steps.
  void backward(int64_t b, int64_t c, const T* dy, T* dx, T* ddt, T* dBm, T* dCm, T* dA, T& dD, T* states,
                T* dh) const {
    for (int64_t k = 0; k < length; ++k) {
      advance(b, order.at(k), c, k > 0 ? states + (k - 1) * state : zero_state.data(), states + k * state);
    }
    std::fill(dh, dh + state, T(0));
    const T* a = A + c * state;
    for (int64_t k = length - 1; k >= 0; --k) {
      const int64_t t = order.at(k), i = seq_index(b, t, c);
      const T g = dy[i], input = x[i], step = dt[i];
      const T* bt = Bm + state_row(b, t);
      const T* ct = Cm + state_row(b, t);
      const T* h = states + k * state;
      const T* prev = k > 0 ? h - state : zero_state.data();
      T* dbt = dBm + t * state;
      T* dct = dCm + t * state;
      T dx_sum = D[c] * g, ddt_sum = 0;
#pragma omp simd reduction(+ : dx_sum, ddt_sum)
      for (int64_t s = 0; s < state; ++s) {
        dct[s] += g * h[s];
        dh[s] += g * ct[s];  // dh[s] is now the full dL/dh_t[s]
        const T decay = std::exp(step * a[s]);
        const T d_exponent = dh[s] * prev[s] * decay;  // dL/d(dt_t A[s]) (0 at the first step)
        dA[s] += d_exponent * step;
        ddt_sum += d_exponent * a[s];
        ddt_sum += dh[s] * bt[s] * input;
        dbt[s] += dh[s] * step * input;
        dx_sum += dh[s] * step * bt[s];
        dh[s] *= decay;  // on to dL/dh_prev
      }
      dx[i] = dx_sum;
      ddt[i] = ddt_sum;
      dD += g * input;
    }
  }
};

// Saves nothing: the backward recomputes every state.
Tensor selective_scan_cpu(const SelectiveScanInputs& in, const Tensor& y, bool /*save_states*/, bool reverse) {
  dispatch_float(in.x.dtype(), "selective_scan", [&](auto tag) {
    using T = decltype(tag);
    const SelectiveScanCpu<T> scan(in, reverse);
    T* py = data_or_null<T>(y);
#pragma omp parallel if (scan.work() >= kParallelElements)
    {
      std::vector<T> h(scan.state);
#pragma omp for schedule(static)
      for (int64_t task = 0; task < scan.batch * scan.channels; ++task) {
        scan.forward(task / scan.channels, task % scan.channels, h.data(), py);
      }
    }
  });
  return Tensor();
}

// The forward states are recomputed per (batch, channel) into an [L, S]
// scratch of the task: nothing is stored between forward and backward, and
// the scratch is small (197 tokens x 16 states). (The CUDA kernels keep a
// checkpoint per tile of steps instead.)
void selective_scan_backward_cpu(const SelectiveScanInputs& in, const Tensor& /*saved*/, const Tensor& dy,
                                 const SelectiveScanGrads& grads, bool reverse) {
  dispatch_float(in.x.dtype(), "selective_scan_backward", [&](auto tag) {
    using T = decltype(tag);
    const SelectiveScanCpu<T> scan(in, reverse);
    const int64_t batch = scan.batch, length = scan.length, channels = scan.channels, state = scan.state;
    const int64_t blocks = (channels + kSelectiveChannelBlock - 1) / kSelectiveChannelBlock;
    const int64_t tasks = batch * blocks;
    // Partial sums: dBm/dCm per task ([L, S] each), dA/dD per (batch, channel).
    std::vector<T> dB_part(tasks * length * state, T(0)), dC_part(tasks * length * state, T(0));
    std::vector<T> dA_part(batch * channels * state, T(0)), dD_part(batch * channels, T(0));
    const T* pdy = data_or_null<const T>(dy);
    T* pdx = data_or_null<T>(grads.dx);
    T* pddt = data_or_null<T>(grads.ddt);
#pragma omp parallel if (scan.work() >= kParallelElements)
    {
      std::vector<T> states(length * state), dh(state);
#pragma omp for schedule(static)
      for (int64_t task = 0; task < tasks; ++task) {
        const int64_t b = task / blocks, begin = task % blocks * kSelectiveChannelBlock;
        for (int64_t c = begin; c < std::min(channels, begin + kSelectiveChannelBlock); ++c) {
          const int64_t bc = b * channels + c;
          scan.backward(b, c, pdy, pdx, pddt, &dB_part[task * length * state], &dC_part[task * length * state],
                        &dA_part[bc * state], dD_part[bc], states.data(), dh.data());
        }
      }
    }
    // dBm[b] and dCm[b] sum the blocks of batch b; dA and dD sum the batch.
    const int64_t rows = length * state;
    for (int64_t b = 0; b < batch; ++b) {
      sum_rows(&dB_part[b * blocks * rows], blocks, rows, data_or_null<T>(grads.dBm) + b * rows);
      sum_rows(&dC_part[b * blocks * rows], blocks, rows, data_or_null<T>(grads.dCm) + b * rows);
    }
    T* dA = data_or_null<T>(grads.dA);
    sum_rows(dA_part.data(), batch, channels * state, dA);
    if (in.a_is_log) {  // dL/dA_log = dL/dA * A
      for (int64_t i = 0; i < channels * state; ++i) dA[i] *= scan.A[i];
    }
    sum_rows(dD_part.data(), batch, channels, data_or_null<T>(grads.dD));
  });
}

// ----------------------------------------------------------- depthwise_conv1d

void depthwise_conv1d_cpu(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& y,
                          int64_t pad_left, bool reverse, bool silu, const Tensor& pre) {
  dispatch_float(x.dtype(), "depthwise_conv1d", [&](auto tag) {
    using T = decltype(tag);
    const int64_t batch = x.shape()[0], length = x.shape()[1], channels = x.shape()[2], taps = weight.shape()[1];
    const SequenceOrder order{length, reverse};
    const T* px = data_or_null<const T>(x);
    const T* pw = data_or_null<const T>(weight);
    const T* pbias = data_or_null<const T>(bias);
    T* py = data_or_null<T>(y);
    T* ppre = data_or_null<T>(pre);
    for_each_channel_block(batch, channels, x.numel() * taps, [&](int64_t n, int64_t c0, int64_t c1) {
      const int64_t base = n * length * channels;
      for (int64_t k = 0; k < length; ++k) {
        const int64_t at = base + order.at(k) * channels;
        T* out = py + at;
        for (int64_t c = c0; c < c1; ++c) out[c] = pbias ? pbias[c] : T(0);
        for (int64_t j = 0; j < taps; ++j) {
          const int64_t src = k + j - pad_left;
          if (src < 0 || src >= length) continue;
          const T* in = px + base + order.at(src) * channels;
          for (int64_t c = c0; c < c1; ++c) out[c] += pw[c * taps + j] * in[c];
        }
        if (!silu) continue;
        if (ppre) std::copy(out + c0, out + c1, ppre + at + c0);
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) out[c] = elementwise_math::apply_unary(UnaryOp::Silu, out[c]);
      }
    });
  });
}

void depthwise_conv1d_backward_cpu(const Tensor& x, const Tensor& weight, const Tensor& dy, const Tensor& dx,
                                   const Tensor& dweight, const Tensor& dbias, int64_t pad_left, bool reverse) {
  dispatch_float(x.dtype(), "depthwise_conv1d_backward", [&](auto tag) {
    using T = decltype(tag);
    const int64_t batch = x.shape()[0], length = x.shape()[1], channels = x.shape()[2], taps = weight.shape()[1];
    const SequenceOrder order{length, reverse};
    const T* px = data_or_null<const T>(x);
    const T* pw = data_or_null<const T>(weight);
    const T* pdy = data_or_null<const T>(dy);
    T* pdx = data_or_null<T>(dx);
    // Per-batch partial sums of dweight [C, K] and dbias [C].
    std::vector<T> dw_part(batch * channels * taps, T(0)), db_part(batch * channels, T(0));
    std::fill(pdx, pdx + x.numel(), T(0));
    for_each_channel_block(batch, channels, x.numel() * taps, [&](int64_t n, int64_t c0, int64_t c1) {
      const int64_t base = n * length * channels;
      T* dw = &dw_part[n * channels * taps];
      T* db = &db_part[n * channels];
      for (int64_t k = 0; k < length; ++k) {
        const T* g = pdy + base + order.at(k) * channels;
        for (int64_t c = c0; c < c1; ++c) db[c] += g[c];
        for (int64_t j = 0; j < taps; ++j) {
          const int64_t src = k + j - pad_left;
          if (src < 0 || src >= length) continue;
          const int64_t at = base + order.at(src) * channels;
          for (int64_t c = c0; c < c1; ++c) {
            pdx[at + c] += pw[c * taps + j] * g[c];
            dw[c * taps + j] += g[c] * px[at + c];
          }
        }
      }
    });
    sum_rows(dw_part.data(), batch, channels * taps, data_or_null<T>(dweight));
    if (dbias.defined()) sum_rows(db_part.data(), batch, channels, data_or_null<T>(dbias));
  });
}

}  // namespace

KernelSlot<LinearScanKernel> linear_scan_kernel{"linear_scan", &linear_scan_cpu, nullptr};
KernelSlot<LinearScanBackwardKernel> linear_scan_backward_kernel{"linear_scan_backward", &linear_scan_backward_cpu,
                                                                 nullptr};
KernelSlot<GatedScanKernel> gated_scan_kernel{"gated_scan", &gated_scan_cpu, nullptr};
KernelSlot<GatedScanBackwardKernel> gated_scan_backward_kernel{"gated_scan_backward", &gated_scan_backward_cpu,
                                                               nullptr};
KernelSlot<SelectiveScanKernel> selective_scan_kernel{"selective_scan", &selective_scan_cpu, nullptr};
KernelSlot<SelectiveScanBackwardKernel> selective_scan_backward_kernel{"selective_scan_backward",
                                                                       &selective_scan_backward_cpu, nullptr};
KernelSlot<DepthwiseConv1dKernel> depthwise_conv1d_kernel{"depthwise_conv1d", &depthwise_conv1d_cpu, nullptr};
KernelSlot<DepthwiseConv1dBackwardKernel> depthwise_conv1d_backward_kernel{
    "depthwise_conv1d_backward", &depthwise_conv1d_backward_cpu, nullptr};

}  // namespace engine
