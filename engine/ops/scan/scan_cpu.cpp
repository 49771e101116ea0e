// CPU reference kernels of linear_scan and gated_scan (work split as
// sequence_cpu.h says).
#include <algorithm>
#include <vector>

#include "engine/ops/scan/scan_kernels.h"
#include "engine/ops/scan/sequence_cpu.h"
#include "engine/ops/vector_math.h"

namespace engine {

namespace {

using namespace sequence;  // the sequence ops' shared helpers

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

}  // namespace

KernelSlot<LinearScanKernel> linear_scan_kernel{"linear_scan", &linear_scan_cpu, nullptr};
KernelSlot<LinearScanBackwardKernel> linear_scan_backward_kernel{"linear_scan_backward", &linear_scan_backward_cpu,
                                                                 nullptr};
KernelSlot<GatedScanKernel> gated_scan_kernel{"gated_scan", &gated_scan_cpu, nullptr};
KernelSlot<GatedScanBackwardKernel> gated_scan_backward_kernel{"gated_scan_backward", &gated_scan_backward_cpu,
                                                               nullptr};

}  // namespace engine
