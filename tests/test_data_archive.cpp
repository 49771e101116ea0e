// extract_archive_once (once, concurrent, interrupted, failing) and locating the data.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <thread>

#include "data/archive.h"
#include "data/files.h"
#include "engine/error.h"
#include "tests/shared_data.h"

namespace data {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;
using engine::testing::ScopedEnv;

// Names of the entries of `dir` (to spot leftover temporary folders).
std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  return names;
}

// dir/tiny.tar.gz holding tiny/hello.txt, made with the system tar.
std::string make_tiny_archive(const std::string& dir) {
  fs::create_directories(dir + "/src/tiny");
  write_file(dir + "/src/tiny/hello.txt", "hello");
  const std::string archive = dir + "/tiny.tar.gz";
  const std::string command = "tar -czf '" + archive + "' -C '" + dir + "/src' tiny";
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
  return archive;
}

TEST(DataArchive, ExtractsOnceThenReusesTheCache) {
  TempDir cache;
  const std::string archive = data_file("imagenet-sample.tar");
  const std::string path = extract_archive_once(archive, cache.path());
  EXPECT_EQ(path, cache.path() + "/imagenet-sample");
  EXPECT_TRUE(fs::exists(path + "/imagenet-sample/synsets.txt"));
  EXPECT_EQ(entries(cache.path()), std::vector<std::string>{"imagenet-sample"});

  write_file(path + "/sentinel", "a second call must not extract again");
  EXPECT_EQ(extract_archive_once(archive, cache.path()), path);
  EXPECT_TRUE(fs::exists(path + "/sentinel"));
}

TEST(DataArchive, ConcurrentCallsShareOneCompleteCopy) {
  TempDir cache;
  const std::string archive = make_tiny_archive(cache.path());
  const std::string cache_dir = cache.path() + "/cache";
  std::vector<std::string> results(4);
  std::vector<std::thread> threads;
  for (std::string& result : results) {
    threads.emplace_back([&] { result = extract_archive_once(archive, cache_dir); });
  }
  for (std::thread& t : threads) t.join();
  for (const std::string& result : results) EXPECT_EQ(result, cache_dir + "/tiny");
  EXPECT_TRUE(fs::exists(cache_dir + "/tiny/tiny/hello.txt"));
  EXPECT_EQ(entries(cache_dir), std::vector<std::string>{"tiny"});  // the losers' copies are gone
}

TEST(DataArchive, LeftoversOfAnInterruptedRunAreNotTakenAsComplete) {
  TempDir dir;
  const std::string archive = make_tiny_archive(dir.path());
  const std::string cache_dir = dir.path() + "/cache";
  fs::create_directories(cache_dir + "/.tiny.partial-abc123/tiny");
  EXPECT_TRUE(fs::exists(extract_archive_once(archive, cache_dir) + "/tiny/hello.txt"));

  // A folder in the way that this code did not complete is reported, not used or deleted.
  const std::string other_cache = dir.path() + "/other";
  fs::create_directories(other_cache + "/tiny/half");
  EXPECT_THAT([&] { extract_archive_once(archive, other_cache); },
              ThrowsMessage<engine::Error>(HasSubstr(other_cache + "/tiny")));
  EXPECT_TRUE(fs::exists(other_cache + "/tiny/half"));
}

TEST(DataArchive, FailuresNameTheArchive) {
  TempDir dir;
  const std::string bad = dir.path() + "/broken.tar.gz";
  write_file(bad, "not a tar file");
  EXPECT_THAT([&] { extract_archive_once(bad, dir.path() + "/cache"); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(bad), HasSubstr("tar"))));
  EXPECT_TRUE(entries(dir.path() + "/cache").empty());  // no partial folder left behind
  EXPECT_THAT([&] { extract_archive_once(dir.path() + "/data.zip", dir.path()); },
              ThrowsMessage<engine::Error>(HasSubstr("unsupported")));
  EXPECT_THAT([&] { extract_archive_once(dir.path() + "/missing.tar", dir.path()); },
              ThrowsMessage<engine::Error>(HasSubstr(dir.path() + "/missing.tar")));
}

TEST(DataArchive, DataAndCacheDirsFollowTheEnvironment) {
  TempDir dir;
  {
    ScopedEnv env("ENGINE_DATA_DIR", dir.path());
    EXPECT_EQ(default_data_dir(), dir.path());
    EXPECT_THAT([] { data_file("cifar-10-binary.tar.gz"); },
                ThrowsMessage<engine::Error>(AllOf(HasSubstr(dir.path() + "/cifar-10-binary.tar.gz"),
                                                   HasSubstr("https://www.cs.toronto.edu/~kriz/cifar.html"),
                                                   HasSubstr("https://image-net.org"))));
  }
  {
    ScopedEnv data("ENGINE_DATA_DIR", "");
    ScopedEnv shared("ENGINE_SHARED_DIR", dir.path() + "/nowhere");
    EXPECT_THAT([] { default_data_dir(); }, ThrowsMessage<engine::Error>(HasSubstr(dir.path() + "/nowhere/data")));
  }
  {
    ScopedEnv env("ENGINE_CACHE_DIR", dir.path() + "/cache");
    EXPECT_EQ(default_cache_dir(), dir.path() + "/cache");
  }
  ScopedEnv env("ENGINE_CACHE_DIR", "");
  EXPECT_EQ(default_cache_dir(), "./.cache/data");
}

}  // namespace
}  // namespace data
