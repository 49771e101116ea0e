#include "data/archive.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <system_error>

#include "data/files.h"
#include "engine/error.h"
#include "engine/os_error.h"

extern char** environ;

namespace data {
namespace fs = std::filesystem;
namespace {

constexpr const char* kDoneMarker = ".extracted";
constexpr const char* kWhereToGetData =
    "CIFAR-10 comes from https://www.cs.toronto.edu/~kriz/cifar.html: the tools read its binary version, "
    "cifar-10-binary.tar.gz, as downloaded or unpacked (the cifar-10-batches-bin/ folder) with subdir 'train' or "
    "'test', or an ImageFolder of its images (<split>/<class>/*.png or *.jpg, a folder or a tar archive); "
    "ImageNet comes from https://image-net.org, read as an ImageFolder (val/<synset>/*.JPEG, a folder or a tar "
    "archive) with the 1000 sorted synsets as the class list (--synsets). The tools take a dataset's path from "
    "--data or [data] path; the tests look in $ENGINE_DATA_DIR, else $ENGINE_SHARED_DIR/data, else ../shared/data";

std::string archive_stem(const std::string& archive) {
  const std::string file = fs::path(archive).filename().string();
  for (const char* suffix : {".tar.gz", ".tar.xz", ".tgz", ".txz", ".tar"}) {
    const size_t n = std::strlen(suffix);
    if (file.size() > n && file.compare(file.size() - n, n, suffix) == 0) return file.substr(0, file.size() - n);
  }
  engine::fail("archive '{}': unsupported type (expected .tar, .tar.gz, .tgz, .tar.xz or .txz)", archive);
}

// Runs `tar args...` (GNU tar detects the compression itself) and fails with its stderr
// if it does not exit 0. posix_spawn rather than system(): no shell quoting of paths.
void run_tar(const std::string& archive, std::vector<std::string> args) {
  args.insert(args.begin(), "tar");
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) engine::fail_os_error(errno, "cannot make a pipe to extract", archive);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);
  posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
  pid_t pid = 0;
  const int spawn_error = posix_spawnp(&pid, "tar", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(pipe_fds[1]);

  std::string stderr_text;
  std::array<char, 4096> buffer;
  ssize_t got;
  while ((got = read(pipe_fds[0], buffer.data(), buffer.size())) > 0 || (got < 0 && errno == EINTR)) {
    if (got > 0) stderr_text.append(buffer.data(), static_cast<size_t>(got));
  }
  close(pipe_fds[0]);
  engine::check_os_error(spawn_error, "cannot run tar to extract", archive);

  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  engine::check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "extracting '{}' with tar failed: {}", archive,
                stderr_text.empty() ? "(no message)" : stderr_text);
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::string(value) : fallback;
}

// What the marker of a finished extraction records: which archive, and its size and
// modification time, so that another archive of the same file name, or this one rewritten
// or truncated, does not reuse the cache.
std::string archive_identity(const std::string& archive) {
  return fmt::format("archive: {}\nsize: {}\nmodified: {}\n", fs::canonical(archive).string(),
                     fs::file_size(archive), fs::last_write_time(archive).time_since_epoch().count());
}

// The hidden name of a sibling of cache folder `target` for `use`
// (".partial-", ".stale-", ".lock"): "cache/tiny" -> ".tiny.lock". The
// temporary ones (".partial-", ".stale-") are name prefixes, as TempDir and
// remove_leftovers take them.
std::string sibling_name(const fs::path& target, const char* use) { return "." + target.filename().string() + use; }

