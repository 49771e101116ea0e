// extract_archive_once (once, concurrent, interrupted, stale, failing) and locating the data.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "data/archive.h"
#include "data/files.h"
#include "engine/error.h"
#include "tests/scoped_limit.h"
#include "tests/shared_data.h"

namespace data {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;
using engine::testing::ScopedEnv;
using engine::testing::ScopedLimit;

// Names of the entries of `dir` (to spot leftover temporary folders), but
// the lock files that extractions take turns by, which stay.
std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".lock") names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string read_text(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file(path);
  return std::string(bytes.begin(), bytes.end());
}

// `archive` (its type from its name) holding tiny/<file> with `text`, made with the system tar.
std::string make_archive(const std::string& archive, const std::string& file, const std::string& text) {
  TempDir src;
  fs::create_directories(src.path() + "/tiny");
  write_file(src.path() + "/tiny/" + file, text);
  fs::create_directories(fs::path(archive).parent_path());
  const std::string command = "tar -caf '" + archive + "' -C '" + src.path() + "' tiny";
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
  return archive;
}

// dir/tiny.tar.gz holding tiny/hello.txt.
std::string make_tiny_archive(const std::string& dir) { return make_archive(dir + "/tiny.tar.gz", "hello.txt", "hello"); }

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

// Callers that all find a stale copy replace it once, in turn: none fails, or
// deletes the fresh copy another has just moved in. (Before the lock, 3 in
// 1,380 processes failed so, between another's two renames.)
TEST(DataArchive, ConcurrentCallsReplaceAStaleCopyInTurn) {
  TempDir dir;
  const std::string archive = make_tiny_archive(dir.path());
  const std::string cache_dir = dir.path() + "/cache";
  const std::string path = extract_archive_once(archive, cache_dir);
  for (int round = 0; round < 10; ++round) {
    write_file(path + "/.extracted", "extracted from elsewhere/tiny.tar.gz\n");
    std::vector<std::thread> threads;
    for (int t = 0; t < 6; ++t) {
      threads.emplace_back([&] { EXPECT_NO_THROW(EXPECT_EQ(extract_archive_once(archive, cache_dir), path)); });
    }
    for (std::thread& t : threads) t.join();
    EXPECT_EQ(read_text(path + "/tiny/hello.txt"), "hello");
    EXPECT_EQ(entries(cache_dir), std::vector<std::string>{"tiny"});
  }
}

TEST(DataArchive, LeftoversOfAnInterruptedRunAreNotTakenAsComplete) {
  TempDir dir;
  const std::string archive = make_tiny_archive(dir.path());
  const std::string cache_dir = dir.path() + "/cache";
  fs::create_directories(cache_dir + "/.tiny.partial-abc123/tiny");
  fs::create_directories(cache_dir + "/.tiny.stale-def456/tiny");
  fs::create_directories(cache_dir + "/.other.partial-ghi789");  // another archive's: not this one's to judge
  EXPECT_TRUE(fs::exists(extract_archive_once(archive, cache_dir) + "/tiny/hello.txt"));
  EXPECT_EQ(entries(cache_dir), (std::vector<std::string>{".other.partial-ghi789", "tiny"}));  // deleted

  // A folder in the way that this code did not complete is reported, not used or deleted.
  const std::string other_cache = dir.path() + "/other";
  fs::create_directories(other_cache + "/tiny/half");
  EXPECT_THAT([&] { extract_archive_once(archive, other_cache); },
              ThrowsMessage<engine::Error>(HasSubstr(other_cache + "/tiny")));
  EXPECT_TRUE(fs::exists(other_cache + "/tiny/half"));
}

// The cache is named after the archive's file name, but holds what was extracted from where.
TEST(DataArchive, ArchivesOfTheSameNameInOtherFoldersGetTheirOwnContents) {
  TempDir dir;
  const std::string first = make_archive(dir.path() + "/a/tiny.tar.gz", "first.txt", "1");
  const std::string second = make_archive(dir.path() + "/b/tiny.tar.gz", "second.txt", "2");
  const std::string cache_dir = dir.path() + "/cache";
  const std::string path = extract_archive_once(first, cache_dir);
  EXPECT_TRUE(fs::exists(path + "/tiny/first.txt"));

  EXPECT_EQ(extract_archive_once(second, cache_dir), path);
  EXPECT_TRUE(fs::exists(path + "/tiny/second.txt"));
  EXPECT_FALSE(fs::exists(path + "/tiny/first.txt"));
  EXPECT_TRUE(fs::exists(extract_archive_once(first, cache_dir) + "/tiny/first.txt"));
  EXPECT_EQ(entries(cache_dir), std::vector<std::string>{"tiny"});  // the stale copies are gone
}

