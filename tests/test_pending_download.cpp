// PendingDownload on the CPU: the bytes are copied when it is made, so the
// source may change or go at once, and they move with the download. (The
// GPU's, queued behind the stream's work: tests/cuda/test_cuda_uploads.cpp.)
#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "engine/device.h"

namespace engine {
namespace {

TEST(PendingDownload, CopiesTheBytesWhenMade) {
  std::vector<float> source = {1.5f, -2.0f, 3.25f, 7.0f};
  const std::vector<float> expected = source;
  PendingDownload download(source.data(), Device::cpu(), source.size() * sizeof(float));
  source.assign(source.size(), 0.0f);
  const auto* landed = static_cast<const float*>(download.wait());
  EXPECT_EQ(std::vector<float>(landed, landed + expected.size()), expected);
  EXPECT_EQ(download.wait(), landed) << "a second wait returns the same bytes";
  PendingDownload moved = std::move(download);
  const auto* moved_bytes = static_cast<const float*>(moved.wait());
  EXPECT_EQ(std::vector<float>(moved_bytes, moved_bytes + expected.size()), expected);
}

}  // namespace
}  // namespace engine
