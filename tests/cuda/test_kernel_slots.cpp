// Runs on any machine: in a CUDA build, every kernel slot must have its CUDA
// kernel registered (a missing .cu registrar would otherwise only show on a GPU).
#include <gtest/gtest.h>

#include "engine/ops/conv/conv_kernels.h"
#include "engine/ops/copy/copy_kernels.h"
#include "engine/ops/cumsum/cumsum_kernels.h"
#include "engine/ops/elementwise/elementwise_kernels.h"
#include "engine/ops/index/index_kernels.h"
#include "engine/ops/loss/loss_kernels.h"
#include "engine/ops/matmul/matmul_kernels.h"
#include "engine/ops/norm/layernorm_kernels.h"
#include "engine/ops/reduce/reduce_kernels.h"
#include "engine/ops/softmax/softmax_kernels.h"
#include "engine/ops/softplus_linear/softplus_linear_kernels.h"
#include "engine/optim/optim_kernels.h"

namespace engine {
namespace {

template <typename Fn>
void expect_cuda_kernel(const KernelSlot<Fn>& slot) {
  EXPECT_NE(slot.cuda, nullptr) << "no CUDA kernel registered for '" << slot.name << "'";
}

template <typename... Slots>
void expect_cuda_kernels(const Slots&... slots) {
  (expect_cuda_kernel(slots), ...);
}

TEST(KernelSlots, EverySlotHasACudaKernelInCudaBuilds) {
  if (!built_with_cuda()) GTEST_SKIP() << "built without CUDA";
  expect_cuda_kernels(copy_kernel, fill_kernel, binary_kernel, unary_kernel, unary_backward_kernel, scalar_kernel,
                      reduce_kernel, scatter_rows_kernel, gemm_kernel, linear_forward_kernel, linear_backward_kernel,
                      softmax_forward_kernel, softmax_backward_kernel, layer_norm_forward_kernel,
                      layer_norm_backward_kernel,
                      cross_entropy_forward_kernel, cross_entropy_backward_kernel, gather_kernel, scatter_add_kernel,
                      select_kernel, im2col_kernel, col2im_kernel, cumsum_kernel, adamw_step_kernel,
                      sgd_step_kernel, sum_of_squares_kernel, scale_kernel, softplus_linear_kernel,
                      softplus_grad_kernel);
}

}  // namespace
}  // namespace engine
