// Built only without CUDA (make CUDA=0): every CUDA entry point says so clearly.
#include "engine/bench_timing.h"
#include "engine/caching_allocator.h"
#include "engine/device.h"
#include "engine/error.h"

namespace engine {

bool built_with_cuda() { return false; }
int cuda_device_count() { return 0; }

void* cuda_alloc(int, size_t) { fail("CUDA memory requested, but this binary was built without CUDA"); }
void cuda_free(int, void*) {}
CachingAllocator::Stats cuda_allocator_stats(int) {
  fail("CUDA memory statistics requested, but this binary was built without CUDA");
}
void cuda_synchronize(int) {}
double cuda_time_ms(int, const std::function<void()>&) {
  fail("CUDA timing requested, but this binary was built without CUDA");
}
void cuda_copy(void*, Device, const void*, Device, size_t) {
  fail("CUDA copy requested, but this binary was built without CUDA");
}
std::unique_ptr<PendingDownload::State> cuda_download(const void*, int, size_t) {
  fail("a CUDA download was requested, but this binary was built without CUDA");
}
void cuda_run_branches(int, const std::function<void()>&, const std::function<void()>&) {
  fail("CUDA work was requested, but this binary was built without CUDA");
}

struct DeviceGraph::State {};
DeviceGraph::DeviceGraph(Device, const std::function<void()>&) {
  fail("a device graph was requested, but this binary was built without CUDA");
}
DeviceGraph::~DeviceGraph() = default;
void DeviceGraph::replay() {}

int64_t cuda_exp2_probe(int, int64_t) { fail("a GPU probe was requested, but this binary was built without CUDA"); }
int64_t cuda_fma_probe(int, int64_t) { fail("a GPU probe was requested, but this binary was built without CUDA"); }

}  // namespace engine
