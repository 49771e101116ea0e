// CPU reference kernels of the attention family, in float32 and float64. One
// (batch, head) at a time, parallel over them with OpenMP, one query row at a
// time within: the row's scores live in an N-long scratch vector, so nothing
// [N, N] is ever allocated. Loops run with the contiguous index innermost
// (k and v are transposed once per head for the dot products), which the
// compiler vectorises; sums go in a fixed order, so results are reproducible.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/ops/attention/attention_kernels.h"
#include "engine/ops/strided.h"

namespace engine {

namespace {

// One (batch, head): its [N, d] matrices and the batch's key mask.
template <typename T>
struct Head {
  const T* q;
  const T* k;
  const T* v;
  const float* active;  // [N], nullptr = every key
  int64_t n, d;
  T scale;

  bool key_on(int64_t j) const { return active == nullptr || active[j] != 0.0f; }
};

// m [rows, cols] -> mt [cols, rows].
template <typename T>
void transpose(const T* m, int64_t rows, int64_t cols, T* mt) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) mt[c * rows + r] = m[r * cols + c];
  }
}

// dots[j] = a . bt[:, j] for j < n, with bt [d, n] (a matrix transposed).
template <typename T>
void row_dots(const T* a, const T* bt, int64_t n, int64_t d, T* dots) {
  std::fill(dots, dots + n, T(0));
  for (int64_t c = 0; c < d; ++c) {
    const T ac = a[c];
    const T* bc = bt + c * n;
    for (int64_t j = 0; j < n; ++j) dots[j] += ac * bc[j];
  }
}

// scores[j] = scale * q_i . k_j, -inf for dropped keys; returns their max.
template <typename T>
T row_scores(const Head<T>& h, const T* kt, int64_t i, T* scores) {
  row_dots(h.q + i * h.d, kt, h.n, h.d, scores);
  T max = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < h.n; ++j) {
    scores[j] = h.key_on(j) ? h.scale * scores[j] : -std::numeric_limits<T>::infinity();
    max = std::max(max, scores[j]);
  }
  return max;
}

template <typename T>
void forward_head(const Head<T>& h, T* out, T* lse, std::vector<T>& kt, std::vector<T>& scores) {
  const int64_t n = h.n, d = h.d;
  transpose(h.k, n, d, kt.data());
  for (int64_t i = 0; i < n; ++i) {
    const T max = row_scores(h, kt.data(), i, scores.data());
    T* o = out + i * d;
    std::fill(o, o + d, T(0));
    if (max == -std::numeric_limits<T>::infinity()) {  // no active key: zeros
      lse[i] = max;
      continue;
    }
    // Subtracting the row max keeps exp() from overflowing; o accumulates the
    // unnormalised sum, divided once at the end.
    T total = 0;
    for (int64_t j = 0; j < n; ++j) {
      const T p = std::exp(scores[j] - max);
      if (p == T(0)) continue;  // a dropped key (or an underflow): adds nothing
      total += p;
      const T* vj = h.v + j * d;
      for (int64_t c = 0; c < d; ++c) o[c] += p * vj[c];
    }
    const T inv = T(1) / total;
    for (int64_t c = 0; c < d; ++c) o[c] *= inv;
    lse[i] = max + std::log(total);
  }
}

template <typename T>
void backward_head(const Head<T>& h, const T* out, const T* lse, const T* dout, T* dq, T* dk, T* dv,
                   std::vector<T>& kt, std::vector<T>& vt, std::vector<T>& p, std::vector<T>& ds) {
  const int64_t n = h.n, d = h.d;
  transpose(h.k, n, d, kt.data());
  transpose(h.v, n, d, vt.data());
  std::fill(dk, dk + n * d, T(0));
  std::fill(dv, dv + n * d, T(0));
  for (int64_t i = 0; i < n; ++i) {
    T* dqi = dq + i * d;
    std::fill(dqi, dqi + d, T(0));
    if (lse[i] == -std::numeric_limits<T>::infinity()) continue;  // a row without keys: no gradient
    // P_ij recomputed from the scores and the saved log-sum-exp.
    row_scores(h, kt.data(), i, p.data());
    for (int64_t j = 0; j < n; ++j) p[j] = std::exp(p[j] - lse[i]);
    // dS_ij = P_ij (dP_ij - delta_i), dP_ij = dout_i . v_j, delta_i = dout_i . out_i.
    const T* gi = dout + i * d;
    const T* oi = out + i * d;
    T delta = 0;
    for (int64_t c = 0; c < d; ++c) delta += gi[c] * oi[c];
    row_dots(gi, vt.data(), n, d, ds.data());
    for (int64_t j = 0; j < n; ++j) ds[j] = p[j] * (ds[j] - delta);
    const T* qi = h.q + i * d;
    for (int64_t j = 0; j < n; ++j) {
      if (p[j] == T(0)) continue;  // a dropped key: no gradient through it
      const T dsj = h.scale * ds[j];
      const T* kj = h.k + j * d;
      T* dkj = dk + j * d;
      T* dvj = dv + j * d;
      for (int64_t c = 0; c < d; ++c) {
        dqi[c] += dsj * kj[c];
        dkj[c] += dsj * qi[c];
        dvj[c] += p[j] * gi[c];
      }
    }
  }
}

