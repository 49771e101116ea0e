// Runs the CUDA kernels of the sequence ops (engine/ops/scan/scan.cu,
// selective_scan.cu and engine/ops/conv/depthwise_conv1d.cu, rewritten by
// gen.py and compiled for the host against emu_runtime.h, which fill the
// kernel slots' CUDA side as on a GPU build) on CPU tensors and
// compares them with the CPU references (the *_cpu.cpp beside them): the
// selective scan's forward y and every gradient of its backward, over a grid
// of shapes, both directions, float32 and float64; likewise linear_scan's and
// gated_scan's forward and backward and depthwise_conv1d's forward and
// backward (dx, dweight, dbias). Also checks that two emulated backward runs agree bit for
// bit.
// Build and run with run.sh.
//
// Usage: scan_bwd_emu [--quick] [--linear | --conv | --selective]   (exit status 1 on any mismatch)
#include <cuda_runtime.h>  // tools_dev/scan_emu/fake_cuda's

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "engine/ops/conv/depthwise_conv1d_kernels.h"
#include "engine/ops/scan/scan_kernels.h"
#include "engine/ops/scan/selective_scan_kernels.h"
#include "engine/ops/view/view.h"
#include "engine/random.h"

// The two runtime functions that cuda_utils.cuh declares (engine/cuda/runtime.cu
// on a CUDA build).
namespace engine {
void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) fail("emulated CUDA call failed: {}", what);
}
cudaStream_t current_stream() { return nullptr; }
}  // namespace engine

namespace {

using engine::DType;
using engine::Rng;
using engine::Shape;
using engine::Tensor;

struct Worst {
  double rel = 0;  // max |a - e| / max |e|
  std::string where;
};

struct Stats {
  int cases = 0, failures = 0;
  Worst worst[2][7];  // [dtype][y, dx, ddt, dA, dBm, dCm, dD]
};

const char* kNames[7] = {"y", "dx", "ddt", "dA", "dBm", "dCm", "dD"};

Tensor nan_like(const Tensor& t) {
  Tensor out = Tensor::empty_like(t);
  std::memset(out.raw_data(), 0xff, out.numel() * engine::dtype_size(out.dtype()));
  return out;
}

// expect_all_close's rule (tests/cuda/cuda_expect.h): per element
// |a - e| <= tol * (1 + |e| + 0.01 max |e|); NaN fails.
bool compare(const Tensor& actual, const Tensor& expected, double tol, Worst& worst, const std::string& label,
             const char* name) {
  const std::vector<double> a = actual.to_doubles(), e = expected.to_doubles();
  double max_abs = 0, max_err = 0;
  for (double v : e) max_abs = std::max(max_abs, std::abs(v));
  int bad = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double err = std::abs(a[i] - e[i]);
    if (!(err <= tol * (1.0 + std::abs(e[i]) + 0.01 * max_abs))) {
      if (bad++ < 3) std::printf("  MISMATCH %s %s element %zu: emulated %.10g, cpu %.10g\n", label.c_str(), name, i, a[i], e[i]);
    }
    if (!(err <= max_err)) max_err = std::isnan(err) ? INFINITY : std::max(max_err, err);
  }
  const double rel = max_err / std::max(max_abs, 1e-30);
  if (rel > worst.rel) worst = {rel, label};
  return bad == 0;
}

bool bit_identical(const Tensor& a, const Tensor& b) {
  return std::memcmp(a.raw_data(), b.raw_data(), a.numel() * engine::dtype_size(a.dtype())) == 0;
}

// A gradient of the emulated backward: close to the CPU's, and bit for bit
// equal to a second emulated run's.
bool check_output(const Tensor& emu, const Tensor& again, const Tensor& cpu, double tol, Worst& worst,
                    const std::string& label, const char* name) {
  bool ok = compare(emu, cpu, tol, worst, label, name);
  if (!bit_identical(emu, again)) {
    std::printf("  NOT REPRODUCIBLE %s %s\n", label.c_str(), name);
    ok = false;
  }
  return ok;
}

// Counts a finished case in stats (Stats or ConvStats).
template <typename CaseStats>
void count_case(bool ok, const std::string& label, CaseStats& stats) {
  ++stats.cases;
  if (!ok) {
    ++stats.failures;
    std::printf("FAIL %s\n", label.c_str());
  }
}

