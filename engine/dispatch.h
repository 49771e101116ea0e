// Device dispatch. Each op family declares one KernelSlot per kernel in its
// *_kernels.h; the CPU kernel fills it in the family's *_cpu.cpp and the CUDA
// kernel in its .cu file (through a static registrar). Slots are plain
// aggregates, so they are constant-initialised before any registrar runs.
#pragma once
#include "engine/device.h"
#include "engine/dtype.h"
#include "engine/error.h"

namespace engine {

template <typename Fn>
struct KernelSlot {
  const char* name;
  Fn cpu;
  Fn cuda;

  Fn get(Device device) const {
    Fn fn = device.is_cuda() ? cuda : cpu;
    check(fn != nullptr, "op '{}' has no kernel for {}{}", name, device.str(),
          device.is_cuda() && !built_with_cuda() ? " (this binary was built without CUDA)" : "");
    return fn;
  }
};

// Runs body(T{}) with T = float or double according to dtype; the CPU kernels
// compute in float32, and in float64 for gradient checks.
template <typename Body>
void dispatch_float(DType dtype, const char* op, Body&& body) {
  switch (dtype) {
    case DType::F32: body(float{}); return;
    case DType::F64: body(double{}); return;
    default:
      fail("op '{}': dtype {} is not supported here (convert to float32 first)", op, dtype_name(dtype));
  }
}

}  // namespace engine
