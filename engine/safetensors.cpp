#include "engine/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <unordered_map>

#include "engine/os_error.h"

namespace engine {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// ---------------------------------------------------------------- reading

// A whole file mapped read-only; unmapped when the last tensor view goes away.
struct Mapping {
  const uint8_t* bytes = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (bytes) ::munmap(const_cast<uint8_t*>(bytes), size);
  }
};

std::shared_ptr<Mapping> map_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_os_error(errno, "cannot open safetensors file", path);
  struct stat info;
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    ::close(fd);
    fail("safetensors file {}: not a regular file", path);
  }
  size_t size = static_cast<size_t>(info.st_size);
  if (size < 8) {
    ::close(fd);
    fail("safetensors file {}: {} bytes, shorter than the 8-byte header length", path, size);
  }
  void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int mmap_error = addr == MAP_FAILED ? errno : 0;
  ::close(fd);  // the mapping stays valid without the descriptor
  check_os_error(mmap_error, "cannot memory-map safetensors file", path);
  auto mapping = std::make_shared<Mapping>();
  mapping->bytes = static_cast<const uint8_t*>(addr);
  mapping->size = size;
  return mapping;
}

uint64_t read_u64_le(const uint8_t* bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

struct Entry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0;  // relative to the start of the data section
  uint64_t end = 0;
};

DType parse_dtype(const std::string& path, const std::string& name, const json& value) {
  check(value.is_string(), "safetensors file {}: tensor '{}': dtype must be a string", path, name);
  DType dtype;
  check(parse_safetensors_dtype(value.get<std::string>(), &dtype),
        "safetensors file {}: tensor '{}': unknown dtype '{}'", path, name, value.get<std::string>());
  return dtype;
}

Shape parse_shape(const std::string& path, const std::string& name, const json& value) {
  check(value.is_array(), "safetensors file {}: tensor '{}': shape must be an array", path, name);
  Shape shape;
  for (const json& dim : value) {
    check(dim.is_number_integer(), "safetensors file {}: tensor '{}': shape {} holds a non-integer", path,
          name, value.dump());
    // nlohmann stores non-negative integers as unsigned and negative ones as signed.
    check(dim.is_number_unsigned() && dim.get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max()),
          "safetensors file {}: tensor '{}': shape {} has a negative or too large dimension", path, name,
          value.dump());
    shape.push_back(dim.get<int64_t>());
  }
  return shape;
}

// Byte size of a tensor, or an error if numel * element size overflows an
// int64_t. A dimension of 0 is counted as 1 there: it makes the tensor empty,
// but the strides of the other dimensions still have to fit.
uint64_t checked_nbytes(const std::string& path, const std::string& name, const Shape& shape, DType dtype) {
  int64_t bytes = static_cast<int64_t>(dtype_size(dtype));
  bool empty = false;
  for (int64_t dim : shape) {
    check(!__builtin_mul_overflow(bytes, std::max<int64_t>(dim, 1), &bytes),
          "safetensors file {}: tensor '{}': shape {} is too large", path, name, ShapeText{shape});
    empty = empty || dim == 0;
  }
  return empty ? 0 : static_cast<uint64_t>(bytes);
}

Entry parse_entry(const std::string& path, const std::string& name, const json& value, uint64_t data_size) {
  check(value.is_object(), "safetensors file {}: tensor '{}': entry must be an object", path, name);
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    check(value.contains(key), "safetensors file {}: tensor '{}': missing '{}'", path, name, key);
  }
  Entry entry;
  entry.name = name;
  entry.dtype = parse_dtype(path, name, value.at("dtype"));
  entry.shape = parse_shape(path, name, value.at("shape"));

  const json& offsets = value.at("data_offsets");
  check(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
            offsets[1].is_number_unsigned(),
        "safetensors file {}: tensor '{}': data_offsets must be two non-negative integers, got {}", path,
        name, offsets.dump());
  entry.begin = offsets[0].get<uint64_t>();
  entry.end = offsets[1].get<uint64_t>();
  check(entry.begin <= entry.end, "safetensors file {}: tensor '{}': data_offsets [{}, {}] begin after end",
        path, name, entry.begin, entry.end);
  check(entry.end <= data_size,
        "safetensors file {}: tensor '{}': data_offsets [{}, {}] beyond the {}-byte data section", path, name,
        entry.begin, entry.end, data_size);

  uint64_t expected = checked_nbytes(path, name, entry.shape, entry.dtype);
  check(entry.end - entry.begin == expected,
        "safetensors file {}: tensor '{}': data_offsets span {} bytes but {}{} needs {}", path, name,
        entry.end - entry.begin, safetensors_dtype_name(entry.dtype), ShapeText{entry.shape}, expected);
  return entry;
}

