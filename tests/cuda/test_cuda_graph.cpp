// DeviceGraph: GPU work captured once and replayed (the graph latencies of
// ./train_distill). A replay must give the bits of the eager run on the inputs'
// current contents, and work that cannot be captured must fail clearly and
// leave the engine usable.
#include <gtest/gtest.h>

#include "engine/autograd.h"
#include "engine/ops/ops.h"
#include "engine/random.h"
#include "models/vit.h"
#include "tests/cuda/cuda_expect.h"
#include "tests/expect_error.h"
#include "train/evaluate.h"

namespace engine {
namespace {

Tensor random_on_gpu(const Shape& shape, Rng& rng) { return Tensor::uniform(shape, rng, -2.0, 2.0).to(Device::cuda()); }

TEST(DeviceGraph, IsRefusedOffTheGpu) {
  testing::expect_error_mentioning([] { DeviceGraph graph(Device::cpu(), [] {}); }, {"device graph"});
}

TEST(CudaGraph, ReplaysTheCapturedWorkOnTheInputsCurrentContents) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  NoGradGuard no_grad;
  Rng rng(31);
  const Tensor a = random_on_gpu({37, 65}, rng), b = random_on_gpu({37, 65}, rng);
  const Tensor out = Tensor::empty(a.shape(), DType::F32, Device::cuda());
  auto work = [&] { return silu(add(mul(a, b), a)); };
  DeviceGraph graph(Device::cuda(), [&] { copy_into(out, work()); });
  for (int round = 0; round < 2; ++round) {
    graph.replay();
    expect_matches(out, work(), 0.0, "replay " + std::to_string(round));
    copy_into(a, random_on_gpu(a.shape(), rng));  // the next replay reads the new values
  }
}

// A hybrid with every kind of mixer, attention included: the graph's logits
// are the eager forward's, bit for bit (the same kernels in the same order).
TEST(CudaGraph, HybridVitForwardReplaysBitForBit) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  NoGradGuard no_grad;
  VitConfig config = vit_preset("vit_cifar_tiny_patch4_32");
  config.depth = 6;
  config.mixers = {"attention", "mamba:d_state=16", "gated_rnn:width=96", "conv", "mlp", "identity"};
  VisionTransformer model(config, /*seed=*/5);
  model.to(Device::cuda());
  Rng rng(32);
  const Tensor images = random_on_gpu({3, 3, 32, 32}, rng);
  const Tensor eager = model.forward(images);
  const Tensor logits = Tensor::empty(eager.shape(), DType::F32, Device::cuda());
  DeviceGraph graph(Device::cuda(), [&] { copy_into(logits, model.forward(images)); });
  graph.replay();
  expect_matches(logits, eager, 0.0, "graph vs eager logits");
  EXPECT_GT(graph_latencies_ms({inference_logits(model)}, images, 2).at(0), 0.0);
}

TEST(CudaGraph, WorkThatKeepsTensorsWaitsForTheHostOrNestsIsRefused) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  NoGradGuard no_grad;
  Rng rng(33);
  const Tensor a = random_on_gpu({8, 16}, rng), b = random_on_gpu({8, 16}, rng);
  Tensor kept;
  testing::expect_error_mentioning([&] { DeviceGraph graph(Device::cuda(), [&] { kept = add(a, b); }); },
                                   {"keeps 1 tensor"});
  testing::expect_error_mentioning([&] { DeviceGraph graph(Device::cuda(), [&] { add(a, b).to(Device::cpu()); }); },
                                   {"between the host and cuda:0 inside a graph capture"});
  // An upload too: it waits for the stream, which a capture forbids.
  const auto upload = [] { Tensor::from_vector(std::vector<float>{1, 2}, {2}).to(Device::cuda()); };
  testing::expect_error_mentioning([&] { DeviceGraph graph(Device::cuda(), upload); },
                                   {"8 bytes between the host and cuda:0 inside a graph capture"});
  testing::expect_error_mentioning(
      [&] { DeviceGraph outer(Device::cuda(), [&] { DeviceGraph inner(Device::cuda(), [] {}); }); },
      {"do not nest"});
  // The failures left the stream and the allocator as they were.
  expect_matches(add(a, b), add(a.to(Device::cpu()), b.to(Device::cpu())), 0.0, "eager add after the failures");
  const Tensor out = Tensor::empty(a.shape(), DType::F32, Device::cuda());
  DeviceGraph graph(Device::cuda(), [&] { copy_into(out, mul(a, b)); });
  graph.replay();
  expect_matches(out, mul(a, b), 0.0, "a graph after the failures");
}

