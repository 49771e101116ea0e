// CUDA runtime glue: device discovery, memory (a caching allocator per GPU)
// and copies. Compiled whenever nvcc is present; a machine without a GPU (or
// driver) reports zero devices, so CUDA-enabled binaries still run on the CPU.
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#include "engine/caching_allocator.h"
#include "engine/cuda/cuda_utils.cuh"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/staging_ring.h"

namespace engine {

void cuda_check(cudaError_t status, const char* what) {
  check(status == cudaSuccess, "CUDA error in {}: {}", what, cudaGetErrorString(status));
}

namespace {
// The legacy default stream of the current device, but while a DeviceGraph
// captures: its capture stream, and in the second of run_branches: the side
// stream.
thread_local cudaStream_t stream_of_thread = nullptr;
}  // namespace

cudaStream_t current_stream() { return stream_of_thread; }

bool built_with_cuda() { return true; }

int cuda_device_count() {
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();  // clear the sticky "no driver" error
      return 0;
    }
    return n;
  }();
  return count;
}

namespace {

// The raw allocator works on the current device: cuda_alloc / cuda_free select it.
void* raw_cuda_alloc(size_t nbytes) {
  void* ptr = nullptr;
  if (cudaMalloc(&ptr, nbytes) != cudaSuccess) {
    cudaGetLastError();  // out of memory is not sticky: clear it so that later launch checks don't report it
    return nullptr;
  }
  return ptr;
}

// Reached from tensor destructors, which must not throw: an error here would
// be a sticky one from an earlier kernel, reported by the next check anyway.
void raw_cuda_free(void* ptr) { cudaFree(ptr); }

CachingAllocator& device_allocator(int index) {
  // One per GPU, never destroyed (like the host allocator): tensors held by
  // static objects may be freed after it would be. The cache may grow to the
  // whole memory of the GPU; an allocation that fails flushes it and retries.
  static const std::vector<CachingAllocator*> allocators = [] {
    std::vector<CachingAllocator*> list;
    for (int i = 0; i < cuda_device_count(); ++i) {
      cudaDeviceProp properties;
      cuda_check(cudaGetDeviceProperties(&properties, i), "cudaGetDeviceProperties");
      list.push_back(new CachingAllocator(raw_cuda_alloc, raw_cuda_free, properties.totalGlobalMem));
    }
    return list;
  }();
  check(index >= 0 && index < static_cast<int>(allocators.size()), "cuda:{} does not exist ({} GPU(s) visible)",
        index, allocators.size());
  return *allocators[index];
}

}  // namespace

void* cuda_alloc(int index, size_t nbytes) {
  if (nbytes == 0) return nullptr;
  DeviceGuard guard(index);
  void* ptr = device_allocator(index).allocate(nbytes);
  check(ptr != nullptr, "out of memory on cuda:{} allocating {} bytes", index, nbytes);
  return ptr;
}

CachingAllocator::Stats cuda_allocator_stats(int index) { return device_allocator(index).stats(); }

void cuda_free(int index, void* ptr) {
  if (ptr == nullptr) return;
  // Stream order makes reuse safe: kernels still reading the block were queued
  // before any kernel that the next owner of the block queues.
  int previous = 0;
  cudaGetDevice(&previous);
  cudaSetDevice(index);  // (not DeviceGuard: destructors must not throw)
  device_allocator(index).release(ptr);
  cudaSetDevice(previous);
}

void cuda_synchronize(int index) {
  cuda_check(cudaSetDevice(index), "cudaSetDevice");
  cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

double cuda_time_ms(int index, const std::function<void()>& run) {
  cuda_check(cudaSetDevice(index), "cudaSetDevice");
  cudaEvent_t start, stop;
  cuda_check(cudaEventCreate(&start), "cudaEventCreate");
  cuda_check(cudaEventCreate(&stop), "cudaEventCreate");
  cuda_check(cudaEventRecord(start, current_stream()), "cudaEventRecord");
  run();
  cuda_check(cudaEventRecord(stop, current_stream()), "cudaEventRecord");
  cuda_check(cudaEventSynchronize(stop), "cudaEventSynchronize");
  float ms = 0;
  cuda_check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms;
}

namespace {

// Pinned (page-locked) host memory, portable to every GPU, for the copies
// below that do not wait; nullptr when there is none left.
void* raw_pinned_alloc(size_t nbytes) {
  void* ptr = nullptr;
  if (cudaHostAlloc(&ptr, nbytes, cudaHostAllocPortable) != cudaSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  return ptr;
}
void raw_pinned_free(void* ptr) { cudaFreeHost(ptr); }

// Events without timing, kept for reuse (the staging ring's copies and the
// downloads take one each): creating and destroying one per copy costs the
// host more than the small copy does. One pool per GPU: an event belongs to
// its device.
class EventPool {
 public:
  cudaEvent_t take() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!free_.empty()) {
        const cudaEvent_t event = free_.back();
        free_.pop_back();
        return event;
      }
    }
    cudaEvent_t event = nullptr;
    cuda_check(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate");
    return event;
  }
  // Back to the pool once nothing waits on it any more (a later record resets
  // it). No throw: DeviceDownload's release calls it.
  void give(cudaEvent_t event) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    try {
      free_.push_back(event);
    } catch (const std::bad_alloc&) {
      cudaEventDestroy(event);
    }
  }

 private:
  std::mutex mutex_;
  std::vector<cudaEvent_t> free_;
};

