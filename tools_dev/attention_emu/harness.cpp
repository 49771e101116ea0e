// Runs the CUDA attention kernels (attention.cu, through gen.py) on the host
// emulation and compares them with the CPU reference kernels, through the real
// ops (fused_attention_packed, fused_attention) and their backward: the
// emulated CUDA entry points are swapped into the kernel slots' CPU entries,
// so the op code, the CUDA host code (views, float4 fallback, launch shapes)
// and the device code all run.
// Each case runs in float32 mode (attention.cu's FMA kernels) and in bf16
// mode (GemmPrecisionGuard: attention_mma.cu's tensor-core kernels, whose
// mma.sync and ldmatrix the runtime emulates with the PTX fragment layouts).
// A bf16 case's inputs (q, k, v or qkv, and the weights w of the loss
// sum(out * w), i.e. dout) are rounded to bf16 first, for both the reference
// and the kernels: the kernels' own rounding of them is then exact, and what
// is left to tolerate is only the rounding of P and dS to bf16 before their
// second products (see kTolBf16).
//   harness [--quick] [--mode eager|lazy|both] [--precision f32|bf16|both] [--filter TEXT]
// (--filter: cases whose name contains TEXT.) Exit status 0 when every case is
// within tolerance and no fault was seen.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "emu_runtime.h"
#include "engine/autograd.h"
#include "engine/ops/attention/attention.h"
#include "engine/ops/attention/attention_kernels.h"
#include "engine/ops/matmul/matmul.h"
#include "engine/ops/ops.h"
#include "engine/random.h"

using namespace engine;

namespace {

constexpr double kTol = 1e-4;  // tests/cuda/cuda_expect.h's expect_all_close tolerance for float32
// bf16 mode, inputs exactly bf16: each P_ij (and dS_ij) is rounded to bf16
// (relative error <= u = 2^-9) before it multiplies V, dO, K or Q, so
// |out_i - ref_i| <= u sum_j P_ij |v_j| <= u max|v|; the gradients sum terms
// as large as |dS| |k| (dS reaches ~10 here): several u of the normalised
// error |a - e| / (1 + |e| + 0.01 max|e|). The same bounds as
// tests/cuda/test_cuda_attention.cpp (1e-2 output, 2e-2 gradients); a
// fragment or indexing bug gives O(1).
constexpr double kTolBf16 = 1e-2, kTolBf16Grad = 2e-2;

// Values rounded to bf16 (kept float32).
Tensor round_bf16(const Tensor& t) { return t.to(DType::BF16).to(DType::F32); }

// max over elements of |a - e| / (1 + |e| + 0.01 max|e|): <= kTol passes expect_all_close.
struct Deviation {
  double relative = 0, absolute = 0;
};
Deviation error_of(const Tensor& actual, const Tensor& expected) {
  const std::vector<double> a = actual.to_doubles(), e = expected.to_doubles();
  if (a.size() != e.size()) return {INFINITY, INFINITY};
  double max_abs = 0;
  for (double v : e) max_abs = std::max(max_abs, std::abs(v));
  Deviation err;
  for (size_t i = 0; i < a.size(); ++i) {
    const double diff = std::abs(a[i] - e[i]);
    if (!(diff == diff)) return {INFINITY, INFINITY};  // NaN
    err.absolute = std::max(err.absolute, diff);
    err.relative = std::max(err.relative, diff / (1.0 + std::abs(e[i]) + 0.01 * max_abs));
  }
  return err;
}

// FNV-1a over the bits of results (as doubles): equal hashes = bit-identical
// outputs and gradients (for comparing a kernel change that should change none).
uint64_t bits_hash(const std::vector<Tensor>& results) {
  uint64_t h = 1469598103934665603ull;
  for (const Tensor& t : results) {
    for (double x : t.to_doubles()) {
      uint64_t u;
      std::memcpy(&u, &x, 8);
      for (int b = 0; b < 8; ++b) h = (h ^ ((u >> (8 * b)) & 0xffu)) * 1099511628211ull;
    }
  }
  return h;
}

// Swaps the emulated CUDA kernels into the CPU entries of the slots for a scope.
struct EmulatedKernels {
  AttentionForwardKernel forward = attention_forward_kernel.cpu;
  AttentionBackwardKernel backward = attention_backward_kernel.cpu;
  EmulatedKernels() {
    attention_forward_kernel.cpu = attention_forward_kernel.cuda;
    attention_backward_kernel.cpu = attention_backward_kernel.cuda;
  }
  ~EmulatedKernels() {
    attention_forward_kernel.cpu = forward;
    attention_backward_kernel.cpu = backward;
  }
};

Tensor random_mask(int64_t batch, int64_t tokens, Rng& rng) {
  std::vector<float> values(batch * tokens);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t j = 0; j < tokens; ++j) values[b * tokens + j] = j == 0 || rng.uniform() > 0.35 ? 1.0f : 0.0f;
  }
  return Tensor::from_vector<float>(values, {batch, tokens});
}

