#include "engine/device.h"

#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/caching_allocator.h"
#include "engine/error.h"

namespace engine {

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : fmt::format("cuda:{}", index);
}

namespace {

// The N of "cuda:N"; anything but digits is an error naming the text.
int parse_cuda_index(const std::string& text) {
  const std::string digits = text.substr(5);
  int index = -1;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
  check(!digits.empty() && ec == std::errc() && end == digits.data() + digits.size() && index >= 0,
        "device '{}': '{}' is not a GPU index (expected cuda:N with N = 0, 1, ...)", text, digits);
  return index;
}

}  // namespace

Device Device::parse(const std::string& text) {
  if (text == "cpu") return cpu();
  if (text == "auto") return cuda_device_count() > 0 ? cuda() : cpu();
  if (text == "cuda" || text.rfind("cuda:", 0) == 0) {
    const int index = text == "cuda" ? 0 : parse_cuda_index(text);
    check(built_with_cuda(), "device '{}' requested, but this binary was built without CUDA "
          "(rebuild with nvcc on the PATH, or use device cpu: --device cpu or [run] device = cpu)", text);
    int count = cuda_device_count();
    check(count > 0, "device '{}' requested, but no CUDA GPU is visible on this machine "
          "(use device cpu or auto: --device cpu or [run] device = cpu)", text);
    check(index < count, "device '{}' requested, but only {} GPU(s) are visible", text, count);
    return cuda(index);
  }
  fail("unknown device '{}' (expected cpu, cuda, cuda:N or auto)", text);
}

// The CPU side of the raw memory functions; CUDA builds route the CUDA cases to
// engine/cuda/runtime.cu through these hooks.
void* cuda_alloc(int index, size_t nbytes);
void cuda_free(int index, void* ptr);
void cuda_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);

namespace {

// 64-byte alignment suits AVX-512 loads and keeps rows cache-line aligned
// (rounded sizes are multiples of 512, as aligned_alloc requires).
void* host_alloc(size_t nbytes) { return std::aligned_alloc(64, nbytes); }
void host_free(void* ptr) { std::free(ptr); }

CachingAllocator& host_allocator() {
  // Never destroyed: tensors held by static objects may be freed after it would be.
  static auto* allocator = new CachingAllocator(host_alloc, host_free, size_t{4} << 30);
  return *allocator;
}

}  // namespace

CachingAllocator::Stats cuda_allocator_stats(int index);

CachingAllocator::Stats device_allocator_stats(Device device) {
  return device.is_cuda() ? cuda_allocator_stats(device.index) : host_allocator().stats();
}

void* device_alloc(Device device, size_t nbytes) {
  if (device.is_cuda()) return cuda_alloc(device.index, nbytes);
  if (nbytes == 0) return nullptr;
  void* ptr = host_allocator().allocate(nbytes);
  check(ptr != nullptr, "out of host memory allocating {} bytes", nbytes);
  return ptr;
}

void device_free(Device device, void* ptr) {
  if (device.is_cuda()) return cuda_free(device.index, ptr);
  host_allocator().release(ptr);
}

void cuda_synchronize(int index);

void device_synchronize(Device device) {
  if (device.is_cuda()) cuda_synchronize(device.index);
}

double cuda_time_ms(int index, const std::function<void()>& run);

double device_time_ms(Device device, const std::function<void()>& run) {
  if (device.is_cuda()) return cuda_time_ms(device.index, run);
  const auto start = std::chrono::steady_clock::now();
  run();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

void cuda_run_branches(int index, const std::function<void()>& first, const std::function<void()>& second);

void run_branches(Device device, const std::function<void()>& first, const std::function<void()>& second) {
  if (device.is_cuda()) return cuda_run_branches(device.index, first, second);
  first();
  second();
}

std::unique_ptr<PendingDownload::State> cuda_download(const void* src, int index, size_t nbytes);

namespace {

// The CPU's download: the bytes, copied at once.
struct HostDownload final : PendingDownload::State {
  HostDownload(const void* src, size_t nbytes)
      : bytes(static_cast<const char*>(src), static_cast<const char*>(src) + nbytes) {}
  const void* wait() override { return bytes.data(); }
  std::vector<char> bytes;
};

}  // namespace

PendingDownload::PendingDownload(const void* src, Device src_device, size_t nbytes)
    : state_(src_device.is_cuda() ? cuda_download(src, src_device.index, nbytes)
                                  : std::make_unique<HostDownload>(src, nbytes)) {}

const void* PendingDownload::wait() { return state_->wait(); }

void device_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  if (nbytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return;
  }
  cuda_copy(dst, dst_device, src, src_device, nbytes);
}

}  // namespace engine