TEST(DataArchive, ARewrittenArchiveIsExtractedAgain) {
  TempDir dir;
  const std::string archive = make_archive(dir.path() + "/tiny.tar", "old.txt", "old");
  const std::string cache_dir = dir.path() + "/cache";
  const std::string path = extract_archive_once(archive, cache_dir);
  const auto extracted_at = fs::last_write_time(archive);

  // A plain tar of one small file is always 10240 bytes: only the time tells the new one apart
  // (set explicitly, as a quick rewrite may fall within the file system's time resolution).
  make_archive(archive, "new.txt", std::string(6000, 'n'));
  fs::last_write_time(archive, extracted_at + std::chrono::seconds(2));
  EXPECT_EQ(extract_archive_once(archive, cache_dir), path);
  EXPECT_TRUE(fs::exists(path + "/tiny/new.txt"));
  EXPECT_FALSE(fs::exists(path + "/tiny/old.txt"));

  // Truncated in the middle of new.txt: an error naming it, never the earlier extraction.
  fs::resize_file(archive, 5120);
  EXPECT_THAT([&] { extract_archive_once(archive, cache_dir); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(archive), HasSubstr("tar"))));
  EXPECT_EQ(entries(cache_dir), std::vector<std::string>{"tiny"});  // no partial folder left behind
}

TEST(DataArchive, AMarkerOfTheOldFormatIsStale) {
  TempDir dir;
  const std::string archive = make_tiny_archive(dir.path());
  const std::string cache_dir = dir.path() + "/cache";
  fs::create_directories(cache_dir + "/tiny/tiny");
  write_file(cache_dir + "/tiny/tiny/other.txt", "from another archive");
  write_file(cache_dir + "/tiny/.extracted", "extracted from elsewhere/tiny.tar.gz\n");

  const std::string path = extract_archive_once(archive, cache_dir);
  EXPECT_TRUE(fs::exists(path + "/tiny/hello.txt"));
  EXPECT_FALSE(fs::exists(path + "/tiny/other.txt"));
  EXPECT_THAT(read_text(path + "/.extracted"), HasSubstr(fs::canonical(archive).string()));
}

TEST(DataArchive, FailuresNameTheArchive) {
  TempDir dir;
  const std::string bad = dir.path() + "/broken.tar.gz";
  write_file(bad, "not a tar file");
  EXPECT_THAT([&] { extract_archive_once(bad, dir.path() + "/cache"); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(bad), HasSubstr("with tar failed"),
                                                 HasSubstr("not in gzip format"))));  // tar's own words
  EXPECT_TRUE(entries(dir.path() + "/cache").empty());  // no partial folder left behind
  EXPECT_THAT([&] { extract_archive_once(dir.path() + "/data.zip", dir.path()); },
              ThrowsMessage<engine::Error>(HasSubstr("unsupported")));
  // A name that is only a suffix leaves no name for its cache folder.
  const std::string no_stem = make_archive(dir.path() + "/.tar", "hello.txt", "hello");
  EXPECT_THAT([&] { extract_archive_once(no_stem, dir.path() + "/cache"); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(no_stem), HasSubstr("unsupported"))));
  EXPECT_THAT([&] { extract_archive_once(dir.path() + "/missing.tar", dir.path()); },
              ThrowsMessage<engine::Error>(HasSubstr(dir.path() + "/missing.tar")));
}

TEST(DataArchive, ExtractsTheNamedMembersIntoAnExistingFolder) {
  TempDir dir;
  const std::string archive = make_archive(dir.path() + "/tiny.tar", "hello.txt", "hello");
  extract_members(archive, dir.path(), {"tiny/hello.txt"});
  EXPECT_EQ(read_text(dir.path() + "/tiny/hello.txt"), "hello");
  EXPECT_THAT([&] { extract_members(archive, dir.path() + "/nope", {"tiny/hello.txt"}); },
              ThrowsMessage<engine::Error>(
                  AllOf(HasSubstr(archive), HasSubstr("'" + dir.path() + "/nope' is not a directory"))));
  EXPECT_THAT([&] { extract_members(archive, dir.path(), {"tiny/absent.txt"}); },
              ThrowsMessage<engine::Error>(AllOf(HasSubstr(archive), HasSubstr("tiny/absent.txt"))));
}

// Without a tar to run, nothing is taken as extracted: the error names the archive and why.
TEST(DataArchive, NoTarToRunIsAnError) {
  TempDir dir;
  const std::string archive = make_tiny_archive(dir.path());
  const std::string cache = dir.path() + "/cache";
  {
    ScopedEnv no_tar("PATH", dir.path() + "/no-programs-here");
    EXPECT_THAT([&] { extract_archive_once(archive, cache); },
                ThrowsMessage<engine::Error>(AllOf(HasSubstr("cannot run tar"), HasSubstr(archive),
                                                   HasSubstr(std::strerror(ENOENT)))));
  }
  EXPECT_TRUE(entries(cache).empty());
}

