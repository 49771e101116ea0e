// read_weight_map: the index of a sharded checkpoint (model.safetensors.index.json).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <string>

#include "data/files.h"
#include "engine/safetensors.h"
#include "tests/expect_error.h"

namespace engine {
namespace {

using ::testing::HasSubstr;
using testing::error_of;

class WeightMapTest : public ::testing::Test {
 protected:
  std::string index_with(const std::string& json) {
    data::write_file(index_, json);
    return index_;
  }

  data::TempDir dir_;
  std::string index_ = dir_.path() + "/model.safetensors.index.json";
};

TEST_F(WeightMapTest, GivesEachTensorsShardFile) {
  const std::string index =
      index_with(R"({"metadata": {"total_size": 8}, "weight_map": {"b": "s2.safetensors", "a": "s1.safetensors"}})");
  EXPECT_EQ(read_weight_map(index),
            (std::map<std::string, std::string>{{"a", "s1.safetensors"}, {"b", "s2.safetensors"}}));
}

TEST_F(WeightMapTest, ABadIndexIsAnErrorNamingIt) {
  EXPECT_THAT(error_of([&] { read_weight_map(index_with(R"({"metadata": {}})")); }),
              HasSubstr("checkpoint index " + index_ + ": no 'weight_map' object"));
  EXPECT_THAT(error_of([&] { read_weight_map(index_with(R"({"weight_map": ["s1.safetensors"]})")); }),
              HasSubstr("checkpoint index " + index_ + ": no 'weight_map' object"));
  EXPECT_THAT(error_of([&] { read_weight_map(index_with(R"({"weight_map": {"a": 1}})")); }),
              HasSubstr("checkpoint index " + index_ + ": shard of tensor 'a' must be a string"));
  EXPECT_THAT(error_of([&] { read_weight_map(index_with("{")); }),
              HasSubstr("checkpoint index " + index_ + ": not valid JSON"));
}

TEST_F(WeightMapTest, AMissingIndexNamesItAndTheReason) {
  const std::string missing = dir_.path() + "/missing.index.json";
  EXPECT_EQ(error_of([&] { read_weight_map(missing); }),
            "cannot open checkpoint index '" + missing + "': " + std::strerror(ENOENT));
}

// A folder opens as a stream on Linux and read as empty text: "not valid JSON".
TEST_F(WeightMapTest, AFolderGivenAsTheIndexIsNamedAsOne) {
  EXPECT_EQ(error_of([&] { read_weight_map(dir_.path()); }),
            "checkpoint index " + dir_.path() + " is a folder, not a JSON file");
}

}  // namespace
}  // namespace engine
