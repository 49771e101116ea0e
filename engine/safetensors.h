// safetensors: read (memory-mapped, zero-copy), write (atomic), and sharded
// checkpoints (model.safetensors.index.json).
//
// File layout: 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {"key": "value"}}, then the data bytes (offsets relative to
// the end of the header).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace engine {

using Metadata = std::map<std::string, std::string>;
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// One memory-mapped safetensors file. Tensors returned by get() are CPU views
// into the mapping (read-only by convention) that keep it alive.
class SafetensorsFile {
 public:
  // Validates the whole header up front; any problem is an engine::Error naming
  // the file and, where it applies, the tensor.
  static SafetensorsFile open(const std::string& path);

  std::vector<std::string> names() const;  // in file (offset) order
  bool contains(const std::string& name) const;
  Tensor get(const std::string& name) const;
  const Metadata& metadata() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

// A checkpoint: a single .safetensors file, a sharded index.json, or a
// directory holding one of them (model.safetensors or
// model.safetensors.index.json). Tensors keep their stored dtype.
struct Checkpoint {
  std::string source;          // what was opened
  std::string directory;       // folder holding it (for config.json)
  NamedTensors tensors;        // in a stable order
  Metadata metadata;           // of the first shard

  bool contains(const std::string& name) const;
  Tensor get(const std::string& name) const;  // error naming the key and source if missing
};
Checkpoint load_checkpoint(const std::string& path);

// The "weight_map" of a sharded checkpoint's index (model.safetensors.index.json,
// {"metadata": {...}, "weight_map": {"tensor name": "shard file"}}): each
// tensor's shard file, relative to the index's folder, in name order. A bad
// index is an engine::Error naming it.
std::map<std::string, std::string> read_weight_map(const std::string& index_path);

// Writes tensors (any device/dtype, made contiguous on the host) to `path`
// atomically: a temporary file in the same folder, fsync, rename.
void save_safetensors(const std::string& path, const NamedTensors& tensors, const Metadata& metadata = {});

// Writes bytes to `path` atomically (temp file + rename); used for JSON/CSV outputs too.
void write_file_atomic(const std::string& path, const std::string& contents);

}  // namespace engine
