// CPU reference kernels of the attention family, in float32 and float64. One
// (batch, head) at a time, parallel over them with OpenMP; every operand is a
// strided view (attention_kernels.h), so a head's q, k, v, out and gradients
// are [N, d] matrices, each with its own row stride. Within a head, blocks of
// 16 query rows at a time: their [16, N] scores live in a small scratch, so
// nothing [N, N] is ever allocated. Every step is one small product,
// block_product, whose inner loop runs along a contiguous row with 4 x 2
// vectors of accumulators in registers (k and v are transposed once per head
// where a product needs them that way). Sums go in a fixed order, so results
// are reproducible, independent of the thread count and of the layout.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "engine/ops/attention/attention_kernels.h"
#include "engine/ops/strided.h"
#include "engine/ops/vector_math.h"

namespace engine {

namespace {

constexpr int64_t kBlock = 16;  // query rows per block: also the depth of the dk and dv products

// The vector type of block_product's register tiles (GCC vector extension):
// 32 bytes, 8 floats or 4 doubles, which -march=native keeps in AVX registers.
template <typename T>
struct VecOf {
  typedef T type __attribute__((vector_size(32)));
};
template <typename T>
using Vec = typename VecOf<T>::type;
template <typename T>
constexpr int64_t kLanes = sizeof(Vec<T>) / sizeof(T);

template <typename T>
Vec<T> load_vec(const T* at) {
  Vec<T> v;
  std::memcpy(&v, at, sizeof(v));
  return v;
}

// C[r][x] (+)= sum_{t < depth} A[r * lda + t] * B[t * ldb + x] for r < R and
// the 2 vectors of x: R x 2 sums stay in registers across the depth loop
// (R = 6: 12 accumulators, 2 loads of B and 6 broadcasts of A per 12 FMAs).
template <typename T, int R>
void product_tile(int64_t depth, const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc,
                  bool accumulate) {
  Vec<T> acc[R][2];
  for (int r = 0; r < R; ++r) {
    for (int h = 0; h < 2; ++h) acc[r][h] = accumulate ? load_vec(C + r * ldc + h * kLanes<T>) : Vec<T>{};
  }
  for (int64_t t = 0; t < depth; ++t) {
    const Vec<T> b0 = load_vec(B + t * ldb), b1 = load_vec(B + t * ldb + kLanes<T>);
    for (int r = 0; r < R; ++r) {
      const T a = A[r * lda + t];
      acc[r][0] += a * b0;
      acc[r][1] += a * b1;
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int h = 0; h < 2; ++h) std::memcpy(C + r * ldc + h * kLanes<T>, &acc[r][h], sizeof(Vec<T>));
  }
}

// C = A B (+ C when `accumulate`) on row-major blocks: C [rows, width] with
// row stride ldc, A [rows, depth] (lda), B [depth, width] (ldb). Columns go in
// chunks of 2 vectors through product_tile, 6 rows at a time; a last partial
// chunk takes the plain loop, which sums in the same order.
template <typename T>
void block_product(int64_t rows, int64_t width, int64_t depth, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                   int64_t ldc, bool accumulate) {
  constexpr int64_t chunk = 2 * kLanes<T>;
  for (int64_t x0 = 0; x0 < width; x0 += chunk) {
    if (x0 + chunk <= width) {
      int64_t r = 0;
      for (; r + 6 <= rows; r += 6) product_tile<T, 6>(depth, A + r * lda, lda, B + x0, ldb, C + r * ldc + x0, ldc, accumulate);
      const T* a = A + r * lda;
      T* c = C + r * ldc + x0;
      switch (rows - r) {
        case 5: product_tile<T, 5>(depth, a, lda, B + x0, ldb, c, ldc, accumulate); break;
        case 4: product_tile<T, 4>(depth, a, lda, B + x0, ldb, c, ldc, accumulate); break;
        case 3: product_tile<T, 3>(depth, a, lda, B + x0, ldb, c, ldc, accumulate); break;
        case 2: product_tile<T, 2>(depth, a, lda, B + x0, ldb, c, ldc, accumulate); break;
        case 1: product_tile<T, 1>(depth, a, lda, B + x0, ldb, c, ldc, accumulate); break;
        default: break;
      }
      continue;
    }
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t x = x0; x < width; ++x) {
        T sum = accumulate ? C[r * ldc + x] : T(0);
        for (int64_t t = 0; t < depth; ++t) sum += A[r * lda + t] * B[t * ldb + x];
        C[r * ldc + x] = sum;
      }
    }
  }
}

// Rows of a matrix: row i starts at data + i * ld, its d elements contiguous.
template <typename T>
struct Rows {
  T* data;
  int64_t ld;

  T* row(int64_t i) const { return data + i * ld; }
};

// One (batch, head) of the views: its [N, d] matrices and the batch's key mask.
template <typename T>
struct Head {
  Rows<const T> q, k, v;
  const float* active;  // [N], nullptr = every key
  int64_t n, d;
  T scale;

  bool key_on(int64_t j) const { return active == nullptr || active[j] != 0.0f; }
};