Metadata parse_metadata(const std::string& path, const json& value) {
  check(value.is_object(), "safetensors file {}: __metadata__ must be an object", path);
  Metadata metadata;
  for (const auto& [key, item] : value.items()) {
    check(item.is_string(), "safetensors file {}: __metadata__ '{}' must be a string", path, key);
    metadata[key] = item.get<std::string>();
  }
  return metadata;
}

// Sorted by offset, each tensor must end before the next begins.
void check_no_overlap(const std::string& path, const std::vector<Entry>& sorted) {
  for (size_t i = 1; i < sorted.size(); ++i) {
    const Entry& prev = sorted[i - 1];
    const Entry& cur = sorted[i];
    check(cur.begin >= prev.end, "safetensors file {}: tensors '{}' [{}, {}] and '{}' [{}, {}] overlap", path,
          prev.name, prev.begin, prev.end, cur.name, cur.begin, cur.end);
  }
}

}  // namespace

struct SafetensorsFile::State {
  std::string path;
  std::shared_ptr<Mapping> mapping;
  const uint8_t* data = nullptr;                  // start of the data section
  std::vector<Entry> entries;                     // in offset order
  std::unordered_map<std::string, size_t> index;  // name -> position in entries
  Metadata metadata;
};

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  auto state = std::make_shared<State>();
  state->path = path;
  state->mapping = map_file(path);
  const Mapping& map = *state->mapping;

  // Compared against the remaining size, so absurd lengths (2^63) cannot overflow.
  uint64_t header_size = read_u64_le(map.bytes);
  check(header_size <= map.size - 8, "safetensors file {}: header length {} exceeds the file size {}", path,
        header_size, map.size);
  const uint8_t* header = map.bytes + 8;
  json root = json::parse(header, header + header_size, nullptr, /*allow_exceptions=*/false);
  check(!root.is_discarded(), "safetensors file {}: header is not valid JSON", path);
  check(root.is_object(), "safetensors file {}: header is not a JSON object", path);

  state->data = header + header_size;
  uint64_t data_size = map.size - 8 - header_size;
  for (const auto& [name, value] : root.items()) {
    if (name == "__metadata__") {
      state->metadata = parse_metadata(path, value);
    } else {
      state->entries.push_back(parse_entry(path, name, value, data_size));
    }
  }
  std::stable_sort(state->entries.begin(), state->entries.end(),
                   [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  check_no_overlap(path, state->entries);
  for (size_t i = 0; i < state->entries.size(); ++i) state->index[state->entries[i].name] = i;

  SafetensorsFile file;
  file.state_ = std::move(state);
  return file;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> names;
  for (const Entry& entry : state_->entries) names.push_back(entry.name);
  return names;
}

bool SafetensorsFile::contains(const std::string& name) const { return state_->index.count(name) > 0; }

const Metadata& SafetensorsFile::metadata() const { return state_->metadata; }

Tensor SafetensorsFile::get(const std::string& name) const {
  auto found = state_->index.find(name);
  check(found != state_->index.end(), "safetensors file {}: no tensor '{}'", state_->path, name);
  const Entry& entry = state_->entries[found->second];
  const uint8_t* bytes = state_->data + entry.begin;
  size_t nbytes = entry.end - entry.begin;

  // The format does not promise aligned offsets, and kernels (vectorised by
  // the compiler) may assume element alignment: misaligned tensors get a copy.
  if (reinterpret_cast<uintptr_t>(bytes) % dtype_size(entry.dtype) != 0) {
    auto storage = std::make_shared<Storage>(nbytes, Device::cpu());
    std::memcpy(storage->data(), bytes, nbytes);
    return Tensor::from_storage(std::move(storage), entry.shape, entry.dtype);
  }
  auto storage =
      std::make_shared<Storage>(const_cast<uint8_t*>(bytes), nbytes, Device::cpu(), state_->mapping);
  return Tensor::from_storage(std::move(storage), entry.shape, entry.dtype);
}

// ---------------------------------------------------------------- checkpoints

bool Checkpoint::contains(const std::string& name) const {
  return std::any_of(tensors.begin(), tensors.end(), [&](const auto& item) { return item.first == name; });
}

Tensor Checkpoint::get(const std::string& name) const {
  for (const auto& [key, tensor] : tensors) {
    if (key == name) return tensor;
  }
  fail("checkpoint {}: no tensor '{}'", source, name);
}

namespace {

// The non-throwing forms: an unreadable path counts as absent and the open
// that follows reports it.
bool path_exists(const fs::path& path) {
  std::error_code ignored;
  return fs::exists(path, ignored);
}

std::string folder_of(const std::string& file) {
  fs::path parent = fs::path(file).parent_path();
  return parent.empty() ? "." : parent.string();
}

json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) fail_os_error(errno, "cannot open checkpoint index", path);
  check(!fs::is_directory(path), "checkpoint index {} is a folder, not a JSON file", path);
  std::stringstream text;
  text << in.rdbuf();
  json root = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  check(!root.is_discarded(), "checkpoint index {}: not valid JSON", path);
  return root;
}

}  // namespace