// a_is_log: A given as A_log (A = -exp(A_log)), as the mamba mixer passes it.
void run_case(int64_t B, int64_t L, int64_t C, int64_t S, bool reverse, bool a_is_log, DType dtype, Rng& rng,
              Stats& stats) {
  const std::string label = "[B=" + std::to_string(B) + " L=" + std::to_string(L) + " C=" + std::to_string(C) +
                            " S=" + std::to_string(S) + (reverse ? " reverse" : " forward") +
                            (a_is_log ? " A_log" : "") + (dtype == DType::F64 ? " f64]" : " f32]");
  const double tol = dtype == DType::F64 ? 1e-10 : 1e-4;
  const Tensor A = a_is_log ? Tensor::uniform({C, S}, rng, -2.3, 0.7, dtype)  // -exp: [-2, -0.1]
                            : Tensor::uniform({C, S}, rng, -2.0, -0.1, dtype);
  const engine::SelectiveScanInputs in{
      Tensor::uniform({B, L, C}, rng, -1.0, 1.0, dtype), Tensor::uniform({B, L, C}, rng, 0.05, 1.0, dtype),
      A,                                                 Tensor::uniform({B, L, S}, rng, -1.0, 1.0, dtype),
      Tensor::uniform({B, L, S}, rng, -1.0, 1.0, dtype), Tensor::uniform({C}, rng, -1.0, 1.0, dtype),
      a_is_log};
  const Tensor dy = Tensor::uniform({B, L, C}, rng, -1.5, 1.5, dtype);
  auto make_grads = [&](bool poisoned) {
    auto make = [&](const Tensor& like) { return poisoned ? nan_like(like) : Tensor::zeros(like.shape(), dtype); };
    return engine::SelectiveScanGrads{make(in.x), make(in.dt), make(in.A), make(in.Bm), make(in.Cm), make(in.D)};
  };
  // Reference.
  Tensor y_cpu = Tensor::empty({B, L, C}, dtype);
  engine::selective_scan_kernel.cpu(in, y_cpu, /*save_states=*/false, reverse);
  const engine::SelectiveScanGrads cpu = make_grads(false);
  engine::selective_scan_backward_kernel.cpu(in, Tensor(), dy, cpu, reverse);
  // Emulated CUDA kernels (outputs start as NaN: every element must be
  // written): the backward from the forward's saved states, and again from
  // none (it runs the forward for them).
  Tensor y_emu = nan_like(y_cpu), y_again = nan_like(y_cpu);
  const Tensor saved = engine::selective_scan_kernel.cuda(in, y_emu, /*save_states=*/true, reverse);
  engine::selective_scan_kernel.cuda(in, y_again, /*save_states=*/false, reverse);
  const engine::SelectiveScanGrads emu = make_grads(true), again = make_grads(true);
  engine::selective_scan_backward_kernel.cuda(in, saved, dy, emu, reverse);
  engine::selective_scan_backward_kernel.cuda(in, Tensor(), dy, again, reverse);

  const int d = dtype == DType::F64;
  bool ok = check_output(y_emu, y_again, y_cpu, tol, stats.worst[d][0], label, kNames[0]);
  const Tensor* e[6] = {&emu.dx, &emu.ddt, &emu.dA, &emu.dBm, &emu.dCm, &emu.dD};
  const Tensor* a[6] = {&again.dx, &again.ddt, &again.dA, &again.dBm, &again.dCm, &again.dD};
  const Tensor* c[6] = {&cpu.dx, &cpu.ddt, &cpu.dA, &cpu.dBm, &cpu.dCm, &cpu.dD};
  for (int i = 0; i < 6; ++i) {
    ok = check_output(*e[i], *a[i], *c[i], tol, stats.worst[d][i + 1], label, kNames[i + 1]) && ok;
  }
  count_case(ok, label, stats);
}

// depthwise_conv1d: the CUDA forward and backward (the fused kernel's 4-, 8-,
// 12- and 16-tap windows, and its passes of 16 taps beyond 16) against the CPU
// reference; outputs start as NaN, and two backward runs must agree bit for bit.
struct ConvStats {
  int cases = 0, failures = 0;
  Worst worst[2][4];  // [dtype][y, dx, dweight, dbias]
};
const char* kConvNames[4] = {"y", "dx", "dweight", "dbias"};