// One case: builds its inputs (leaves) and runs the op + backward, returning
// the output and the gradients of the leaves.
struct Case {
  std::string name;
  std::function<std::vector<Tensor>()> run;
  bool bf16 = false;
};

std::vector<Tensor> leaves_grads(const Tensor& out, const Tensor& weights, const std::vector<Tensor>& leaves) {
  sum(mul(out, weights)).backward();
  std::vector<Tensor> result = {out.detach()};
  for (const Tensor& leaf : leaves) {
    result.push_back(leaf.grad());
    leaf.zero_grad();
  }
  return result;
}

Tensor leaf(const Tensor& t) {
  Tensor x = t.detach();
  x.set_requires_grad(true);
  return x;
}

// fused_attention_packed on qkv [B, N, 3 H d]; `view` turns the leaf into the op's input.
Case packed_case(int64_t batch, int64_t n, int64_t heads, int64_t d, bool masked, uint64_t seed,
                 const std::string& variant = "", std::function<Tensor(const Tensor&)> view = nullptr,
                 int64_t extra = 0, bool bf16 = false) {
  char name[160];
  std::snprintf(name, sizeof name, "%spacked B %ld N %3ld H %ld d %ld%s%s", bf16 ? "bf16 " : "f32  ", static_cast<long>(batch),
                static_cast<long>(n), static_cast<long>(heads), static_cast<long>(d), masked ? " mask" : "",
                variant.c_str());
  return {name, [=] {
            Rng rng(seed);
            const int64_t dim = heads * d;
            Tensor storage = extra ? Tensor::randn({batch * n * 3 * dim + extra}, rng, DType::F32, 1.5)
                                   : Tensor::randn({batch, n, 3 * dim}, rng, DType::F32, 1.5);
            Tensor mask = masked ? random_mask(batch, n, rng) : Tensor();
            Tensor w = Tensor::uniform({batch, n, dim}, rng, -1.5, 1.5);
            if (bf16) storage = round_bf16(storage), w = round_bf16(w);
            Tensor x = leaf(storage);
            Tensor input = view ? view(x) : x;
            Tensor out = fused_attention_packed(input, heads, 1.0 / std::sqrt(static_cast<double>(d)), mask);
            if (!out.is_contiguous()) return std::vector<Tensor>{};
            return leaves_grads(out, w, {x});
          }, bf16};
}