EventPool& event_pool(int index) {
  static std::vector<EventPool>& pools = *new std::vector<EventPool>(cuda_device_count());
  return pools.at(static_cast<size_t>(index));
}

// Small host-to-device copies (index lists, masks, scalars) without waiting
// for the GPU. The source is first copied into a ring of pinned host memory,
// from which the GPU copy runs asynchronously; the caller's buffer is free at
// once. A stretch of the ring is written again only after the event recorded
// behind its copy has completed (the bookkeeping: engine/staging_ring.h). One
// ring per GPU (an event belongs to its device); copies rarely wait on it.
class PinnedStaging {
 public:
  static constexpr size_t kRingBytes = size_t{16} << 20;
  static constexpr size_t kMaxCopyBytes = size_t{1} << 20;  // larger copies wait instead
  static constexpr size_t kAlign = 256;
  static_assert(kMaxCopyBytes <= kRingBytes, "a staged copy must fit the ring");

  // Queues the copy of src to dst on the current stream (dst on GPU `index`, the current device).
  void copy_to_device(int index, void* dst, const void* src, size_t nbytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (ring_ == nullptr) {
      ring_ = static_cast<char*>(raw_pinned_alloc(kRingBytes));
      check(ring_ != nullptr, "out of pinned host memory allocating the {}-byte staging ring", kRingBytes);
    }
    const size_t begin = stretches_.claim((nbytes + kAlign - 1) / kAlign * kAlign, [&](cudaEvent_t done) {
      cuda_check(cudaEventSynchronize(done), "cudaEventSynchronize");
      event_pool(index).give(done);
    });
    std::memcpy(ring_ + begin, src, nbytes);
    cuda_check(cudaMemcpyAsync(dst, ring_ + begin, nbytes, cudaMemcpyHostToDevice, current_stream()),
               "cudaMemcpyAsync");
    const cudaEvent_t done = event_pool(index).take();
    cuda_check(cudaEventRecord(done, current_stream()), "cudaEventRecord");
    stretches_.commit(done);
  }

 private:
  std::mutex mutex_;
  char* ring_ = nullptr;
  StagingRing<cudaEvent_t> stretches_{kRingBytes};
};

PinnedStaging& pinned_staging(int index) {
  static std::vector<PinnedStaging>& rings = *new std::vector<PinnedStaging>(cuda_device_count());
  return rings.at(static_cast<size_t>(index));
}

// Whether a DeviceGraph is capturing this thread's work.
bool stream_is_capturing() {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  cuda_check(cudaStreamIsCapturing(current_stream(), &status), "cudaStreamIsCapturing");
  return status != cudaStreamCaptureStatusNone;
}

}  // namespace

void cuda_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  if (nbytes == 0) return;
  if (dst_device.is_cuda() && src_device.is_cuda() && dst_device.index != src_device.index) {
    // Between two GPUs (explicit moves only): ordered after all work queued on either.
    cuda_check(cudaMemcpyPeer(dst, dst_device.index, src, src_device.index, nbytes), "cudaMemcpyPeer");
    return;
  }
  const cudaMemcpyKind kind = dst_device.is_cpu() ? cudaMemcpyDeviceToHost
                              : src_device.is_cpu() ? cudaMemcpyHostToDevice
                                                    : cudaMemcpyDeviceToDevice;
  const int device = dst_device.is_cuda() ? dst_device.index : src_device.index;
  DeviceGuard guard(device);
  // Refused in a capture: a download and a large upload wait for the stream,
  // which a capture forbids, and a small upload's graph node would read its
  // staging stretch again at every replay, long after the ring reused it.
  check(kind == cudaMemcpyDeviceToDevice || !stream_is_capturing(),
        "a copy of {} bytes between the host and cuda:{} inside a graph capture (a graph cannot wait for the host)",
        nbytes, device);
  if (kind == cudaMemcpyHostToDevice && nbytes <= PinnedStaging::kMaxCopyBytes) {
    pinned_staging(dst_device.index).copy_to_device(dst_device.index, dst, src, nbytes);
    return;
  }
  cuda_check(cudaMemcpyAsync(dst, src, nbytes, kind, current_stream()), "cudaMemcpyAsync");
  // A device-to-host copy must be complete before the caller reads the data.
  // A larger host-to-device copy from pageable memory is not promised to have
  // read the source when cudaMemcpyAsync returns, and the host caching
  // allocator may hand that buffer out again at once: wait for it too.
  if (kind != cudaMemcpyDeviceToDevice) cuda_check(cudaStreamSynchronize(current_stream()), "cudaStreamSynchronize");
}