// The (batch, head) pairs as Heads: q, k, v [B, H, N, d] and the mask [B, N].
template <typename T>
Head<T> head_at(const AttentionInputs& in, int64_t bh) {
  const int64_t heads = in.q.size(1), n = in.q.size(2), d = in.q.size(3);
  const int64_t at = bh * n * d;
  const float* mask = in.key_active.defined() ? static_cast<const float*>(in.key_active.raw_data()) : nullptr;
  return {static_cast<const T*>(in.q.raw_data()) + at, static_cast<const T*>(in.k.raw_data()) + at,
          static_cast<const T*>(in.v.raw_data()) + at, mask ? mask + (bh / heads) * n : nullptr, n, d,
          static_cast<T>(in.scale)};
}

// Work per head is ~N^2 d; heads are shared out when there is enough of it.
bool worth_threads(const AttentionInputs& in) {
  const int64_t n = in.q.size(2), d = in.q.size(3);
  return in.q.size(0) * in.q.size(1) > 1 && in.q.size(0) * in.q.size(1) * n * n * d >= kParallelElements;
}

void attention_forward_cpu(const AttentionInputs& in, const Tensor& out, const Tensor& lse) {
  dispatch_float(in.q.dtype(), "fused_attention", [&](auto tag) {
    using T = decltype(tag);
    const int64_t heads = in.q.size(0) * in.q.size(1), n = in.q.size(2), d = in.q.size(3);
    T* po = static_cast<T*>(out.raw_data());
    T* pl = static_cast<T*>(lse.raw_data());
#pragma omp parallel if (worth_threads(in))
    {
      std::vector<T> kt(n * d), scores(n);
#pragma omp for schedule(static)
      for (int64_t bh = 0; bh < heads; ++bh) forward_head(head_at<T>(in, bh), po + bh * n * d, pl + bh * n, kt, scores);
    }
  });
}

void attention_backward_cpu(const AttentionInputs& in, const Tensor& out, const Tensor& lse, const Tensor& dout,
                            const Tensor& dq, const Tensor& dk, const Tensor& dv) {
  dispatch_float(in.q.dtype(), "fused_attention_backward", [&](auto tag) {
    using T = decltype(tag);
    const int64_t heads = in.q.size(0) * in.q.size(1), n = in.q.size(2), d = in.q.size(3);
    const T* po = static_cast<const T*>(out.raw_data());
    const T* pl = static_cast<const T*>(lse.raw_data());
    const T* pg = static_cast<const T*>(dout.raw_data());
    T* pdq = static_cast<T*>(dq.raw_data());
    T* pdk = static_cast<T*>(dk.raw_data());
    T* pdv = static_cast<T*>(dv.raw_data());
#pragma omp parallel if (worth_threads(in))
    {
      std::vector<T> kt(n * d), vt(n * d), p(n), ds(n);
#pragma omp for schedule(static)
      for (int64_t bh = 0; bh < heads; ++bh) {
        const int64_t at = bh * n * d;
        backward_head(head_at<T>(in, bh), po + at, pl + bh * n, pg + at, pdq + at, pdk + at, pdv + at, kt, vt, p,
                      ds);
      }
    }
  });
}

}  // namespace

KernelSlot<AttentionForwardKernel> attention_forward_kernel{"fused_attention", &attention_forward_cpu, nullptr};
KernelSlot<AttentionBackwardKernel> attention_backward_kernel{"fused_attention_backward", &attention_backward_cpu,
                                                              nullptr};

}  // namespace engine