std::map<std::string, std::string> read_weight_map(const std::string& index_path) {
  const json root = read_json_file(index_path);
  check(root.is_object() && root.contains("weight_map") && root["weight_map"].is_object(),
        "checkpoint index {}: no 'weight_map' object", index_path);
  std::map<std::string, std::string> shard_of;
  for (const auto& [name, shard] : root["weight_map"].items()) {
    check(shard.is_string(), "checkpoint index {}: shard of tensor '{}' must be a string", index_path, name);
    shard_of.emplace(name, shard.get<std::string>());
  }
  return shard_of;
}

namespace {

Checkpoint load_single(const std::string& path) {
  SafetensorsFile file = SafetensorsFile::open(path);
  Checkpoint checkpoint{path, folder_of(path), {}, file.metadata()};
  for (const std::string& name : file.names()) checkpoint.tensors.emplace_back(name, file.get(name));
  return checkpoint;
}

// Hugging Face sharded layout (see read_weight_map). Tensors come in
// weight_map (name) order.
Checkpoint load_sharded(const std::string& index_path) {
  Checkpoint checkpoint{index_path, folder_of(index_path), {}, {}};
  std::map<std::string, SafetensorsFile> shards;  // each opened once
  for (const auto& [name, shard_file] : read_weight_map(index_path)) {
    std::string shard_path = (fs::path(checkpoint.directory) / shard_file).string();
    auto shard = shards.find(shard_path);
    if (shard == shards.end()) {
      check(path_exists(shard_path), "checkpoint index {}: shard file {} (for tensor '{}') does not exist",
            index_path, shard_path, name);
      shard = shards.emplace(shard_path, SafetensorsFile::open(shard_path)).first;
      if (shards.size() == 1) checkpoint.metadata = shard->second.metadata();
    }
    check(shard->second.contains(name), "checkpoint index {}: tensor '{}' is not in its shard {}", index_path,
          name, shard_path);
    checkpoint.tensors.emplace_back(name, shard->second.get(name));
  }
  return checkpoint;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

Checkpoint load_checkpoint(const std::string& path) {
  std::error_code ignored;
  if (fs::is_directory(path, ignored)) {
    fs::path single = fs::path(path) / "model.safetensors";
    fs::path index = fs::path(path) / "model.safetensors.index.json";
    Checkpoint checkpoint;
    check(!path_exists(single) || !path_exists(index),
          "checkpoint directory {} holds two checkpoints, {} and {}: remove the one that is not wanted", path,
          single.filename().string(), index.filename().string());
    if (path_exists(single)) {
      checkpoint = load_single(single.string());
    } else if (path_exists(index)) {
      checkpoint = load_sharded(index.string());
    } else {
      fail("checkpoint directory {}: found neither {} nor {}", path, single.filename().string(),
           index.filename().string());
    }
    checkpoint.directory = path;
    return checkpoint;
  }
  return ends_with(path, ".index.json") ? load_sharded(path) : load_single(path);
}

// ---------------------------------------------------------------- writing

namespace {

void write_bytes(std::FILE* file, const void* data, size_t nbytes, const std::string& path) {
  if (nbytes == 0) return;
  if (std::fwrite(data, 1, nbytes, file) != nbytes) fail_os_error(errno, "cannot write", path);
}

// What a file of this mode is, for an error message.
const char* special_file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a folder";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  if (S_ISSOCK(mode)) return "a socket";
  return "a special file";
}

bool is_symlink(const std::string& path) {
  struct stat info;
  return ::lstat(path.c_str(), &info) == 0 && S_ISLNK(info.st_mode);
}

// The file that writing `path` replaces: `path` itself, or the file that a
// symbolic link there leads to (the rename would otherwise replace the link,
// leaving its target stale). Anything but a regular file (a folder, FIFO,
// device, socket) is refused: the rename would replace it, not write into it.
std::string write_target(const std::string& path) {
  struct stat info;
  if (::stat(path.c_str(), &info) != 0) {
    // A missing file is created; other errors (no permission) show when it is opened.
    if (errno == ENOENT && is_symlink(path)) {
      const fs::path target = fs::absolute(fs::path(path).parent_path() / fs::read_symlink(path));
      fail("cannot write {}: it is a symbolic link to the missing {}", path, target.lexically_normal().string());
    }
    return path;
  }
  check(S_ISREG(info.st_mode), "cannot write {}: it is {}, not a regular file", path,
        special_file_kind(info.st_mode));
  return is_symlink(path) ? fs::canonical(path).string() : path;
}

// Writes through `body` into <file>.tmp.<pid> in the folder of the file that
// `path` names (see write_target), syncs it to disk and renames it over that
// file, so readers see the old file or the complete new one, never a partial
// one. On failure the temporary file is removed.
void write_atomically(const std::string& path, const std::function<void(std::FILE*)>& body) {
  const std::string target = write_target(path);
  std::string temp = fmt::format("{}.tmp.{}", target, ::getpid());
  std::FILE* file = std::fopen(temp.c_str(), "wb");
  if (file == nullptr) fail_os_error(errno, "cannot write", path);
  try {
    body(file);
    if (std::fflush(file) != 0 || ::fsync(::fileno(file)) != 0) fail_os_error(errno, "cannot write", path);
  } catch (...) {
    std::fclose(file);
    std::remove(temp.c_str());
    throw;
  }
  bool closed = std::fclose(file) == 0;
  if (!closed || std::rename(temp.c_str(), target.c_str()) != 0) {
    const int error = errno;
    std::remove(temp.c_str());
    fail_os_error(error, "cannot write", path);
  }
}

// The header JSON, padded with spaces so the data section starts 8-byte
// aligned (as the reference implementation does).
std::string make_header(const std::string& path, const NamedTensors& tensors, const Metadata& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    check(tensor.defined(), "save_safetensors {}: tensor '{}' is undefined", path, name);
    check(name != "__metadata__", "save_safetensors {}: '__metadata__' is reserved, not a tensor name", path);
    check(!header.contains(name), "save_safetensors {}: duplicate tensor name '{}'", path, name);
    uint64_t end = offset + tensor.nbytes();
    header[name] = {{"dtype", safetensors_dtype_name(tensor.dtype())},
                    {"shape", tensor.shape()},
                    {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

}  // namespace

void save_safetensors(const std::string& path, const NamedTensors& tensors, const Metadata& metadata) {
  std::string header = make_header(path, tensors, metadata);
  write_atomically(path, [&](std::FILE* file) {
    uint8_t length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(uint64_t(header.size()) >> (8 * i));
    write_bytes(file, length, 8, path);
    write_bytes(file, header.data(), header.size(), path);
    // One host copy at a time keeps the peak memory at the largest tensor.
    for (const auto& [name, tensor] : tensors) {
      Tensor host = tensor.detach().to(Device::cpu()).contiguous();
      write_bytes(file, host.raw_data(), host.nbytes(), path);
    }
  });
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  write_atomically(path, [&](std::FILE* file) { write_bytes(file, contents.data(), contents.size(), path); });
}

}  // namespace engine