TEST(DataArchive, APipeThatCannotBeMadeGivesItsReason) {
  TempDir dir;
  const std::string archive = make_tiny_archive(dir.path());
  const int lowest_free = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(lowest_free, 0);
  ::close(lowest_free);
  ScopedLimit no_more_files(RLIMIT_NOFILE, static_cast<rlim_t>(lowest_free));
  EXPECT_THAT(
      [&] {
        errno = ENOENT;  // stale: not the reason
        extract_members(archive, dir.path(), {"tiny/hello.txt"});
      },
      ThrowsMessage<engine::Error>(AllOf(HasSubstr(archive), HasSubstr(std::strerror(EMFILE)))));
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
    ScopedEnv env("ENGINE_DATA_DIR", dir.path() + "/typo");
    EXPECT_THAT([] { default_data_dir(); },
                ThrowsMessage<engine::Error>(
                    HasSubstr("ENGINE_DATA_DIR='" + dir.path() + "/typo' is not a directory")));
  }
  {
    ScopedEnv data("ENGINE_DATA_DIR", "");
    ScopedEnv shared("ENGINE_SHARED_DIR", dir.path() + "/nowhere");
    EXPECT_THAT([] { default_data_dir(); }, ThrowsMessage<engine::Error>(HasSubstr(dir.path() + "/nowhere/data")));
  }
  {
    ScopedEnv data("ENGINE_DATA_DIR", "");
    ScopedEnv shared("ENGINE_SHARED_DIR", "");  // unset: ../shared, beside the repository
    if (fs::is_directory("../shared/data")) {
      EXPECT_EQ(default_data_dir(), "../shared/data");
    } else {
      EXPECT_THAT([] { default_data_dir(); },
                  ThrowsMessage<engine::Error>(HasSubstr("'../shared/data' does not exist")));
    }
  }
  {
    ScopedEnv env("ENGINE_CACHE_DIR", dir.path() + "/cache");
    EXPECT_EQ(default_cache_dir(), dir.path() + "/cache");
  }
  ScopedEnv env("ENGINE_CACHE_DIR", "");
  EXPECT_EQ(default_cache_dir(), "./.cache/data");
}

// A copy that keeps the modification time (cp -p, rsync -t) of a different archive: the
// size alone tells it apart.
TEST(DataArchive, AnArchiveOfAnotherSizeWithTheSameTimeIsExtractedAgain) {
  TempDir dir;
  const std::string archive = make_archive(dir.path() + "/tiny.tar", "old.txt", "old");
  const std::string cache_dir = dir.path() + "/cache";
  const std::string path = extract_archive_once(archive, cache_dir);
  const auto modified = fs::last_write_time(archive);
  const auto size = fs::file_size(archive);

  make_archive(archive, "new.txt", std::string(30000, 'n'));
  fs::last_write_time(archive, modified);
  ASSERT_NE(fs::file_size(archive), size);
  EXPECT_EQ(extract_archive_once(archive, cache_dir), path);
  EXPECT_TRUE(fs::exists(path + "/tiny/new.txt"));
  EXPECT_FALSE(fs::exists(path + "/tiny/old.txt"));
}

// Two archives of the same name, size and modification time in different folders: the
// path alone tells them apart.
TEST(DataArchive, ArchivesAlikeButForTheirFolderGetTheirOwnContents) {
  TempDir dir;
  const std::string first = make_archive(dir.path() + "/a/tiny.tar", "first.txt", "1");
  const std::string second = make_archive(dir.path() + "/b/tiny.tar", "other.txt", "2");
  fs::last_write_time(second, fs::last_write_time(first));
  ASSERT_EQ(fs::file_size(first), fs::file_size(second));  // a plain tar of one small file: 10240 bytes
  const std::string cache_dir = dir.path() + "/cache";
  const std::string path = extract_archive_once(first, cache_dir);
  EXPECT_TRUE(fs::exists(path + "/tiny/first.txt"));
  EXPECT_EQ(extract_archive_once(second, cache_dir), path);
  EXPECT_TRUE(fs::exists(path + "/tiny/other.txt"));
  EXPECT_FALSE(fs::exists(path + "/tiny/first.txt"));
}

// The cache folder gets the mode a plain mkdir gives (mkdtemp's 0700 would hide a shared
// cache from other users).
TEST(DataArchive, TheCacheFolderHasTheUsualPermissions) {
  TempDir dir;
  const std::string archive = make_tiny_archive(dir.path());
  const std::string cache_dir = dir.path() + "/cache";
  const std::string path = extract_archive_once(archive, cache_dir);
  fs::create_directory(dir.path() + "/plain");
  EXPECT_EQ(fs::status(path).permissions(), fs::status(dir.path() + "/plain").permissions());
}

// Every documented suffix names the cache folder after the archive without it.
TEST(DataArchive, EverySupportedSuffixIsExtracted) {
  TempDir dir;
  for (const char* suffix : {".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz"}) {
    const std::string archive = make_archive(dir.path() + "/in/tiny" + std::string(suffix), "hello.txt", suffix);
    const std::string cache_dir = dir.path() + "/cache" + suffix;
    const std::string path = extract_archive_once(archive, cache_dir);
    EXPECT_EQ(path, cache_dir + "/tiny") << suffix;
    EXPECT_EQ(read_text(path + "/tiny/hello.txt"), suffix);
    fs::remove(archive);
  }
}

}  // namespace
}  // namespace data
