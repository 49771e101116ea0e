// View ops: new shape/strides over the same storage, no copy (reshape copies
// only when the input's layout makes a view impossible). Their backward maps
// the gradient back to the input's shape.
#pragma once
#include <vector>

#include "engine/tensor.h"

namespace engine {

Tensor reshape(const Tensor& x, const Shape& shape);  // one entry may be -1
Tensor permute(const Tensor& x, const std::vector<int64_t>& order);
Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);  // a slice along dim
Tensor select(const Tensor& x, int64_t dim, int64_t index);                  // narrow + drop dim
Tensor expand(const Tensor& x, const Shape& shape);  // broadcast size-1 dims (and new leading dims)
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor squeeze(const Tensor& x, int64_t dim);

// Normalises a possibly negative dimension index for a tensor of `rank` dims.
int64_t wrap_dim(int64_t dim, int64_t rank);

}  // namespace engine
