#include <gtest/gtest.h>

#include <filesystem>
#include <system_error>

#include "engine/tensor.h"
#include "tests/shared_data.h"

namespace {
// Removes the files that the tests wrote under scratch_root().
class ScratchCleanup : public testing::Environment {
 public:
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(engine::testing::scratch_root(), ignored);
  }
};
}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  testing::AddGlobalTestEnvironment(new ScratchCleanup);  // gtest owns it
  // Every test runs with fresh tensors full of NaN: an op that leaves part of
  // an output unwritten fails its comparisons instead of passing on stale memory.
  engine::set_poison_empty(true);
  return RUN_ALL_TESTS();
}