// silu: the forward also applies SiLU (and keeps the convolution in pre).
void run_conv_case(int64_t B, int64_t L, int64_t C, int64_t K, int64_t pad, bool reverse, bool with_bias, bool silu,
                   DType dtype, Rng& rng, ConvStats& stats) {
  const std::string label = "[conv B=" + std::to_string(B) + " L=" + std::to_string(L) + " C=" + std::to_string(C) +
                            " K=" + std::to_string(K) + " pad=" + std::to_string(pad) +
                            (reverse ? " reverse" : " forward") + (with_bias ? " bias" : "") + (silu ? " silu" : "") +
                            (dtype == DType::F64 ? " f64]" : " f32]");
  const double tol = dtype == DType::F64 ? 1e-10 : 1e-4;
  const Tensor x = Tensor::uniform({B, L, C}, rng, -1.0, 1.0, dtype);
  const Tensor w = Tensor::uniform({C, K}, rng, -1.0, 1.0, dtype);
  const Tensor bias = with_bias ? Tensor::uniform({C}, rng, -1.0, 1.0, dtype) : Tensor();
  const Tensor dy = Tensor::uniform({B, L, C}, rng, -1.5, 1.5, dtype);
  Tensor y_cpu = Tensor::empty({B, L, C}, dtype), y_emu = nan_like(y_cpu);
  Tensor pre_cpu = silu ? Tensor::empty({B, L, C}, dtype) : Tensor(), pre_emu = silu ? nan_like(y_cpu) : Tensor();
  engine::depthwise_conv1d_kernel.cpu(x, w, bias, y_cpu, pad, reverse, silu, pre_cpu);
  engine::depthwise_conv1d_kernel.cuda(x, w, bias, y_emu, pad, reverse, silu, pre_emu);
  auto grads = [&](bool poisoned) {
    auto make = [&](const Shape& shape) {
      return poisoned ? nan_like(Tensor::empty(shape, dtype)) : Tensor::zeros(shape, dtype);
    };
    return std::vector<Tensor>{make({B, L, C}), make({C, K}), with_bias ? make({C}) : Tensor()};
  };
  const std::vector<Tensor> cpu = grads(false), emu = grads(true), again = grads(true);
  engine::depthwise_conv1d_backward_kernel.cpu(x, w, dy, cpu[0], cpu[1], cpu[2], pad, reverse);
  engine::depthwise_conv1d_backward_kernel.cuda(x, w, dy, emu[0], emu[1], emu[2], pad, reverse);
  engine::depthwise_conv1d_backward_kernel.cuda(x, w, dy, again[0], again[1], again[2], pad, reverse);
  const int d = dtype == DType::F64;
  bool ok = compare(y_emu, y_cpu, tol, stats.worst[d][0], label, kConvNames[0]);
  if (silu) ok = compare(pre_emu, pre_cpu, tol, stats.worst[d][0], label, "pre") && ok;
  for (int i = 0; i < 3; ++i) {
    if (!cpu[i].defined()) continue;
    ok = check_output(emu[i], again[i], cpu[i], tol, stats.worst[d][i + 1], label, kConvNames[i + 1]) && ok;
  }
  count_case(ok, label, stats);
}

// Every K up to 9 with every pad, and K = 12, 16, 17, 33 and 40 with the
// first, the middle and the last pad (the fused backward's 4-tap window for
// K <= 4, its 8-tap window for 5 <= K <= 8, its 12-tap window for 9 and 12,
// its 16-tap window for 16; 17, 33 and 40 in passes of 1 + 16, 1 + 16 + 16
// and 8 + 16 + 16 taps; the forward's tap blocks), both directions, with and without bias;
// C = 6 and 130 take channel pairs (the 4-tap window), C = 1 single channels.
// Returns true when every case passed.
bool run_conv(bool quick, Rng& rng) {
  ConvStats stats;
  for (DType dtype : {DType::F32, DType::F64}) {
    for (int64_t B : {1, 3}) {
      for (int64_t L : {1, 5, 8, 9, 31, 70}) {
        for (int64_t C : {1, 6, 41, 130}) {
          for (int64_t K : {1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 17, 33, 40}) {
            for (int64_t pad = 0; pad < K; ++pad) {
              if (K > 9 && pad != 0 && pad != (K - 1) / 2 && pad != K - 1) continue;
              for (bool reverse : {false, true}) {
                const bool with_bias = (L + C + K + pad) % 2 == 0;
                if (quick && (B != 3 || reverse != ((L + pad) % 2 == 1) || (C == 1 && L != 9))) continue;
                run_conv_case(B, L, C, K, pad, reverse, with_bias, /*silu=*/(L + K) % 2 == 1, dtype, rng, stats);
              }
            }
          }
        }
      }
    }
    // ViT length, with and without bias; causal and 'same', both windows.
    for (bool reverse : {false, true}) {
      run_conv_case(2, 197, 64, 4, 3, reverse, true, /*silu=*/true, dtype, rng, stats);
      run_conv_case(2, 197, 33, 3, 1, reverse, false, /*silu=*/reverse, dtype, rng, stats);
      run_conv_case(2, 197, 64, 7, 3, reverse, true, /*silu=*/false, dtype, rng, stats);
    }
  }
  for (int d = 0; d < 2; ++d) {
    std::printf("conv %s worst max|emulated - cpu| / max|cpu|:\n", d ? "float64" : "float32");
    for (int i = 0; i < 4; ++i) {
      std::printf("  %-7s %.3e  %s\n", kConvNames[i], stats.worst[d][i].rel, stats.worst[d][i].where.c_str());
    }
  }
  std::printf("conv: %d passed, %d failed\n", stats.cases - stats.failures, stats.failures);
  return stats.failures == 0;
}

