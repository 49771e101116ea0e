#include "data/files.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <system_error>

#include "engine/error.h"
#include "engine/os_error.h"

namespace data {
namespace fs = std::filesystem;

namespace {
struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

FilePtr open_or_fail(const std::string& path, const char* mode) {
  FilePtr file(std::fopen(path.c_str(), mode));
  if (file == nullptr) engine::fail_os_error(errno, "cannot open", path);
  return file;
}
}  // namespace

std::vector<uint8_t> read_file(const std::string& path) {
  std::error_code ec;
  engine::check(!fs::is_directory(path, ec), "cannot read '{}': it is a directory", path);
  FilePtr file = open_or_fail(path, "rb");
  std::vector<uint8_t> bytes;
  uint8_t chunk[1 << 16];
  size_t got;
  while ((got = std::fread(chunk, 1, sizeof chunk, file.get())) > 0) {
    bytes.insert(bytes.end(), chunk, chunk + got);
  }
  if (std::ferror(file.get())) engine::fail_os_error(errno, "error reading", path);
  return bytes;
}

void write_file(const std::string& path, const void* bytes, size_t size) {
  FilePtr file = open_or_fail(path, "wb");
  int error = std::fwrite(bytes, 1, size, file.get()) == size ? 0 : errno;
  if (std::fclose(file.release()) != 0 && error == 0) error = errno;
  engine::check_os_error(error, "error writing", path);
}

void write_file(const std::string& path, const std::string& text) {
  write_file(path, text.data(), text.size());
}

TempDir::TempDir(const std::string& parent, const std::string& prefix) {
  fs::path base = parent.empty() ? fs::temp_directory_path() : fs::path(parent);
  std::string pattern = (base / (prefix + "XXXXXX")).string();
  const int error = mkdtemp(pattern.data()) != nullptr ? 0 : errno;
  engine::check_os_error(error, "cannot create a temporary directory in", base.string());
  path_ = pattern;
}

void TempDir::use_usual_permissions() const {
  // The umask can only be read by setting it, which races with other threads
  // that create files; a probe folder shows the mode mkdir gives instead.
  const std::string probe = path_ + "/.mode-probe";
  const int mkdir_error = ::mkdir(probe.c_str(), 0777) == 0 ? 0 : errno;
  engine::check_os_error(mkdir_error, "cannot set the permissions of", path_);
  struct stat info;
  int error = ::stat(probe.c_str(), &info) == 0 ? 0 : errno;
  ::rmdir(probe.c_str());  // (may set errno: the stat's is kept above)
  if (error == 0 && ::chmod(path_.c_str(), info.st_mode & 07777) != 0) error = errno;
  engine::check_os_error(error, "cannot set the permissions of", path_);
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ignored;  // a destructor must not throw; a leftover temp dir is harmless
  fs::remove_all(path_, ignored);
}

std::string TempDir::release() {
  std::string kept;
  kept.swap(path_);
  return kept;
}

}  // namespace data
