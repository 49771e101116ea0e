// attention_row_stat_sums on CUDA against the CPU reference: random softmax
// rows of many widths (every compiled sort width, rows that do not fill it),
// uniform rows (exact ties at the mass thresholds) and one-hot rows, with
// and without keep masks (an image with nothing kept, a dropped class token),
// with and without a class token, a mask on either device; two GPU runs
// bit-identical; rows too long for the kernel computed on the host. Skips
// itself without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "engine/ops/attention_stats/attention_stats.h"
#include "engine/random.h"
#include "tests/cuda/cuda_expect.h"

namespace engine {
namespace {

// [B, H, N, N] softmax rows: head 0 random logits of spread `spread`, head 1
// uniform, head 2 one-hot at a random column, further heads random again.
Tensor attention_rows(int64_t batch, int64_t heads, int64_t n, double spread, Rng& rng) {
  std::vector<float> values;
  std::vector<double> row(static_cast<size_t>(n));
  for (int64_t bh = 0; bh < batch * heads; ++bh) {
    const int64_t head = bh % heads;
    for (int64_t q = 0; q < n; ++q) {
      double total = 0;
      for (double& v : row) {
        v = head == 1 ? 1.0 : std::exp(spread * rng.normal());
        total += v;
      }
      const int64_t hot = rng.integer(n);
      for (int64_t j = 0; j < n; ++j) {
        values.push_back(static_cast<float>(head == 2 ? (j == hot ? 1.0 : 0.0) : row[j] / total));
      }
    }
  }
  return Tensor::from_vector(values, {batch, heads, n, n});
}

// Image 0 keeps everything, image 1 nothing, the others about 70% of their
// tokens (image 2 drops the class token).
Tensor keep_mask(int64_t batch, int64_t n, Rng& rng) {
  std::vector<uint8_t> keep;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < n; ++t) {
      const bool kept = b == 0 || (b != 1 && !(b == 2 && t == 0) && rng.uniform() < 0.7);
      keep.push_back(kept ? 1 : 0);
    }
  }
  return Tensor::from_vector(keep, {batch, n});
}

// Each statistic against its own scale: a k off by one in a head's sums, or
// a class row's top1 off by 1e-9, fails.
void expect_sums_match(const Tensor& actual, const Tensor& expected, const std::string& what) {
  ASSERT_TRUE(actual.device().is_cuda()) << what;
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  const std::vector<double> a = actual.to(Device::cpu()).to_doubles(), e = expected.to_doubles();
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_LE(std::abs(a[i] - e[i]), 1e-11 * (1 + std::abs(e[i])))
        << what << ": element " << i << " (statistic " << i % kRowStats << ")";
  }
}

TEST(CudaAttentionStats, MatchesCpuOverWidthsMasksAndClassTokens) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  Rng rng(11);
  // 1 to 2048 tokens: each compiled width (64, 128, ..., 2048 places) full and part-filled.
  for (int64_t n : {1, 5, 64, 65, 100, 128, 197, 256, 300, 512, 577, 1024, 1025, 2048}) {
    const int64_t batch = n > 500 ? 3 : 5, heads = n > 500 ? 3 : 4;
    const Tensor probs = attention_rows(batch, heads, n, n > 500 ? 1.0 : 2.5, rng);
    const Tensor probs_gpu = probs.to(Device::cuda());
    for (bool masked : {false, true}) {
      const Tensor keep = masked ? keep_mask(batch, n, rng) : Tensor();
      for (int64_t cls : {int64_t{0}, int64_t{-1}, n - 1}) {
        const std::string what = "n " + std::to_string(n) + (masked ? " masked" : "") + " cls " + std::to_string(cls);
        // The op moves a mask to the probabilities' device: give it the host's for cls -1.
        const Tensor gpu_keep = keep.defined() && cls != -1 ? keep.to(Device::cuda()) : keep;
        expect_sums_match(attention_row_stat_sums(probs_gpu, gpu_keep, cls), attention_row_stat_sums(probs, keep, cls),
                          what);
      }
    }
  }
}

TEST(CudaAttentionStats, RepeatsBitForBit) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  Rng rng(12);
  const Tensor probs = attention_rows(16, 3, 65, 2.0, rng).to(Device::cuda());
  const Tensor keep = keep_mask(16, 65, rng).to(Device::cuda());
  expect_matches(attention_row_stat_sums(probs, keep, 0).to(Device::cpu()),
                 attention_row_stat_sums(probs, keep, 0).to(Device::cpu()), 0.0, "second run");
}

// Past the widest sort, the op computes on the host and returns the sums on the GPU.
TEST(CudaAttentionStats, RowsLongerThanTheKernelSortsRunOnTheHost) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  Rng rng(13);
  const int64_t n = kRowStatsMaxTokensCuda + 1;
  const Tensor probs = attention_rows(1, 1, n, 1.0, rng);
  expect_sums_match(attention_row_stat_sums(probs.to(Device::cuda()), Tensor(), 0),
                    attention_row_stat_sums(probs, Tensor(), 0), "2049 tokens");
}

}  // namespace
}  // namespace engine