// The marker's text in `dir`, or "" where there is none.
std::string marker_of(const fs::path& dir) {
  std::ifstream in(dir / kDoneMarker, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Moves the finished `partial` folder to `target`. rename does not replace a non-empty
// folder, so when `target` exists: a copy of this archive there means a concurrent caller
// finished first (use it; `partial` is deleted); a stale copy of this code's (marker of
// another archive, or of the old marker format) is moved aside, deleted, and the move
// retried; anything else is left alone and reported.
void move_into_place(TempDir& partial, const fs::path& target, const std::string& identity,
                     const std::string& archive) {
  for (;;) {
    std::error_code ec;
    fs::rename(partial.path(), target, ec);
    if (!ec) {
      partial.release();
      return;
    }
    if (marker_of(target) == identity) return;
    engine::check(fs::exists(target / kDoneMarker),
                  "cannot move the extracted '{}' to '{}': {} (delete '{}' if it is a leftover)", archive,
                  target.string(), ec.message(), target.string());
    // rename replaces an empty folder: the stale copy lands in `stale`, deleted with it.
    TempDir stale(target.parent_path().string(), sibling_name(target, ".stale-"));
    fs::rename(target, stale.path(), ec);
    engine::check(!ec || !fs::exists(target), "cannot replace the stale cache '{}' of '{}': {}", target.string(),
                  archive, ec.message());
  }
}

// An exclusive flock on `path` (created if missing) while it lives: the
// extractions of one archive into one cache take turns, across threads and
// processes. Its descriptor is inheritable on purpose: the tar that an
// extraction spawns holds the lock too, so after a process is killed
// mid-extraction the next one waits until the orphaned tar has stopped
// writing, then deletes what it left (remove_leftovers).
class ExtractionLock {
 public:
  explicit ExtractionLock(const fs::path& path) : fd_(open(path.c_str(), O_RDWR | O_CREAT, 0644)) {
    int error = fd_ >= 0 ? 0 : errno;
    while (error == 0 && flock(fd_, LOCK_EX) != 0) {
      if (errno != EINTR) error = errno;
    }
    if (error != 0 && fd_ >= 0) close(fd_);
    engine::check_os_error(error, "cannot lock the cache with", path.string());
  }
  ~ExtractionLock() { close(fd_); }
  ExtractionLock(const ExtractionLock&) = delete;
  ExtractionLock& operator=(const ExtractionLock&) = delete;

 private:
  int fd_;
};

// Deletes the ".<stem>.partial-*" and ".<stem>.stale-*" folders of `target`
// that an interrupted extraction left. Called under the lock, under which every
// extraction makes and removes its own, so none belongs to a live one.
void remove_leftovers(const fs::path& target) {
  for (const fs::directory_entry& entry : fs::directory_iterator(target.parent_path())) {
    const std::string name = entry.path().filename().string();
    for (const char* use : {".partial-", ".stale-"}) {
      if (name.rfind(sibling_name(target, use), 0) == 0) fs::remove_all(entry.path());
    }
  }
}

}  // namespace

const char* where_to_get_data() { return kWhereToGetData; }

std::string extract_archive_once(const std::string& archive, const std::string& cache_dir) {
  const fs::path target = fs::path(cache_dir) / archive_stem(archive);
  engine::check(fs::is_regular_file(archive), "archive '{}' does not exist", archive);
  const std::string identity = archive_identity(archive);
  if (marker_of(target) == identity) return target.string();

  std::error_code ec;
  fs::create_directories(cache_dir, ec);
  engine::check(!ec, "cannot create cache directory '{}': {}", cache_dir, ec.message());
  const ExtractionLock lock(fs::path(cache_dir) / sibling_name(target, ".lock"));
  if (marker_of(target) == identity) return target.string();  // extracted while this one waited
  remove_leftovers(target);
  TempDir partial(cache_dir, sibling_name(target, ".partial-"));
  run_tar(archive, {"-xf", fs::absolute(archive).string(), "-C", partial.path(), "--no-same-owner"});
  write_file((fs::path(partial.path()) / kDoneMarker).string(), identity);
  partial.use_usual_permissions();  // the finished cache is as readable as a normal folder
  move_into_place(partial, target, identity, archive);
  return target.string();
}

void extract_members(const std::string& archive, const std::string& dest_dir,
                     const std::vector<std::string>& members) {
  engine::check(fs::is_regular_file(archive), "archive '{}' does not exist", archive);
  engine::check(fs::is_directory(dest_dir), "extracting '{}': '{}' is not a directory", archive, dest_dir);
  std::vector<std::string> args = {"-xf", fs::absolute(archive).string(), "-C", dest_dir, "--no-same-owner",
                                   "--occurrence"};
  args.insert(args.end(), members.begin(), members.end());
  run_tar(archive, std::move(args));
}

std::string default_data_dir() {
  if (const char* dir = std::getenv("ENGINE_DATA_DIR"); dir != nullptr && *dir != '\0') {
    engine::check(fs::is_directory(dir), "ENGINE_DATA_DIR='{}' is not a directory; {}", dir, kWhereToGetData);
    return dir;
  }
  const fs::path dir = fs::path(env_or("ENGINE_SHARED_DIR", "../shared")) / "data";
  engine::check(fs::is_directory(dir), "no data folder: '{}' does not exist and ENGINE_DATA_DIR is not set; {}",
                dir.string(), kWhereToGetData);
  return dir.string();
}

std::string data_file(const std::string& name) {
  const fs::path path = fs::path(default_data_dir()) / name;
  engine::check(fs::exists(path), "data file '{}' not found; {}", path.string(), kWhereToGetData);
  return path.string();
}

std::string default_cache_dir() { return env_or("ENGINE_CACHE_DIR", "./.cache/data"); }

}  // namespace data
