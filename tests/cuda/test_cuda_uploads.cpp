// Copies that do not wait for the GPU, and the index lists that use them:
// small uploads go through a ring of pinned memory (engine/cuda/runtime.cu),
// so a copy queued behind slow GPU work must still deliver what the host held
// when it was made, also once the ring has come round to a stretch whose copy
// has not run yet; index_select takes an index built on the host, checked
// there; a PendingDownload delivers what the GPU work before it wrote, though
// its source is freed at once. Skips itself without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/ops/ops.h"
#include "engine/random.h"
#include "tests/cuda/cuda_expect.h"
#include "tests/expect_error.h"

namespace engine {
namespace {

// Queues a few milliseconds of GPU work: copies queued after it are still
// waiting when the host comes to reuse their staging memory.
Tensor slow_gpu_work(const Tensor& a) {
  Tensor out = a;
  for (int i = 0; i < 4; ++i) out = matmul(out, a) * 0.01;
  return out;
}

TEST(CudaUploads, SmallCopiesQueuedBehindTheGpuKeepTheirValues) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  Rng rng(21);
  // 40 copies of just under 1 MB (the most the ring stages), at sizes that are
  // not multiples of its alignment, each queued behind its own GPU work: 2.5
  // times round the 16 MB ring, so every stretch the ring comes back to still
  // has its copy waiting behind the GPU. Then two larger copies, which wait
  // for the GPU instead.
  std::vector<Tensor> hosts, expected, devices;
  for (int i = 0; i < 42; ++i) {
    const int64_t n = i < 40 ? 262144 - 7 * i : 300000 + i;
    hosts.push_back(Tensor::uniform({n}, rng, -1, 1));
    expected.push_back(hosts.back().clone());
  }
  const Tensor work = Tensor::uniform({4096, 4096}, rng, -1, 1).to(Device::cuda());
  Tensor busy;
  for (Tensor& host : hosts) {
    busy = slow_gpu_work(work);
    devices.push_back(host.to(Device::cuda()));
    std::fill(host.data<float>(), host.data<float>() + host.numel(), 7.0f);  // free once to() returns
  }
  for (size_t i = 0; i < hosts.size(); ++i) {
    expect_matches(devices[i].to(Device::cpu()), expected[i], 0.0, "upload " + std::to_string(i));
  }
  EXPECT_TRUE(std::isfinite(sum(busy).item<double>()));
}

// Downloads queued behind GPU work, each source freed one step later, while
// its download may still wait behind the GPU (its memory goes to the results
// after it): each must still read what the work before it wrote.
TEST(CudaUploads, PendingDownloadsReadWhatTheWorkBeforeThemWrote) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  Rng rng(23);
  const Tensor work = Tensor::uniform({4096, 4096}, rng, -1, 1).to(Device::cuda());
  const Tensor start = Tensor::uniform({1000}, rng, -1, 1);
  std::vector<PendingDownload> downloads;
  std::vector<Tensor> expected;
  Tensor value = start.to(Device::cuda());
  for (int i = 0; i < 6; ++i) {
    Tensor busy = slow_gpu_work(work);
    // value <- value * 2 + 1 after the slow work (the sum of busy times 0 keeps it in order).
    value = value * 2.0 + 1.0 + sum(busy) * 0.0;
    const Tensor source = value.contiguous();
    downloads.emplace_back(source.raw_data(), source.device(), source.numel() * sizeof(float));
    expected.push_back(i == 0 ? start * 2.0 + 1.0 : expected.back() * 2.0 + 1.0);
  }
  for (size_t i = 0; i < downloads.size(); ++i) {
    const auto* bytes = static_cast<const float*>(downloads[i].wait());
    const Tensor landed = Tensor::from_vector(std::vector<float>(bytes, bytes + 1000), {1000});
    expect_matches(landed, expected[i], 1e-6, "download " + std::to_string(i));
  }
}

TEST(CudaUploads, IndexSelectTakesAHostIndexCheckedOnTheHost) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  Rng rng(22);
  Tensor x = Tensor::uniform({6, 5}, rng, -1, 1);
  const Tensor index = Tensor::from_vector<int64_t>({5, 0, 0, 3}, {4});
  Tensor x_gpu = x.to(Device::cuda());
  x.set_requires_grad(true);
  x_gpu.set_requires_grad(true);
  const Tensor weights = Tensor::uniform({4, 5}, rng, -1, 1);
  const Tensor out = index_select(x, 0, index), out_gpu = index_select(x_gpu, 0, index);
  EXPECT_TRUE(out_gpu.device().is_cuda());
  expect_matches(out_gpu.to(Device::cpu()), out, 0.0, "rows picked by a host index");
  sum(out * weights).backward();
  sum(out_gpu * weights.to(Device::cuda())).backward();
  expect_matches(x_gpu.grad().to(Device::cpu()), x.grad(), 1e-6, "gradient, with a repeated row");
  testing::expect_error_mentioning(
      [&] { index_select(x_gpu, 0, Tensor::from_vector<int64_t>({1, 6}, {2})); }, {"index 6", "size 6"});
}

TEST(CudaUploads, DeviceIndexSelectsOnTheGpuForSeveralTensors) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  Rng rng(23);
  const Tensor host = Tensor::from_vector<int64_t>({5, 0, 0, 3}, {4});
  const DeviceIndex index(host, Device::cuda());
  EXPECT_TRUE(index.tensor().device().is_cuda());
  const Tensor x = Tensor::uniform({6, 5}, rng, -1, 1), y = Tensor::uniform({7}, rng, -1, 1);
  expect_matches(index_select(x.to(Device::cuda()), 0, index).to(Device::cpu()), index_select(x, 0, host), 0.0,
                 "rows of a matrix");
  expect_matches(index_select(y.to(Device::cuda()), 0, index).to(Device::cpu()), index_select(y, 0, host), 0.0,
                 "entries of a vector");
  testing::expect_error_mentioning([&] { index_select(x, 0, index); }, {"index on cuda", "input on cpu"});
  testing::expect_error_mentioning([&] { DeviceIndex(host.to(Device::cuda()), Device::cuda()); },
                                   {"on the host"});
}

}  // namespace
}  // namespace engine
