// Indexing, joining and selection ops, with autograd.
#pragma once
#include <vector>

#include "engine/tensor.h"

namespace engine {

// out[..., i, ...] = x[..., index[i], ...] along dim; index int64 [K]. The
// index is validated on the host: one given on x's GPU is read back for that
// (the host waits for the GPU); one given on the CPU is checked there and
// copied to x's device without waiting, the way for indices built on the host.
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);

// A 1-D int64 index built on the host, checked there once and copied once to
// a device: index_select then takes it for any number of tensors without
// checking or copying it again (a layout that every block pads by, one
// compaction applied to several tensors).
class DeviceIndex {
 public:
  DeviceIndex() = default;
  // A copy of host_index on `device`; an error for a negative entry.
  DeviceIndex(const Tensor& host_index, Device device);
  bool defined() const { return index_.defined(); }
  const Tensor& tensor() const { return index_; }  // [K] int64 on the device
  int64_t bound() const { return bound_; }          // 1 + the largest entry (0 when empty)

 private:
  Tensor index_;
  int64_t bound_ = 0;
};
// index_select with an index already checked and on x's device: an error only
// when x is on another device or too short along dim for the largest entry.
Tensor index_select(const Tensor& x, int64_t dim, const DeviceIndex& index);
// PyTorch gather: index has x's rank; out[i][j] = x[i][index[i][j]] for dim 1, etc.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
// Joins along dim (all other sizes equal).
Tensor concat(const std::vector<Tensor>& tensors, int64_t dim);
// Splits into pieces of the given sizes along dim (views).
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);
// condition (uint8, 0/1, broadcastable) ? a : b.
Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b);
// x with value wherever mask (uint8, broadcastable to x) is non-zero.
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);

}  // namespace engine
