// Small filesystem helpers shared by the readers, the archive cache and the tests.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace data {

// The whole file as bytes; a missing or unreadable file -> engine::Error naming it.
std::vector<uint8_t> read_file(const std::string& path);

// Creates or truncates `path` and writes `size` bytes; errors name the file.
void write_file(const std::string& path, const void* bytes, size_t size);
void write_file(const std::string& path, const std::string& text);

// A new, uniquely named directory parent/<prefix>XXXXXX (mkdtemp). It is removed with
// its contents on destruction unless release() was called. An empty parent means the
// system temp directory.
class TempDir {
 public:
  explicit TempDir(const std::string& parent = "", const std::string& prefix = "engine-data-");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // Gives the directory the mode that a plain mkdir would (0777 less the
  // umask, e.g. 0755), for one that becomes a lasting output: mkdtemp makes
  // it private (0700).
  void use_usual_permissions() const;
  // Keeps the directory on disk; path() is empty afterwards.
  std::string release();

 private:
  std::string path_;
};

}  // namespace data
