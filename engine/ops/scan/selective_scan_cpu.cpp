// CPU reference kernels of the selective scan (work split as sequence_cpu.h
// says): the states are recomputed by the backward, never stored.
#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/ops/scan/selective_scan_kernels.h"
#include "engine/ops/scan/sequence_cpu.h"
#include "engine/ops/strided.h"
#include "engine/ops/vector_math.h"

namespace engine {

namespace {

using namespace sequence;  // the sequence ops' shared helpers

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

}  // namespace

KernelSlot<SelectiveScanKernel> selective_scan_kernel{"selective_scan", &selective_scan_cpu, nullptr};
KernelSlot<SelectiveScanBackwardKernel> selective_scan_backward_kernel{"selective_scan_backward",
                                                                       &selective_scan_backward_cpu, nullptr};

}  // namespace engine