// gated_scan on the same shapes: u and gate sliced from one [B, L, 3 C]
// tensor (read in place), a halting mask on every other case.
bool run_gated_case(const Shape& shape, bool reverse, DType dtype, Rng& rng, double tol, const std::string& linear_label) {
  const int64_t B = shape[0], L = shape[1], C = shape[2];
  const bool masked = (B + L + C + reverse) % 2 == 0;
  const std::string label = "gated " + linear_label + (masked ? " masked" : "");
  const Tensor projection = Tensor::uniform({B, L, 3 * C}, rng, -2, 2, dtype);
  std::vector<double> mask(B * L);
  for (size_t i = 0; i < mask.size(); ++i) mask[i] = i % 3 == 1 ? 0.0 : 1.0;
  const engine::GatedScanInputs in{engine::narrow(projection, 2, 0, C), engine::narrow(projection, 2, C, C),
                                   masked ? Tensor::from_vector(mask, {B, L}).to(dtype) : Tensor()};
  const Tensor g = Tensor::uniform(shape, rng, -1, 1, dtype);
  Tensor h_cpu = Tensor::empty(shape, dtype), du_cpu = Tensor::empty(shape, dtype), dg_cpu = Tensor::empty(shape, dtype);
  Tensor h_emu = nan_like(h_cpu), du_emu = nan_like(h_cpu), dg_emu = nan_like(h_cpu);
  engine::gated_scan_kernel.cpu(in, h_cpu, reverse);
  engine::gated_scan_kernel.cuda(in, h_emu, reverse);
  engine::gated_scan_backward_kernel.cpu(in, h_cpu, g, du_cpu, dg_cpu, reverse);
  engine::gated_scan_backward_kernel.cuda(in, h_cpu, g, du_emu, dg_emu, reverse);
  Worst worst;
  bool ok = compare(h_emu, h_cpu, tol, worst, label, "h");
  ok = compare(du_emu, du_cpu, tol, worst, label, "du") && ok;
  ok = compare(dg_emu, dg_cpu, tol, worst, label, "dgate") && ok;
  if (!ok) std::printf("FAIL %s\n", label.c_str());
  return ok;
}

