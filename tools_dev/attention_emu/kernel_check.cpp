// Direct check of attention_mma.cu's kernels on the emulation, without the
// engine's tensors or ops: includes the generated translation unit, launches
// the forward, dK/dV and dQ kernels on raw [B, H, N, d] buffers (bf16-exact
// inputs, a key mask) and compares with a float64 reference. Faster to build
// than the harness (no library objects), for work on the kernels' fragment
// code; the harness is the full check (views, ops, packed path).
//   kernel_check [PLANT]  (built by build.sh as gen/kernel_check[_PLANT])
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <random>
#include <vector>

#include KERNEL_TU

namespace {

using engine::attention_cuda::BackwardParams;
using engine::attention_cuda::ForwardParams;
using engine::HeadsView;

float round_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u = ((u + 0x7fffu + ((u >> 16) & 1u)) >> 16) << 16;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

struct Problem {
  int b, h, n, d;
  bool masked;
  double scale;
  bool last_batch_empty = false;  // the last batch has no active key at all (zeros, lse -inf)
};

// Worst |a - e| / (1 + |e| + 0.01 max|e|) (the harness's measure).
double deviation(const std::vector<float>& a, const std::vector<double>& e) {
  double max_abs = 0, worst = 0;
  for (double v : e) max_abs = std::max(max_abs, std::abs(v));
  for (size_t i = 0; i < a.size(); ++i) {
    const double diff = std::abs(a[i] - e[i]);
    if (!(diff == diff)) return INFINITY;
    worst = std::max(worst, diff / (1 + std::abs(e[i]) + 0.01 * max_abs));
  }
  return worst;
}

// FNV-1a over the bits of the results: equal hashes = bit-identical outputs
// (for comparing a kernel change that should not change any result).
uint64_t bits_hash(std::initializer_list<const std::vector<float>*> results) {
  uint64_t h = 1469598103934665603ull;
  for (const std::vector<float>* r : results) {
    for (float x : *r) {
      uint32_t u;
      std::memcpy(&u, &x, 4);
      for (int b = 0; b < 4; ++b) h = (h ^ ((u >> (8 * b)) & 0xffu)) * 1099511628211ull;
    }
  }
  return h;
}

template <int D>
bool run(const Problem& pr, uint32_t seed, double tol) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(-1.5f, 1.5f);
  const int B = pr.b, H = pr.h, N = pr.n;
  const size_t count = static_cast<size_t>(B) * H * N * D;
  std::vector<float> q(count), k(count), v(count), dout(count), active(B * N, 1.0f);
  for (size_t i = 0; i < count; ++i) {
    q[i] = round_bf16(1.5f * normal(gen));
    k[i] = round_bf16(1.5f * normal(gen));
    v[i] = round_bf16(normal(gen));
    dout[i] = round_bf16(uniform(gen));
  }
  if (pr.masked) {
    for (int i = 0; i < B * N; ++i) active[i] = (i % N == 0 || gen() % 100 > 35) ? 1.0f : 0.0f;
    if (pr.last_batch_empty) std::fill(active.begin() + (B - 1) * N, active.end(), 0.0f);
  }
  const int64_t bs = int64_t{H} * N * D, hs = int64_t{N} * D, ts = D;
  std::vector<float> out(count, NAN), lse(static_cast<size_t>(B) * H * N, NAN), dq(count, NAN), dk(count, NAN),
      dv(count, NAN), delta(static_cast<size_t>(B) * H * N);
  ForwardParams fp{{q.data(), bs, hs, ts}, {k.data(), bs, hs, ts}, {v.data(), bs, hs, ts}, {out.data(), bs, hs, ts},
                   pr.masked ? active.data() : nullptr, lse.data(), N, H, int64_t{B} * H,
                   static_cast<float>(pr.scale * 1.4426950408889634)};
  engine::attention_cuda::forward_mma(fp, D);

