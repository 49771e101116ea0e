#include "engine/storage.h"

namespace engine {

Storage::Storage(size_t nbytes, Device device)
    : data_(device_alloc(device, nbytes)), nbytes_(nbytes), device_(device) {}

Storage::Storage(void* borrowed, size_t nbytes, Device device, std::shared_ptr<void> owner)
    : data_(borrowed), nbytes_(nbytes), device_(device), owner_(std::move(owner)) {}

Storage::~Storage() {
  if (!owner_) device_free(device_, data_);
}

}  // namespace engine