// fused_attention on q, k, v [B, H, N, d] (or views given by `view` of [B, N, H, d] leaves).
Case plain_case(int64_t batch, int64_t n, int64_t heads, int64_t d, bool masked, uint64_t seed,
                const std::string& variant = "", bool token_major = false, bool odd_offset = false,
                bool bf16 = false) {
  char name[160];
  std::snprintf(name, sizeof name, "%splain  B %ld N %3ld H %ld d %ld%s%s", bf16 ? "bf16 " : "f32  ", static_cast<long>(batch),
                static_cast<long>(n), static_cast<long>(heads), static_cast<long>(d), masked ? " mask" : "",
                variant.c_str());
  return {name, [=] {
            Rng rng(seed);
            const Shape shape = token_major ? Shape{batch, n, heads, d} : Shape{batch, heads, n, d};
            auto maybe_round = [&](const Tensor& t) { return bf16 ? round_bf16(t) : t; };
            Tensor q = leaf(maybe_round(Tensor::randn(shape, rng, DType::F32, 1.5)));
            Tensor k = leaf(maybe_round(Tensor::randn(shape, rng, DType::F32, 1.5)));
            Tensor v = leaf(maybe_round(odd_offset ? Tensor::randn({shape_numel(shape) + 1}, rng)
                                                   : Tensor::randn(shape, rng)));
            Tensor mask = masked ? random_mask(batch, n, rng) : Tensor();
            Tensor w = maybe_round(Tensor::uniform({batch, heads, n, d}, rng, -1.5, 1.5));
            auto as_heads = [&](const Tensor& t) { return token_major ? transpose(t, 1, 2) : t; };
            Tensor v_in = odd_offset ? as_heads(reshape(narrow(v, 0, 1, shape_numel(shape)), shape)) : as_heads(v);
            Tensor out = fused_attention(as_heads(q), as_heads(k), v_in, 1.0 / std::sqrt(static_cast<double>(d)), mask);
            return leaves_grads(out, w, {q, k, v});
          }, bf16};
}

