// Softmax and log-softmax over the last dimension, with autograd.
#pragma once
#include "engine/tensor.h"

namespace engine {

Tensor softmax(const Tensor& x);
Tensor log_softmax(const Tensor& x);

}  // namespace engine
