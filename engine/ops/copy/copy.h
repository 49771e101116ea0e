// Copies that are not methods of Tensor (those are contiguous/clone/to).
#pragma once
#include "engine/tensor.h"

namespace engine {

// Writes src into dst element by element (dst may be a strided view, e.g. a
// narrow() window; dtypes may differ). In place, never recorded by autograd.
void copy_into(const Tensor& dst, const Tensor& src);
// Sets every element of dst (which must be contiguous) to value; never recorded.
void fill_(const Tensor& dst, double value);

}  // namespace engine