// ------------------------------------------------------------------ downloads

namespace {

// Pinned buffers for downloads, cached: cudaHostAlloc costs far more than the
// small copies they serve. Portable memory serves every GPU.
CachingAllocator& pinned_allocator() {
  static auto* allocator = new CachingAllocator(raw_pinned_alloc, raw_pinned_free, size_t{64} << 20);
  return *allocator;
}

// A GPU's download: the copy into a pinned buffer and the event behind it.
class DeviceDownload final : public PendingDownload::State {
 public:
  DeviceDownload(const void* src, int index, size_t nbytes) : index_(index) {
    DeviceGuard guard(index);
    check(!stream_is_capturing(), "a download from cuda:{} inside a graph capture (it would wait for the host)",
          index);
    if (nbytes == 0) return;
    host_ = pinned_allocator().allocate(nbytes);
    check(host_ != nullptr, "out of pinned host memory allocating {} bytes", nbytes);
    try {
      landed_ = event_pool(index).take();
      cuda_check(cudaMemcpyAsync(host_, src, nbytes, cudaMemcpyDeviceToHost, current_stream()), "cudaMemcpyAsync");
      cuda_check(cudaEventRecord(landed_, current_stream()), "cudaEventRecord");
    } catch (...) {
      release();  // (no destructor runs for an object whose constructor throws)
      throw;
    }
  }
  ~DeviceDownload() override { release(); }
  DeviceDownload(const DeviceDownload&) = delete;
  DeviceDownload& operator=(const DeviceDownload&) = delete;

  const void* wait() override {
    if (landed_ != nullptr) cuda_check(cudaEventSynchronize(landed_), "cudaEventSynchronize (download)");
    return host_;
  }

 private:
  // The buffer goes back to the cache: the copy must not write it any more.
  // (Errors here are sticky ones that the next check reports.)
  void release() noexcept {
    if (landed_ != nullptr) {
      cudaEventSynchronize(landed_);
      event_pool(index_).give(landed_);
    }
    if (host_ != nullptr) pinned_allocator().release(host_);
  }

  int index_;
  void* host_ = nullptr;
  cudaEvent_t landed_ = nullptr;
};

}  // namespace

std::unique_ptr<PendingDownload::State> cuda_download(const void* src, int index, size_t nbytes) {
  return std::make_unique<DeviceDownload>(src, index, nbytes);
}

// ------------------------------------------------------------------ branches

