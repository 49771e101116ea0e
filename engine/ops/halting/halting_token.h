// The per-token formula of halting_step, shared by its CPU and CUDA kernels.
#pragma once
#include "engine/ops/elementwise/elementwise_math.h"

namespace engine {

// Updates one token's cumulative score and active flag from its channel 0.
template <typename T>
ENGINE_HOST_DEVICE void halting_step_token(T channel0, T can_halt, T gamma, T beta, T threshold, T& cumulative,
                                           T& active) {
  const T score = elementwise_math::sigmoid(channel0 * gamma + beta) * can_halt;
  cumulative = cumulative + score;
  if (cumulative >= threshold) active = T(0);
}

}  // namespace engine