// Scratch of one thread, sized for one head. Rows over the keys are padded
// to `ld`, a whole number of product chunks, so that the score products run
// without a partial chunk (the padding columns are zeros of k and v; their
// scores are computed and never used).
template <typename T>
struct Scratch {
  int64_t ld;
  std::vector<T> kt, vt;   // k and v transposed, [d, ld]
  std::vector<T> p, ds;    // [16, ld]: scores, then probabilities; dP, then dS
  std::vector<T> pt, dst;  // [N, 16]: P and dS transposed
  Scratch(int64_t n, int64_t d)
      : ld((n + 2 * kLanes<T> - 1) / (2 * kLanes<T>) * (2 * kLanes<T>)),
        kt(d * ld, T(0)),
        vt(d * ld, T(0)),
        p(kBlock * ld),
        ds(kBlock * ld),
        pt(n * kBlock),
        dst(n * kBlock) {}
};

// m [n, d] -> mt [d, ld] (the first n columns of each row).
template <typename T>
void transpose(const Rows<const T>& m, int64_t n, int64_t d, int64_t ld, T* mt) {
  for (int64_t j = 0; j < n; ++j) {
    const T* row = m.row(j);
    for (int64_t c = 0; c < d; ++c) mt[c * ld + j] = row[c];
  }
}

// scores[r][j] = scale * q_{i0 + r} . k_j for r < rows, j < N, -inf for dropped keys.
template <typename T>
void block_scores(const Head<T>& h, int64_t i0, int64_t rows, const Scratch<T>& scratch, T* scores) {
  block_product(rows, scratch.ld, h.d, h.q.row(i0), h.q.ld, scratch.kt.data(), scratch.ld, scores, scratch.ld, false);
  for (int64_t r = 0; r < rows; ++r) {
    T* s = scores + r * scratch.ld;
    for (int64_t j = 0; j < h.n; ++j) s[j] = h.key_on(j) ? h.scale * s[j] : -std::numeric_limits<T>::infinity();
  }
}

template <typename T>
void forward_head(const Head<T>& h, const Rows<T>& out, T* lse, Scratch<T>& scratch) {
  const int64_t n = h.n, d = h.d, ld = scratch.ld;
  transpose(h.k, n, d, ld, scratch.kt.data());
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t rows = std::min(kBlock, n - i0);
    T* p = scratch.p.data();
    block_scores(h, i0, rows, scratch, p);
    // Subtracting the row max keeps exp() from overflowing; the unnormalised
    // probabilities multiply v, and each output row is divided once at the end.
    T total[kBlock];
    for (int64_t r = 0; r < rows; ++r) {
      T* pr = p + r * ld;
      const T max = *std::max_element(pr, pr + n);
      total[r] = 0;
      if (max == -std::numeric_limits<T>::infinity()) {  // no active key: zeros
        std::fill(pr, pr + n, T(0));
        lse[i0 + r] = max;
        continue;
      }
      T row_total = 0;
#pragma omp simd reduction(+ : row_total)
      for (int64_t j = 0; j < n; ++j) {
        pr[j] = std::exp(pr[j] - max);  // 0 for a dropped key
        row_total += pr[j];
      }
      total[r] = row_total;
      lse[i0 + r] = max + std::log(total[r]);
    }
    block_product(rows, d, n, p, ld, h.v.data, h.v.ld, out.row(i0), out.ld, false);
    for (int64_t r = 0; r < rows; ++r) {
      const T inv = total[r] > 0 ? T(1) / total[r] : T(0);
      T* o = out.row(i0 + r);
      for (int64_t c = 0; c < d; ++c) o[c] *= inv;
    }
  }
}

// The gradients of one head; out and dout as the forward's rows.
template <typename T>
struct HeadGrads {
  Rows<const T> out, dout;
  Rows<T> dq, dk, dv;
};

template <typename T>
void backward_head(const Head<T>& h, const T* lse, const HeadGrads<T>& g, Scratch<T>& scratch) {
  const int64_t n = h.n, d = h.d, ld = scratch.ld;
  transpose(h.k, n, d, ld, scratch.kt.data());
  transpose(h.v, n, d, ld, scratch.vt.data());
  for (int64_t j = 0; j < n; ++j) {
    std::fill(g.dk.row(j), g.dk.row(j) + d, T(0));
    std::fill(g.dv.row(j), g.dv.row(j) + d, T(0));
  }
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t rows = std::min(kBlock, n - i0);
    T* p = scratch.p.data();
    T* ds = scratch.ds.data();
    // P_ij = exp(score_ij - lse_i), recomputed (0 for dropped keys and for
    // rows without any key, whose lse is -inf).
    block_scores(h, i0, rows, scratch, p);
    // dP_ij = dout_i . v_j, then dS_ij = scale P_ij (dP_ij - delta_i) with
    // delta_i = dout_i . out_i (the scale of dq and dk folded in).
    block_product(rows, ld, d, g.dout.row(i0), g.dout.ld, scratch.vt.data(), ld, ds, ld, false);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r;
      T* pr = p + r * ld;
      T* dsr = ds + r * ld;
      const bool live = lse[i] != -std::numeric_limits<T>::infinity();
      const T* dout_i = g.dout.row(i);
      const T* out_i = g.out.row(i);
      T delta = 0;
      for (int64_t c = 0; c < d; ++c) delta += dout_i[c] * out_i[c];
      const T shift = live ? lse[i] : T(0);  // (no key: the scores are all -inf, exp gives 0)
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        pr[j] = std::exp(pr[j] - shift);
        dsr[j] = h.scale * pr[j] * (dsr[j] - delta);
      }
    }
    // dq_i = sum_j dS_ij k_j;  dk_j += sum_i dS_ij q_i;  dv_j += sum_i P_ij dout_i.
    block_product(rows, d, n, ds, ld, h.k.data, h.k.ld, g.dq.row(i0), g.dq.ld, false);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        scratch.pt[j * kBlock + r] = p[r * ld + j];
        scratch.dst[j * kBlock + r] = ds[r * ld + j];
      }
    }
    block_product(n, d, rows, scratch.dst.data(), kBlock, h.q.row(i0), h.q.ld, g.dk.data, g.dk.ld, true);
    block_product(n, d, rows, scratch.pt.data(), kBlock, g.dout.row(i0), g.dout.ld, g.dv.data, g.dv.ld, true);
  }
}