// linear_scan and gated_scan: the CUDA forward and backward against the CPU
// reference over shapes that take every number of spans (1 to 32: few
// sequences are cut into spans of time) and pack widths 1, 2 and 4, and
// every layout of gated_scan's kernels (narrow_first_layout: packs of 4 in 16
// spans at 128 x 128 channel rows, pairs in 8 spans at 256 x 96, single
// channels and pairs in one span at 64 x 520 and 32 x 2048, packs of 4 in one
// span at 64 x 2048); outputs start as NaN.
bool run_linear(bool quick, Rng& rng) {
  int cases = 0, failures = 0;
  Worst worst[2][3];  // [dtype][h, da, db]
  const char* names[3] = {"h", "da", "db"};
  const std::vector<Shape> shapes = {{1, 1, 1},    {2, 7, 5},     {1, 64, 4},   {8, 20, 64},  {3, 197, 33}, {2, 1024, 3},
                                     {1, 300, 96}, {64, 9, 520},  {256, 65, 96}, {1, 65, 96}, {4, 40, 6},
                                     {32, 9, 2048}, {64, 9, 2048}, {128, 128, 128}};
  for (DType dtype : {DType::F32, DType::F64}) {
    for (const Shape& shape : shapes) {
      for (bool reverse : {false, true}) {
        if (quick && reverse != (shape[1] % 2 == 1)) continue;
        const std::string label = "[linear B=" + std::to_string(shape[0]) + " L=" + std::to_string(shape[1]) +
                                  " C=" + std::to_string(shape[2]) + (reverse ? " reverse" : " forward") +
                                  (dtype == DType::F64 ? " f64]" : " f32]");
        const double tol = dtype == DType::F64 ? 1e-10 : 1e-4;
        const Tensor a = Tensor::uniform(shape, rng, 0.02, 0.98, dtype), b = Tensor::uniform(shape, rng, -1, 1, dtype);
        const Tensor g = Tensor::uniform(shape, rng, -1, 1, dtype);
        Tensor h_cpu = Tensor::empty(shape, dtype), da_cpu = Tensor::empty(shape, dtype), db_cpu = Tensor::empty(shape, dtype);
        Tensor h_emu = nan_like(h_cpu), da_emu = nan_like(h_cpu), db_emu = nan_like(h_cpu);
        engine::linear_scan_kernel.cpu(a, b, h_cpu, reverse);
        engine::linear_scan_kernel.cuda(a, b, h_emu, reverse);
        engine::linear_scan_backward_kernel.cpu(a, h_cpu, g, da_cpu, db_cpu, reverse);
        engine::linear_scan_backward_kernel.cuda(a, h_cpu, g, da_emu, db_emu, reverse);
        const int d = dtype == DType::F64;
        bool ok = compare(h_emu, h_cpu, tol, worst[d][0], label, names[0]);
        ok = compare(da_emu, da_cpu, tol, worst[d][1], label, names[1]) && ok;
        ok = compare(db_emu, db_cpu, tol, worst[d][2], label, names[2]) && ok;
        ++cases;
        if (!ok) {
          ++failures;
          std::printf("FAIL %s\n", label.c_str());
        }
        ++cases;
        if (!run_gated_case(shape, reverse, dtype, rng, tol, label)) ++failures;
      }
    }
  }
  for (int d = 0; d < 2; ++d) {
    std::printf("linear %s worst max|emulated - cpu| / max|cpu|:\n", d ? "float64" : "float32");
    for (int i = 0; i < 3; ++i) std::printf("  %-3s %.3e  %s\n", names[i], worst[d][i].rel, worst[d][i].where.c_str());
  }
  std::printf("linear: %d passed, %d failed\n", cases - failures, failures);
  return failures == 0;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  // A last argument --linear, --conv or --selective runs only that family.
  const std::string last = argc > 1 ? argv[argc - 1] : "";
  const bool one_family = last == "--linear" || last == "--conv" || last == "--selective";
  auto runs = [&](const char* family) { return !one_family || last == family; };
  Rng linear_rng(5);
  const bool linear_ok = !runs("--linear") || run_linear(quick, linear_rng);
  if (last == "--linear") return linear_ok ? 0 : 1;
  Rng conv_rng(77);
  const bool conv_ok = !runs("--conv") || run_conv(quick, conv_rng);
  if (last == "--conv") return conv_ok ? 0 : 1;
  Rng rng(2024);
  Stats stats;
  const std::vector<int64_t> Bs = {1, 3}, Ls = {1, 7, 8, 9, 33}, Cs = {5, 32, 40, 70}, Ss = {1, 16, 20, 33};
  for (DType dtype : {DType::F32, DType::F64}) {
    for (int64_t B : Bs) {
      for (int64_t L : Ls) {
        for (int64_t C : Cs) {
          for (int64_t S : Ss) {
            for (bool reverse : {false, true}) {
              if (quick && (B != 3 || reverse != (L % 2 == 1))) continue;
              run_case(B, L, C, S, reverse, /*a_is_log=*/(L + C + S) % 2 == 1, dtype, rng, stats);
            }
          }
        }
      }
    }
    // ViT-like sequence length, several tiles, C not a multiple of 16; three
    // blocks of channels (the last mostly idle) with three state groups.
    for (bool reverse : {false, true}) {
      run_case(2, 197, 40, 16, reverse, /*a_is_log=*/reverse, dtype, rng, stats);
      run_case(2, 20, 130, 33, reverse, /*a_is_log=*/!reverse, dtype, rng, stats);
    }
  }
  for (int d = 0; d < 2; ++d) {
    std::printf("%s worst max|emulated - cpu| / max|cpu|:\n", d ? "float64" : "float32");
    for (int i = 0; i < 7; ++i) {
      std::printf("  %-4s %.3e  %s\n", kNames[i], stats.worst[d][i].rel, stats.worst[d][i].where.c_str());
    }
  }
  std::printf("emulated shuffles %llu, barriers %llu\n",
              static_cast<unsigned long long>(emu::state().shuffles), static_cast<unsigned long long>(emu::state().barriers));
  std::printf("%d passed, %d failed\n", stats.cases - stats.failures, stats.failures);
  return stats.failures == 0 && conv_ok && linear_ok ? 0 : 1;
}