// run_branches: two chains of ops on two streams, eagerly and captured as a
// graph's two branches, give the bits that they give one after the other.
// Each chain allocates and releases temporaries of the same sizes, so any
// block of one handed to the other before the join would corrupt a result.
TEST(CudaBranches, GiveTheSequentialResultsEagerAndInAGraph) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  NoGradGuard no_grad;
  Rng rng(34);
  const Tensor a = random_on_gpu({1024, 4096}, rng), b = random_on_gpu({1024, 4096}, rng);
  auto chain = [](Tensor t, double scale) {
    for (int i = 0; i < 12; ++i) t = silu(t - t * t * scale) * 2.0;  // stays within about [-1, 2]
    return t;
  };
  const Tensor expected_a = chain(a, 0.25), expected_b = chain(b, 0.5);
  Tensor got_a, got_b;
  run_branches(Device::cuda(), [&] { got_a = chain(a, 0.25); }, [&] { got_b = chain(b, 0.5); });
  expect_matches(got_a, expected_a, 0.0, "eager, first branch");
  expect_matches(got_b, expected_b, 0.0, "eager, second branch");

  const Tensor out_a = Tensor::empty(a.shape(), DType::F32, Device::cuda());
  const Tensor out_b = Tensor::empty(b.shape(), DType::F32, Device::cuda());
  DeviceGraph graph(Device::cuda(), [&] {
    run_branches(
        Device::cuda(), [&] { copy_into(out_a, chain(a, 0.25)); },
        [&] {  // a nested call runs its two in order, on the side stream
          run_branches(Device::cuda(), [&] { copy_into(out_b, chain(b, 0.5)); }, [] {});
        });
  });
  graph.replay();
  expect_matches(out_a, expected_a, 0.0, "graph, first branch");
  expect_matches(out_b, expected_b, 0.0, "graph, second branch");
}

// cuBLAS GEMMs on both streams at once: long inner dimensions and small
// outputs, which cuBLAS may split over its workspace. Each call brings its own
// workspace, held until the GEMM is queued; one shared by both streams, or one
// handed back too early, could mix the branches' partial sums. (The binding
// before, on the handle's default workspace, passed this too on an H200.)
TEST(CudaBranches, CublasGemmsOnBothStreamsGiveTheSequentialResults) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  NoGradGuard no_grad;
  Rng rng(35);
  const Tensor a = random_on_gpu({4, 48, 32768}, rng), b = random_on_gpu({4, 32768, 40}, rng);
  const Tensor c = random_on_gpu({4, 40, 32768}, rng), d = random_on_gpu({4, 32768, 48}, rng);
  auto products = [](const Tensor& x, const Tensor& y) {
    std::vector<Tensor> out;
    for (int i = 0; i < 8; ++i) out.push_back(matmul(x, y));
    return out;
  };
  const Tensor expected_ab = matmul(a, b), expected_cd = matmul(c, d);
  std::vector<Tensor> got_ab, got_cd;
  run_branches(Device::cuda(), [&] { got_ab = products(a, b); }, [&] { got_cd = products(c, d); });
  for (size_t i = 0; i < got_ab.size(); ++i) {
    expect_matches(got_ab[i], expected_ab, 1e-5, "first branch, product " + std::to_string(i));
    expect_matches(got_cd[i], expected_cd, 1e-5, "second branch, product " + std::to_string(i));
  }
}

}  // namespace
}  // namespace engine