// The (batch, head) pair bh = b H + h of a [B, H, N, d] view.
template <typename T>
Rows<T> rows_of(const HeadsView<T>& view, int64_t bh, int64_t heads) {
  return {view.rows(bh / heads, bh % heads), view.token};
}

// The heads of q, k, v and the mask [B, N], one (batch, head) at a time.
template <typename T>
struct Heads {
  HeadsView<const T> q, k, v;
  const float* mask;
  int64_t heads, n, d;
  T scale;

  explicit Heads(const AttentionInputs& in)
      : q(heads_view<const T>(in.q)),
        k(heads_view<const T>(in.k)),
        v(heads_view<const T>(in.v)),
        mask(in.key_active.defined() ? static_cast<const float*>(in.key_active.raw_data()) : nullptr),
        heads(in.q.size(1)),
        n(in.q.size(2)),
        d(in.q.size(3)),
        scale(static_cast<T>(in.scale)) {}

  Head<T> at(int64_t bh) const {
    return {rows_of(q, bh, heads), rows_of(k, bh, heads), rows_of(v, bh, heads),
            mask ? mask + (bh / heads) * n : nullptr, n, d, scale};
  }
};

// Work per head is ~N^2 d; heads are shared out when there is enough of it.
bool worth_threads(const AttentionInputs& in) {
  const int64_t heads = in.q.size(0) * in.q.size(1), n = in.q.size(2), d = in.q.size(3);
  return heads > 1 && heads * n * n * d >= kParallelElements;
}

void attention_forward_cpu(const AttentionInputs& in, const Tensor& out, const Tensor& lse) {
  dispatch_float(in.q.dtype(), "fused_attention", [&](auto tag) {
    using T = decltype(tag);
    const Heads<T> all(in);
    const int64_t count = in.q.size(0) * all.heads, n = all.n;
    const HeadsView<T> po = heads_view<T>(out);
    T* pl = static_cast<T*>(lse.raw_data());
    // Each (batch, head) writes only its own rows of out and lse.
#pragma omp parallel if (worth_threads(in))
    {
      Scratch<T> scratch(n, all.d);
#pragma omp for schedule(static)
      for (int64_t bh = 0; bh < count; ++bh) forward_head(all.at(bh), rows_of(po, bh, all.heads), pl + bh * n, scratch);
    }
  });
}

void attention_backward_cpu(const AttentionInputs& in, const Tensor& out, const Tensor& lse, const Tensor& dout,
                            const Tensor& dq, const Tensor& dk, const Tensor& dv) {
  dispatch_float(in.q.dtype(), "fused_attention_backward", [&](auto tag) {
    using T = decltype(tag);
    const Heads<T> all(in);
    const int64_t count = in.q.size(0) * all.heads, n = all.n;
    const HeadsView<const T> po = heads_view<const T>(out), pg = heads_view<const T>(dout);
    const HeadsView<T> pdq = heads_view<T>(dq), pdk = heads_view<T>(dk), pdv = heads_view<T>(dv);
    const T* pl = static_cast<const T*>(lse.raw_data());
#pragma omp parallel if (worth_threads(in))
    {
      Scratch<T> scratch(n, all.d);
#pragma omp for schedule(static)
      for (int64_t bh = 0; bh < count; ++bh) {
        const int64_t h = all.heads;
        const HeadGrads<T> grads{rows_of(po, bh, h), rows_of(pg, bh, h), rows_of(pdq, bh, h), rows_of(pdk, bh, h),
                                 rows_of(pdv, bh, h)};
        backward_head(all.at(bh), pl + bh * n, grads, scratch);
      }
    }
  });
}

}  // namespace

KernelSlot<AttentionForwardKernel> attention_forward_kernel{"fused_attention", &attention_forward_cpu, nullptr};
KernelSlot<AttentionBackwardKernel> attention_backward_kernel{"fused_attention_backward", &attention_backward_cpu,
                                                              nullptr};

}  // namespace engine
