// Kernels of the index family: gather and its scatter-add backward (which
// also serve index_select, see index.cpp), and an elementwise select
// (condition ? a : b) behind where and masked_fill.
#pragma once
#include "engine/dispatch.h"
#include "engine/tensor.h"

namespace engine {

// out[p] = x[p with p[dim] replaced by index[p]] for every position p of
// index. index: int64, any strides (stride 0 broadcasts it), every value in
// [0, x.size(dim)) (the caller checks). out: contiguous, index's shape and
// x's dtype. x: any strides, index's rank, x.size(d) >= index.size(d) for d != dim.
using GatherKernel = void (*)(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
// The adjoint of gather: dst[p with p[dim] replaced by index[p]] += src[p].
// src: index's shape, any strides. dst: contiguous, already initialised
// (zeros for a gradient). Repeated indices accumulate (atomics on a GPU).
using ScatterAddKernel = void (*)(const Tensor& src, int64_t dim, const Tensor& index, const Tensor& dst);
// out = condition ? a : b elementwise. condition (uint8), a and b are already
// broadcast to out's shape (stride 0 along broadcast dims, any other strides);
// out is contiguous; a, b and out share a dtype.
using SelectKernel = void (*)(const Tensor& condition, const Tensor& a, const Tensor& b, const Tensor& out);

extern KernelSlot<GatherKernel> gather_kernel;
extern KernelSlot<ScatterAddKernel> scatter_add_kernel;
extern KernelSlot<SelectKernel> select_kernel;

}  // namespace engine
