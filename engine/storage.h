// A reference-counted block of bytes on one device. Tensors are views into a
// Storage (offset + shape + strides), so reshape/permute/slice never copy.
// A Storage can also borrow memory it does not own (a memory-mapped
// safetensors file): `owner` keeps that mapping alive as long as any view is.
#pragma once
#include <cstddef>
#include <memory>

#include "engine/device.h"

namespace engine {

class Storage {
 public:
  Storage(size_t nbytes, Device device);  // allocates
  Storage(void* borrowed, size_t nbytes, Device device, std::shared_ptr<void> owner);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_;
  size_t nbytes_;
  Device device_;
  std::shared_ptr<void> owner_;  // set for borrowed memory; null when we allocated
};

}  // namespace engine
