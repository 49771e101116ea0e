// Where a tensor's bytes live. The CPU is always there; CUDA is there when the
// binary was built with nvcc (ENGINE_CUDA) and the machine has a GPU.
#pragma once
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include <fmt/format.h>

namespace engine {

enum class DeviceType { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static Device cpu() { return {DeviceType::CPU, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::CUDA, index}; }
  // "cpu", "cuda", "cuda:1" or "auto" (cuda when a GPU is present, else cpu).
  // Asking for cuda where there is none is an error that says why.
  static Device parse(const std::string& text);

  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& other) const { return type == other.type && index == other.index; }
  bool operator!=(const Device& other) const { return !(*this == other); }
  std::string str() const;
};

bool built_with_cuda();
int cuda_device_count();  // 0 when built without CUDA or no GPU / driver present

// Raw memory per device, through a caching allocator per device; the CUDA
// versions live in engine/cuda/runtime.cu.
void* device_alloc(Device device, size_t nbytes);
void device_free(Device device, void* ptr);
// Waits for all queued work on the device (no-op on the CPU); timing needs it.
void device_synchronize(Device device);
// Milliseconds that `run` takes on the device: CUDA events recorded around it
// on the GPU's stream (the span holds only the queued work, no host waits),
// a steady clock on the CPU. For benchmarks.
double device_time_ms(Device device, const std::function<void()>& run);
// Copies nbytes between any two devices (host<->device, device<->device).
void device_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);

// A device-to-host copy that the host does not wait for as it asks: on a GPU
// the copy is queued behind the work already on the stream and lands in
// pinned memory, and wait() blocks until it has; on the CPU the bytes are
// copied at once. For results the host needs a little later (A-ViT's halting
// decisions of the block before last), so that the GPU keeps working while the
// host waits for them. The source may be freed at once (stream order keeps its
// memory until the copy has read it). Not inside a DeviceGraph capture.
class PendingDownload {
 public:
  PendingDownload(const void* src, Device src_device, size_t nbytes);
  const void* wait();  // the bytes, valid while this object lives

  struct State {  // one per kind of device: device.cpp (CPU), engine/cuda/runtime.cu
    virtual ~State() = default;  // a copy still in flight is waited for
    virtual const void* wait() = 0;
  };

 private:
  std::unique_ptr<State> state_;
};

// Runs two pieces of work that do not depend on each other: neither may read
// what the other writes. On a GPU, `second` is queued on a side stream that
// forks from the current stream before it and joins it again after it, so
// the small kernels of the two may run at the same time (in a DeviceGraph
// capture too, as two branches of the graph); memory released meanwhile is
// reused only after the join. On the CPU, and inside another run_branches,
// one after the other.
void run_branches(Device device, const std::function<void()>& first, const std::function<void()>& second);

// A fixed sequence of GPU work captured once and replayed with one launch (a
// CUDA graph). A replay takes the GPU's time alone: the host's cost of issuing
// each op (~5-11 us, which at batch 1 is most of a forward's time) is paid at
// the capture only. The work runs once to be captured, queueing but not
// executing its GPU work; it must queue stream-ordered GPU work only (no
// copies to or from the host, no synchronisation: those are errors) and keep
// no tensor that it allocates, since the graph owns that memory and every
// replay writes it again. The tensors it reads must outlive the graph; a
// replay sees their contents at that time.
class DeviceGraph {
 public:
  DeviceGraph(Device device, const std::function<void()>& work);  // an error off the GPU
  ~DeviceGraph();
  DeviceGraph(const DeviceGraph&) = delete;
  DeviceGraph& operator=(const DeviceGraph&) = delete;
  void replay();  // queued in order with all other work; device_synchronize waits for it

  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace engine

template <>
struct fmt::formatter<engine::Device> : fmt::formatter<std::string> {
  template <typename Context>
  auto format(const engine::Device& device, Context& ctx) const {
    return fmt::formatter<std::string>::format(device.str(), ctx);
  }
};