namespace {

// This thread's side stream on one GPU and the events of its fork and join.
struct SideStream {
  cudaStream_t stream = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr;
};

SideStream& side_stream(int device) {
  // Made on first use and kept: creating them costs more than a small kernel.
  // Non-blocking, so that it never waits on the legacy stream implicitly:
  // the events alone order it.
  thread_local std::vector<SideStream> streams;
  if (streams.empty()) streams.resize(static_cast<size_t>(cuda_device_count()));
  SideStream& side = streams.at(static_cast<size_t>(device));
  if (side.stream == nullptr) {
    cuda_check(cudaStreamCreateWithFlags(&side.stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    cuda_check(cudaEventCreateWithFlags(&side.fork, cudaEventDisableTiming), "cudaEventCreate");
    cuda_check(cudaEventCreateWithFlags(&side.join, cudaEventDisableTiming), "cudaEventCreate");
  }
  return side;
}

thread_local bool in_branches = false;

// From construction to destruction (on an error too), this thread's work may
// go to the side stream: it starts after everything queued on the current
// stream so far, and the current stream waits for all of it at the end.
// Inside a capture, the side stream joins the capture at the fork.
class Fork {
 public:
  Fork(int device, const SideStream& side)
      : allocator_(device_allocator(device)), side_(side), main_(stream_of_thread) {
    cuda_check(cudaEventRecord(side_.fork, main_), "cudaEventRecord (fork)");
    cuda_check(cudaStreamWaitEvent(side_.stream, side_.fork, 0), "cudaStreamWaitEvent (fork)");
    allocator_.begin_deferring();
    in_branches = true;
  }
  void to_side_stream() { stream_of_thread = side_.stream; }
  ~Fork() {
    stream_of_thread = main_;
    in_branches = false;
    // (Errors here are sticky or capture errors that the next check reports.)
    cudaEventRecord(side_.join, side_.stream);
    cudaStreamWaitEvent(main_, side_.join, 0);
    allocator_.end_deferring();
  }
  Fork(const Fork&) = delete;
  Fork& operator=(const Fork&) = delete;

 private:
  CachingAllocator& allocator_;
  const SideStream& side_;
  cudaStream_t main_;
};

}  // namespace

void cuda_run_branches(int device, const std::function<void()>& first, const std::function<void()>& second) {
  if (in_branches) {
    first();
    second();
    return;
  }
  DeviceGuard guard(device);
  Fork fork(device, side_stream(device));
  first();
  fork.to_side_stream();
  second();
}

// ------------------------------------------------------------------ graphs

struct DeviceGraph::State {
  int device = 0;
  cudaGraphExec_t exec = nullptr;
  std::vector<void*> held;  // the memory of the captured work (CachingAllocator::end_holding)
};

namespace {

// The capture of one DeviceGraph: while it lives, this thread's ops are
// queued on a capture stream (a blocking one, so that anything queued on the
// legacy stream meanwhile is an error rather than work outside the graph) and
// the device's allocator holds the blocks that they release.
class Capture {
 public:
  explicit Capture(int device) : allocator_(device_allocator(device)) {
    allocator_.begin_holding();  // (an error if another capture holds: nothing to undo yet)
    holding_ = true;
    try {
      cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate (graph capture)");
      stream_of_thread = stream_;
      cuda_check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed), "cudaStreamBeginCapture");
      capturing_ = true;
    } catch (...) {
      undo();
      throw;
    }
  }
  // The captured graph; `held` receives the memory that it owns.
  cudaGraph_t finish(std::vector<void*>& held) {
    cudaGraph_t graph = nullptr;
    cuda_check(end_capture(graph), "cudaStreamEndCapture");
    const CachingAllocator::Held blocks = end_holding();
    if (blocks.still_live != 0) {
      cudaGraphDestroy(graph);
      allocator_.release_held(blocks.blocks);
      fail("the work captured in a device graph keeps {} tensor(s) that it allocated; their memory belongs to the "
           "graph", blocks.still_live);
    }
    held = blocks.blocks;
    return graph;
  }
  ~Capture() { undo(); }
  Capture(const Capture&) = delete;
  Capture& operator=(const Capture&) = delete;

 private:
  // Ends what is still open. After an error nothing was executed, so the
  // work's memory is free at once.
  void undo() {
    cudaGraph_t graph = nullptr;
    if (capturing_ && end_capture(graph) == cudaSuccess) cudaGraphDestroy(graph);
    if (holding_) allocator_.release_held(end_holding().blocks);
    stream_of_thread = nullptr;
    if (stream_) cudaStreamDestroy(stream_);
    stream_ = nullptr;
  }
  // The capture's status (an error, e.g. an invalidated capture, is cleared:
  // capture errors are not sticky, and later launch checks must not see it).
  cudaError_t end_capture(cudaGraph_t& graph) {
    capturing_ = false;
    const cudaError_t status = cudaStreamEndCapture(stream_, &graph);
    if (status != cudaSuccess) cudaGetLastError();
    return status;
  }
  CachingAllocator::Held end_holding() {
    holding_ = false;
    return allocator_.end_holding();
  }

  CachingAllocator& allocator_;
  cudaStream_t stream_ = nullptr;
  bool holding_ = false, capturing_ = false;
};

}  // namespace

DeviceGraph::DeviceGraph(Device device, const std::function<void()>& work) : state_(std::make_unique<State>()) {
  check(device.is_cuda(), "a device graph captures GPU work, not {} work", device);
  check(stream_of_thread == nullptr, "device graphs do not nest: this thread is already capturing one");
  state_->device = device.index;
  DeviceGuard guard(device.index);
  cuda_synchronize(device.index);
  cudaGraph_t graph = nullptr;
  {
    Capture capture(device.index);
    work();
    graph = capture.finish(state_->held);
  }
  const cudaError_t status = cudaGraphInstantiate(&state_->exec, graph, 0);
  cudaGraphDestroy(graph);
  if (status != cudaSuccess) device_allocator(device.index).release_held(state_->held);
  cuda_check(status, "cudaGraphInstantiate");
}

DeviceGraph::~DeviceGraph() {
  if (!state_ || !state_->exec) return;
  int previous = 0;
  cudaGetDevice(&previous);
  cudaSetDevice(state_->device);  // (not DeviceGuard: destructors must not throw)
  cudaDeviceSynchronize();        // the last replay may still write the held memory
  cudaGraphExecDestroy(state_->exec);
  device_allocator(state_->device).release_held(state_->held);
  cudaSetDevice(previous);
}

void DeviceGraph::replay() {
  DeviceGuard guard(state_->device);
  cuda_check(cudaGraphLaunch(state_->exec, current_stream()), "cudaGraphLaunch");
}

}  // namespace engine