// The cases of one precision (bf16: the inputs rounded, see round_bf16).
std::vector<Case> cases(bool quick, bool bf16) {
  std::vector<Case> all;
  uint64_t seed = 100;
  // The CUDA test matrix: N in {1, 17, 65, 197}, d 32 / 64, with and without a mask.
  for (int64_t n : {1, 17, 65, 197}) {
    for (int64_t d : {32, 64}) {
      for (bool masked : {false, true}) {
        all.push_back(packed_case(2, n, 3, d, masked, seed++, "", nullptr, 0, bf16));
        if (!quick) all.push_back(plain_case(2, n, 3, d, masked, seed++, "", false, false, bf16));
      }
    }
  }
  if (quick) return all;
  // Partial last tiles of 11 (8 < keys <= 16) and 44 (> 32) keys; two full tiles; ViT-S's 6 heads.
  all.push_back(packed_case(1, 75, 2, 64, true, seed++, "", nullptr, 0, bf16));
  all.push_back(packed_case(1, 128, 2, 64, true, seed++, "", nullptr, 0, bf16));
  all.push_back(packed_case(2, 300, 1, 32, false, seed++, "", nullptr, 0, bf16));
  all.push_back(packed_case(1, 197, 6, 64, true, seed++, "", nullptr, 0, bf16));
  // Strided inputs used in place: [B, N, H, d] tensors transposed to [B, H, N, d].
  all.push_back(plain_case(2, 65, 3, 64, true, seed++, " token-major views", true, false, bf16));
  // The float4 fallbacks: an input view one float into its storage; a packed
  // qkv one float in (q, k, v copied by the CUDA host code) and a column slice
  // (copied by the op).
  all.push_back(plain_case(2, 65, 3, 64, true, seed++, " v at an odd offset", false, true, bf16));
  const int64_t slice_count = 2 * 65 * 3 * 3 * 32;
  all.push_back(packed_case(2, 65, 3, 32, true, seed++, " qkv at an odd offset",
                            [=](const Tensor& x) { return reshape(narrow(x, 0, 1, slice_count), {2, 65, 3 * 3 * 32}); },
                            1, bf16));
  all.push_back(packed_case(2, 65, 3, 32, false, seed++, " qkv a column slice",
                            [](const Tensor& x) {
                              return narrow(reshape(x, {2, 65, 3 * 3 * 32 + 4}), 2, 2, 3 * 3 * 32);
                            },
                            2 * 65 * 4, bf16));
  return all;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::string filter;
  std::vector<bool> precisions = {false, true};  // bf16?
  std::vector<emu::AsyncMode> modes = {emu::AsyncMode::kLazy, emu::AsyncMode::kEager};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") quick = true;
    if (arg == "--filter" && i + 1 < argc) filter = argv[++i];
    if (arg == "--precision" && i + 1 < argc) {
      const std::string precision = argv[++i];
      if (precision == "f32") precisions = {false};
      if (precision == "bf16") precisions = {true};
    }
    if (arg == "--mode" && i + 1 < argc) {
      const std::string mode = argv[++i];
      if (mode == "eager") modes = {emu::AsyncMode::kEager};
      if (mode == "lazy") modes = {emu::AsyncMode::kLazy};
    }
  }
  if (attention_forward_kernel.cuda == nullptr) {
    std::fprintf(stderr, "the emulated CUDA kernels did not register\n");
    return 2;
  }
  int failures = 0;
  double worst = 0;
  std::vector<Case> all;
  for (bool bf16 : precisions) {
    for (Case& c : cases(quick, bf16)) all.push_back(std::move(c));
  }
  double worst_bf16 = 0;
  for (const Case& c : all) {
    if (c.name.find(filter) == std::string::npos) continue;
    // bf16 mode switches the CUDA entry points to the tensor-core kernels (the CPU kernels ignore it).
    GemmPrecisionGuard precision(c.bf16 ? GemmPrecision::BFloat16 : GemmPrecision::Float32);
    const double tol = c.bf16 ? kTolBf16 : kTol, grad_tol = c.bf16 ? kTolBf16Grad : kTol;
    const std::vector<Tensor> expected = c.run();  // the CPU reference kernels
    std::vector<std::vector<Tensor>> runs;
    for (emu::AsyncMode mode : modes) {
      emu::set_async_mode(mode);
      EmulatedKernels swap;
      runs.push_back(c.run());
    }
    const emu::Faults faults = emu::take_faults();
    const char* names[] = {"out", "grad0", "grad1", "grad2"};
    std::string detail;
    bool ok = !faults.any();
    if (runs[0].empty() || runs[0].size() != expected.size()) {
      ok = false;
      detail += " no result";
      runs.clear();
    }
    double case_worst = 0, case_abs = 0;
    for (size_t i = 0; !runs.empty() && i < expected.size(); ++i) {
      const Deviation err = error_of(runs[0][i], expected[i]);
      case_worst = std::max(case_worst, err.relative);
      case_abs = std::max(case_abs, err.absolute);
      if (!(err.relative <= (i == 0 ? tol : grad_tol))) {
        ok = false;
        detail += std::string(" ") + (i == 0 ? "out" : expected.size() == 2 ? "d(qkv)" : names[i]) + " off";
      }
    }
    // Every mode of landing the copies gives the same bits (no races on what is read).
    for (size_t r = 1; r < runs.size(); ++r) {
      for (size_t i = 0; i < expected.size(); ++i) {
        if (runs[r][i].to_doubles() != runs[0][i].to_doubles()) {
          ok = false;
          detail += " eager and lazy cp.async differ";
          break;
        }
      }
    }
    if (faults.any()) {
      detail += " FAULTS: " + faults.first + " (misaligned float4 " + std::to_string(faults.misaligned) +
                ", cp.async " + std::to_string(faults.misaligned_async) + ", unwaited " +
                std::to_string(faults.unwaited_copies) + ", smem " + std::to_string(faults.smem_overflow) +
                ", ldmatrix " + std::to_string(faults.bad_ldmatrix) + ")";
    }
    (c.bf16 ? worst_bf16 : worst) = std::max(c.bf16 ? worst_bf16 : worst, case_worst);
    failures += ok ? 0 : 1;
    std::printf("%-4s %-58s worst %.2e (max abs %.2e) bits %016llx%s\n", ok ? "ok" : "FAIL", c.name.c_str(), case_worst,
                case_abs, static_cast<unsigned long long>(runs.empty() ? 0 : bits_hash(runs[0])), detail.c_str());
    std::fflush(stdout);
  }
  std::printf("%s: %d failing case(s); worst normalised error f32 %.2e (tolerance %.0e), bf16 %.2e (tolerance %.0e "
              "output, %.0e gradients)\n",
              failures ? "FAILED" : "PASSED", failures, worst, kTol, worst_bf16, kTolBf16, kTolBf16Grad);
  return failures ? 1 : 0;
}