  // float64 reference: P, out, lse; then the gradients with the kernel's out for delta.
  std::vector<double> ref_out(count, 0), ref_lse(lse.size()), ref_dq(count, 0), ref_dk(count, 0), ref_dv(count, 0);
  for (int bh = 0; bh < B * H; ++bh) {
    const int bb = bh / H;
    const size_t base = static_cast<size_t>(bh) * N * D;
    std::vector<double> P(static_cast<size_t>(N) * N, 0.0);
    for (int i = 0; i < N; ++i) {
      double mx = -INFINITY;
      std::vector<double> s(N, -INFINITY);
      for (int j = 0; j < N; ++j) {
        if (active[bb * N + j] == 0.0f) continue;
        double dot = 0;
        for (int e = 0; e < D; ++e) dot += double(q[base + i * D + e]) * k[base + j * D + e];
        s[j] = dot * pr.scale;
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (int j = 0; j < N; ++j) sum += s[j] == -INFINITY ? 0.0 : std::exp(s[j] - mx);
      ref_lse[bh * N + i] = sum > 0 ? mx + std::log(sum) : -INFINITY;
      for (int j = 0; j < N; ++j) P[i * N + j] = sum > 0 && s[j] != -INFINITY ? std::exp(s[j] - mx) / sum : 0.0;
      for (int j = 0; j < N; ++j)
        for (int e = 0; e < D; ++e) ref_out[base + i * D + e] += P[i * N + j] * v[base + j * D + e];
    }
    for (int i = 0; i < N; ++i) {
      double dl = 0;
      for (int e = 0; e < D; ++e) dl += double(out[base + i * D + e]) * dout[base + i * D + e];
      delta[bh * N + i] = static_cast<float>(dl);
    }
    for (int i = 0; i < N; ++i) {
      for (int j = 0; j < N; ++j) {
        double dp = 0;
        for (int e = 0; e < D; ++e) dp += double(dout[base + i * D + e]) * v[base + j * D + e];
        const double ds = P[i * N + j] * (dp - delta[bh * N + i]);
        for (int e = 0; e < D; ++e) {
          ref_dv[base + j * D + e] += P[i * N + j] * dout[base + i * D + e];
          ref_dq[base + i * D + e] += pr.scale * ds * k[base + j * D + e];
          ref_dk[base + j * D + e] += pr.scale * ds * q[base + i * D + e];
        }
      }
    }
  }
  BackwardParams bp{{q.data(), bs, hs, ts}, {k.data(), bs, hs, ts}, {v.data(), bs, hs, ts},
                    {dout.data(), bs, hs, ts}, {dq.data(), bs, hs, ts}, {dk.data(), bs, hs, ts},
                    {dv.data(), bs, hs, ts}, pr.masked ? active.data() : nullptr, lse.data(), delta.data(), N, H,
                    int64_t{B} * H, static_cast<float>(pr.scale), static_cast<float>(pr.scale * 1.4426950408889634)};
  engine::attention_cuda::backward_mma(bp, D);

  // lse: -inf rows must match exactly; the rest within tolerance.
  double lse_err = 0;
  for (size_t i = 0; i < lse.size(); ++i) {
    if (ref_lse[i] == -INFINITY || lse[i] == -INFINITY) {
      lse_err = std::max(lse_err, ref_lse[i] == lse[i] ? 0.0 : INFINITY);
    } else {
      lse_err = std::max(lse_err, std::abs(lse[i] - ref_lse[i]) / (1 + std::abs(ref_lse[i])));
    }
  }
  const double errs[] = {deviation(out, ref_out), lse_err, deviation(dq, ref_dq), deviation(dk, ref_dk),
                         deviation(dv, ref_dv)};
  const emu::Faults faults = emu::take_faults();
  bool ok = !faults.any();
  for (int i = 0; i < 5; ++i) ok = ok && errs[i] <= (i < 2 ? tol : 2 * tol);  // gradients: 2e-2
  // Rows without keys: exactly zero output and gradients.
  if (pr.last_batch_empty) {
    const size_t first = static_cast<size_t>(B - 1) * H * N * D;
    for (const std::vector<float>* t : {&out, &dq, &dk, &dv}) {
      for (size_t i = first; i < count; ++i) ok = ok && (*t)[i] == 0.0f;
    }
  }
  std::printf("%-4s B %d H %d N %3d d %d%s: out %.2e lse %.2e dq %.2e dk %.2e dv %.2e bits %016llx%s%s\n",
              ok ? "ok" : "FAIL", B, H, N, D, pr.masked ? " mask" : "     ", errs[0], errs[1], errs[2], errs[3], errs[4],
              static_cast<unsigned long long>(bits_hash({&out, &lse, &dq, &dk, &dv})), faults.any() ? " FAULT: " : "",
              faults.first.c_str());
  std::fflush(stdout);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  const double tol = 1e-2;  // output and lse; 2e-2 for the gradients (see harness.cpp's kTolBf16)
  int failures = 0;
  emu::set_async_mode(emu::AsyncMode::kLazy);
  uint32_t seed = 1;
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  for (int n : {1, 17, 65, 197}) {
    if (quick && n != 65) continue;
    for (bool masked : {false, true}) {
      failures += !run<64>({2, 3, n, 64, masked, 0.125}, seed++, tol);
      failures += !run<32>({1, 2, n, 32, masked, 1.0 / std::sqrt(32.0)}, seed++, tol);
    }
  }
  if (!quick) {
    failures += !run<64>({1, 2, 75, 64, true, 0.125}, seed++, tol);   // partial tile of 11 keys
    failures += !run<32>({1, 1, 300, 32, true, 0.2}, seed++, tol);    // three blocks of 128 rows
  }
  failures += !run<64>({2, 2, 65, 64, true, 0.125, true}, seed++, tol);  // batch 1: no key at all
  std::printf("%s: %d failing\n", failures ? "FAILED" : "PASSED", failures);
  return failures ? 1 : 0;
}
