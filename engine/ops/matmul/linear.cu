// CUDA kernels of the fused linear layer: GEMMs through cuBLASLt with fused
// epilogues, and one fused elementwise pass for the backward.
//
// Forward: out = x W^T + b is one cuBLASLt matmul with the BIAS epilogue.
// linear_gelu then applies the exact GELU with the elementwise kernel,
// keeping the GEMM's output as the pre-activation for the backward.
//
// Why not cuBLASLt's GELU_AUX_BIAS epilogue (bias + GELU + the pre-activation
// as aux output, in the GEMM)? cuBLASLt's GELU epilogues (GELU, GELU_BIAS,
// GELU_AUX[_BIAS], and DGELU[_BGRAD] in the backward) compute the tanh
// approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), not the
// exact 0.5 x (1 + erf(x / sqrt 2)) that the model uses (timm's nn.GELU,
// PyTorch's default, and our CPU reference). The cuBLAS documentation only
// says "GELU"; PyTorch records the behaviour (pytorch/pytorch#104061: the
// cuBLASLt GELU epilogue of _addmm_activation "uses tanh approximation", so
// its other GPU paths were switched to tanh to agree), and the GPU test
// CudaLinear.CublasLtGeluEpilogueIsTheTanhApproximation checks it on the
// device. The two differ by up to 4.7e-4 absolute (near |x| = 2.7), far above
// float32 rounding, so the epilogue would change the model's numerics (the
// timm fixtures hold to 1e-5) and is not used. The bias stays fused in the
// GEMM; GELU and its derivative are our own exact kernels.
//
// Backward, with g = dy * gelu'(pre) (or g = dy for linear):
//   dx = g W, dW = g^T x, db = column sums of g.
// float32: for linear, db comes out of dW's GEMM (the BGRADB epilogue sums
// its B operand, which is g, over the inner dimension); for linear_gelu, one
// pass computes g and its column sums together. bf16 mode: one pass reads dy
// (and pre), writes g as the bfloat16 GEMM operand that both GEMMs share (a
// single rounding, as the unfused path does twice) and sums the float32 g
// for db, so d(bias) keeps float32 precision. Column sums go through
// per-chunk partial sums in a fixed order: deterministic.
//
// bf16 mode rounds x and W to bfloat16 once, in the forward, which returns
// the copies (LinearOperands) for the op to keep: the backward's GEMMs read
// them (dx W's, dW x's) instead of rounding again, and x's float32 copy is not
// kept for the backward.
//
// cuBLASLt plans (matmul descriptor, layouts, the heuristic's algorithm and
// its workspace size) are cached per shape, dtype, epilogue and operand
// alignment; the workspace comes from the caching allocator. So a training
// step, after its first, makes no heuristic queries and no cudaMalloc.
// Whatever cuBLASLt rejects (no algorithm for a layout; float64) runs through
// the cuBLAS GEMM kernel with the bias added or summed by separate kernels.
//
// Layouts: cuBLASLt is column-major, and a row-major [R, C] matrix is the
// column-major [C, R] matrix in the same memory. With x [M, K], W [N, K] and
// g [M, N] row-major:
//   forward  out^T [N, M] = op_T(W as [K, N]) op_N(x as [K, M]),  bias per row of out^T
//   dx^T     [K, M]       = op_N(W as [K, N]) op_N(g as [N, M])
//   dW^T     [K, N]       = op_N(x as [K, M]) op_T(g as [N, M]),  BGRADB: sums of op(g) over M
#include <cublasLt.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <mutex>
#include <vector>

#include "engine/cuda/cuda_utils.cuh"
#include "engine/cuda/device_handles.cuh"
#include "engine/ops/copy/copy.h"
#include "engine/ops/copy/copy_kernels.h"
#include "engine/ops/elementwise/elementwise_kernels.h"
#include "engine/ops/elementwise/elementwise_math.h"
#include "engine/ops/matmul/matmul.h"
#include "engine/ops/matmul/matmul_kernels.h"

namespace engine {

namespace {

// ---------------------------------------------------------------- cuBLASLt plans

void lt_check(cublasStatus_t status, const char* what) {
  check(status == CUBLAS_STATUS_SUCCESS, "cuBLASLt error in {}: {}", what, cublasLtGetStatusString(status));
}

// The GPU's handle (see DeviceHandles); cuBLASLt takes the stream per call.
cublasLtHandle_t lt_handle(int device) {
  static DeviceHandles<cublasLtHandle_t> handles(
      "cuBLASLt", [](cublasLtHandle_t* handle) { lt_check(cublasLtCreate(handle), "cublasLtCreate"); });
  return handles.get(device);
}

// One column-major GEMM, D [m, n] = op(A) [m, k] op(B) [k, n] (+ C), float32
// D, C (and bias), A and B float32 or bfloat16, float32 accumulation.
struct LtGemm {
  cublasOperation_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
  int64_t m = 0, n = 0, k = 0;
  cudaDataType_t operand_type = CUDA_R_32F;
  const void* a = nullptr;
  int64_t lda = 0;
  const void* b = nullptr;
  int64_t ldb = 0;
  float* d = nullptr;
  int64_t ldd = 0;
  const float* c = nullptr;  // added to the product (beta = 1) when set; laid out as D
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  void* bias = nullptr;  // BIAS: the bias [m], read; BGRADB: the bias gradient [n], written

  // The product's shape and operands (no transposes, no epilogue: set those after).
  static LtGemm of(int64_t m, int64_t n, int64_t k, cudaDataType_t operand_type, const void* a, int64_t lda,
                   const void* b, int64_t ldb, float* d, int64_t ldd) {
    LtGemm g;
    g.m = m;
    g.n = n;
    g.k = k;
    g.operand_type = operand_type;
    g.a = a;
    g.lda = lda;
    g.b = b;
    g.ldb = ldb;
    g.d = d;
    g.ldd = ldd;
    return g;
  }
};

bool uses_bias(cublasLtEpilogue_t epilogue) {
  return epilogue == CUBLASLT_EPILOGUE_BIAS || epilogue == CUBLASLT_EPILOGUE_BGRADB;
}

// The largest power of two (at most 256, cuBLASLt's default assumption) dividing the address.
int64_t alignment_of(const void* pointer) {
  const auto address = reinterpret_cast<uintptr_t>(pointer);
  int64_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
}

// The epilogues' bias vectors want 16-byte alignment (older cuBLASLt
// versions fault on less rather than declining); a bias view at an odd
// offset gets the separate bias kernel instead.
bool epilogue_vector_ok(const void* pointer) { return alignment_of(pointer) >= 16; }

struct LtPlan {
  bool usable = false;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;
};

using PlanKey = std::array<int64_t, 16>;

PlanKey plan_key(int device, const LtGemm& g) {
  return {device,
          g.trans_a,
          g.trans_b,
          g.m,
          g.n,
          g.k,
          g.lda,
          g.ldb,
          g.ldd,
          g.operand_type,
          g.epilogue,
          alignment_of(g.a),
          alignment_of(g.b),
          alignment_of(g.d),
          g.c ? alignment_of(g.c) : 0,
          uses_bias(g.epilogue) ? alignment_of(g.bias) : 0};
}

template <typename Value>
void set_desc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute, const Value& value) {
  lt_check(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof(value)), "cublasLtMatmulDescSetAttribute");
}

template <typename Value>
void set_preference(cublasLtMatmulPreference_t preference, cublasLtMatmulPreferenceAttributes_t attribute,
                    const Value& value) {
  lt_check(cublasLtMatmulPreferenceSetAttribute(preference, attribute, &value, sizeof(value)),
           "cublasLtMatmulPreferenceSetAttribute");
}

// Builds the descriptors and asks the heuristic for the best algorithm; the
// plan is unusable when there is none for this problem.
LtPlan make_plan(int device, const LtGemm& g) {
  linear_path_counters().lt_plans.fetch_add(1, std::memory_order_relaxed);
  LtPlan plan;
  // CUBLAS_COMPUTE_32F: full float32 products for float32 operands (TF32
  // only with ..._FAST_TF32), float32 accumulation for bfloat16 ones.
  lt_check(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, static_cast<int32_t>(g.trans_a));
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, static_cast<int32_t>(g.trans_b));
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<uint32_t>(g.epilogue));
  // The bias (gradient) is float32, the type of D (the attribute's default).
  if (uses_bias(g.epilogue)) set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, g.bias);
  // Stored shapes: op_N reads A as [m, k], op_T as [k, m] transposed (B likewise with [k, n]).
  const bool ta = g.trans_a == CUBLAS_OP_T, tb = g.trans_b == CUBLAS_OP_T;
  lt_check(cublasLtMatrixLayoutCreate(&plan.a, g.operand_type, ta ? g.k : g.m, ta ? g.m : g.k, g.lda),
           "cublasLtMatrixLayoutCreate");
  lt_check(cublasLtMatrixLayoutCreate(&plan.b, g.operand_type, tb ? g.n : g.k, tb ? g.k : g.n, g.ldb),
           "cublasLtMatrixLayoutCreate");
  lt_check(cublasLtMatrixLayoutCreate(&plan.d, CUDA_R_32F, g.m, g.n, g.ldd), "cublasLtMatrixLayoutCreate");

  cublasLtMatmulPreference_t preference = nullptr;
  lt_check(cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate");
  set_preference(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, static_cast<uint64_t>(kGemmWorkspaceBytes));
  // Tensors can start anywhere in their storage: only algorithms that accept
  // the actual alignments (part of the plan's key).
  set_preference(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, static_cast<uint32_t>(alignment_of(g.a)));
  set_preference(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, static_cast<uint32_t>(alignment_of(g.b)));
  set_preference(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                 static_cast<uint32_t>(alignment_of(g.c ? g.c : g.d)));
  set_preference(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, static_cast<uint32_t>(alignment_of(g.d)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(lt_handle(device), plan.desc, plan.a, plan.b, plan.d,
                                                               plan.d, preference, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(preference);
  // Any failure here (NOT_SUPPORTED, or INVALID_VALUE for an epilogue that
  // this dtype combination lacks) leaves the plan unusable: the cuBLAS path.
  if (status == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
    plan.usable = true;
    plan.algo = result.algo;
    plan.workspace = result.workspaceSize;
  }
  return plan;
}

// Runs g through cuBLASLt on the current stream; false (nothing queued) when
// cuBLASLt has no algorithm for it, so that the caller takes the cuBLAS path.
bool lt_matmul(int device, const LtGemm& g) {
  if (!cublaslt_enabled()) return false;
  LinearPathCounters& counters = linear_path_counters();
  static std::mutex mutex;
  static std::map<PlanKey, LtPlan> plans;
  std::lock_guard<std::mutex> lock(mutex);  // plans, and the bias pointer set in a shared descriptor
  const PlanKey key = plan_key(device, g);
  auto found = plans.find(key);
  if (found == plans.end()) found = plans.emplace(key, make_plan(device, g)).first;
  LtPlan& plan = found->second;
  if (!plan.usable) {
    counters.lt_rejected.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  if (uses_bias(g.epilogue)) set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, g.bias);
  // Freed when this call returns: stream order keeps the next owner's work after this GEMM.
  const Tensor workspace = plan.workspace > 0
                               ? Tensor::empty({static_cast<int64_t>(plan.workspace)}, DType::U8, Device::cuda(device))
                               : Tensor();
  const float alpha = 1.0f, beta = g.c ? 1.0f : 0.0f;
  const cublasStatus_t status =
      cublasLtMatmul(lt_handle(device), plan.desc, &alpha, g.a, plan.a, g.b, plan.b, &beta, g.c ? g.c : g.d, plan.d,
                     g.d, plan.d, &plan.algo, workspace.defined() ? workspace.raw_data() : nullptr, plan.workspace,
                     current_stream());
  if (status == CUBLAS_STATUS_NOT_SUPPORTED || status == CUBLAS_STATUS_INVALID_VALUE ||
      status == CUBLAS_STATUS_ARCH_MISMATCH) {
    // The heuristic offered an algorithm that then refused to run: never ask again.
    std::fprintf(stderr, "warning: cuBLASLt refused a %lldx%lldx%lld GEMM (epilogue %d: %s); using cuBLAS\n",
                 static_cast<long long>(g.m), static_cast<long long>(g.n), static_cast<long long>(g.k),
                 static_cast<int>(g.epilogue), cublasLtGetStatusString(status));
    plan.usable = false;
    counters.lt_rejected.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  lt_check(status, "cublasLtMatmul");
  counters.lt_matmuls.fetch_add(1, std::memory_order_relaxed);
  if (g.epilogue == CUBLASLT_EPILOGUE_BIAS) counters.lt_bias.fetch_add(1, std::memory_order_relaxed);
  if (g.epilogue == CUBLASLT_EPILOGUE_BGRADB) counters.lt_bias_grad.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// ---------------------------------------------------------------- the cuBLAS path

// A contiguous row-major [rows, cols] matrix as a GEMM operand, read as is
// (or transposed: op(t) = t^T, [cols, rows]).
GemmOperand plain(const Tensor& t) { return {t, false, t.shape()[0], t.shape()[1], t.shape()[1], 0}; }
GemmOperand transposed(const Tensor& t) { return {t, true, t.shape()[1], t.shape()[0], t.shape()[1], 0}; }

// c [M, N] = op(a) op(b) (+ c with accumulate) by the cuBLAS GEMM kernel
// (which applies the GEMM precision itself).
void cublas_gemm(const GemmOperand& a, const GemmOperand& b, const Tensor& c, bool accumulate = false) {
  gemm_kernel.cuda(a, b, make_view(c, {1, c.shape()[0], c.shape()[1]}, {c.numel(), c.shape()[1], 1}, c.offset()), 1,
                   1.0, accumulate ? 1.0 : 0.0);
}

// ---------------------------------------------------------------- fused elementwise passes

template <typename T>
__global__ void add_bias_kernel(T* out, const T* bias, int64_t rows, int64_t cols) {
  for (int64_t i : grid_stride(rows * cols)) out[i] += bias[i % cols];
}

// The column sums of g [rows, cols] run per chunk of rows, in a fixed order:
// a block covers kColumns threads of V columns each of one chunk, its kLanes
// rows of threads stepping through the chunk, then partial[chunk, col] = the
// lanes' sum.
constexpr int kColumns = 32, kLanes = 8;

int64_t chunk_rows(int64_t rows) {
  int64_t chunk = 256;  // 32 rows per thread
  while ((rows + chunk - 1) / chunk > 8192) chunk *= 2;
  return chunk;
}

// One pass over dy [rows, cols] (and pre): g = dy * gelu'(pre) (kGelu) or dy,
// written in float (g, may be null) and bfloat16 (g16, may be null), and its
// partial column sums (partial, may be null). dy * f'(pre) is the gelu op's
// backward formula, so g equals what the unfused ops compute. V columns a
// thread, as 16-byte accesses when the rows allow (V > 1 needs cols % V == 0).
// (H200, fc1 of the CIFAR ViT-Ti, [16640, 768] float: 70.9 us scalar, 53.9 us
// with V = 4, against 39.4 us for a copy that reads two tensors and writes one.)
template <typename T, bool kGelu, int V>
__global__ void linear_grad_kernel(const T* dy, const T* pre, int64_t rows, int64_t cols, int64_t chunk, T* g,
                                   __nv_bfloat16* g16, T* partial) {
  const int64_t col = (static_cast<int64_t>(blockIdx.x) * kColumns + threadIdx.x) * V;
  const int64_t first = static_cast<int64_t>(blockIdx.y) * chunk;
  const int64_t last = first + chunk < rows ? first + chunk : rows;
  Pack<T, V> total = zero_pack<T, V>();
  if (col < cols) {
#pragma unroll 4  // independent loads in flight; only the running totals are chains
    for (int64_t row = first + threadIdx.y; row < last; row += kLanes) {
      const int64_t i = row * cols + col;
      Pack<T, V> value = load_pack<T, V>(dy + i);
      if constexpr (kGelu) {
        const Pack<T, V> x = load_pack<T, V>(pre + i);
#pragma unroll
        for (int j = 0; j < V; ++j) value.v[j] *= elementwise_math::unary_derivative(UnaryOp::Gelu, x.v[j], T(0));
      }
      if (g != nullptr) store_pack(g + i, value);
      if constexpr (std::is_same_v<T, float>) {
        if (g16 != nullptr) {  // round to nearest even, as .to(BF16)
          Pack<__nv_bfloat16, V> rounded;
#pragma unroll
          for (int j = 0; j < V; ++j) rounded.v[j] = __float2bfloat16(value.v[j]);
          store_pack(g16 + i, rounded);
        }
      }
#pragma unroll
      for (int j = 0; j < V; ++j) total.v[j] += value.v[j];
    }
  }
  if (partial == nullptr) return;  // the same for the whole block
  __shared__ T lanes[kLanes][kColumns * V + 1];
#pragma unroll
  for (int j = 0; j < V; ++j) lanes[threadIdx.y][threadIdx.x * V + j] = total.v[j];
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
#pragma unroll
    for (int j = 0; j < V; ++j) {
      T sum = 0;
      for (int lane = 0; lane < kLanes; ++lane) sum += lanes[lane][threadIdx.x * V + j];
      partial[blockIdx.y * cols + col + j] = sum;
    }
  }
}

// Runs linear_grad_kernel over dy [rows, cols]; db (if defined) gets the column sums.
template <typename T>
void linear_grad_pass(const Tensor& dy, const Tensor& pre, T* g, __nv_bfloat16* g16, const Tensor& db) {
  const int64_t rows = dy.shape()[0], cols = dy.shape()[1];
  const int64_t chunk = chunk_rows(rows), chunks = (rows + chunk - 1) / chunk;
  Tensor partial = db.defined() ? Tensor::empty({chunks, cols}, dy.dtype(), dy.device()) : Tensor();
  T* partial_data = partial.defined() ? mutable_data_of<T>(partial) : nullptr;
  const T* pre_data = pre.defined() ? data_of<T>(pre) : nullptr;
  auto launch = [&](auto gelu, auto width) {
    constexpr int V = decltype(width)::value;
    const dim3 blocks(static_cast<unsigned>((cols + kColumns * V - 1) / (kColumns * V)), static_cast<unsigned>(chunks));
    linear_grad_kernel<T, decltype(gelu)::value, V><<<blocks, dim3(kColumns, kLanes), 0, current_stream()>>>(
        data_of<T>(dy), pre_data, rows, cols, chunk, g, g16, partial_data);
    CUDA_CHECK_LAUNCH();
  };
  // 16-byte accesses when every row starts aligned (g16: V bfloat16s, 8 bytes).
  constexpr int kV = 16 / sizeof(T);
  const bool packs = cols % kV == 0 && aligned_for(data_of<T>(dy), 16) && aligned_for(pre_data, 16) &&
                     aligned_for(g, 16) && aligned_for(g16, 2 * kV) && aligned_for(partial_data, 16);
  using Gelu = std::true_type;
  using Plain = std::false_type;
  using Wide = std::integral_constant<int, kV>;
  using Single = std::integral_constant<int, 1>;
  if (pre.defined()) packs ? launch(Gelu{}, Wide{}) : launch(Gelu{}, Single{});
  else packs ? launch(Plain{}, Wide{}) : launch(Plain{}, Single{});
  if (db.defined()) sum_partial_rows(partial_data, 1, chunks, cols, mutable_data_of<T>(db));
}

// ---------------------------------------------------------------- the kernels

bool bf16_mode() { return gemm_precision() == GemmPrecision::BFloat16; }

// A saved operand as the cuBLASLt GEMM wants it: bfloat16 in bf16 mode,
// float32 otherwise. Normally it already is (the forward made it so) and this
// is a no-op; it converts only when the forward took the other path.
Tensor lt_operand(const Tensor& saved, bool bf16) { return saved.to(bf16 ? DType::BF16 : DType::F32); }

// A saved operand as the cuBLAS path wants it: in the op's dtype. A bfloat16
// one goes back to float32 exactly (bfloat16 values are float32 values), and
// the GEMM kernel's bf16 mode rounds it again to itself.
Tensor cublas_operand(const Tensor& saved, DType dtype) { return saved.to(dtype); }

LinearOperands linear_forward_cuda(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& residual,
                                   const Tensor& out) {
  DeviceGuard guard(out);
  const int device = out.device().index;
  const int64_t m = x.shape()[0], k = x.shape()[1], n = weight.shape()[0];
  LinearOperands operands{x, weight};
  dispatch_float(out.dtype(), "linear", [&](auto tag) {
    using T = decltype(tag);
    if (std::is_same_v<T, float> && cublaslt_enabled()) {  // (float64: always cuBLAS)
      const bool bf16 = bf16_mode();
      // Both operands in the GEMM's type (a bfloat16 x in float32 mode goes back
      // to float32 exactly); also the backward's.
      operands = bf16 ? LinearOperands{x.to(DType::BF16), weight.to(DType::BF16)}
                      : LinearOperands{x.to(DType::F32), weight};
      LtGemm g = LtGemm::of(n, m, k, bf16 ? CUDA_R_16BF : CUDA_R_32F, operands.weight.raw_data(), k,
                            operands.x.raw_data(), k, mutable_data_of<float>(out), n);
      g.trans_a = CUBLAS_OP_T;
      g.c = data_or_null<const float>(residual);
      const bool fuse_bias = bias.defined() && epilogue_vector_ok(bias.raw_data());
      if (fuse_bias) {
        g.epilogue = CUBLASLT_EPILOGUE_BIAS;
        g.bias = bias.raw_data();
      }
      if (lt_matmul(device, g)) {
        if (bias.defined() && !fuse_bias) {
          launch_1d(m * n, add_bias_kernel<T>, mutable_data_of<T>(out), data_of<T>(bias), m, n);
        }
        return;
      }
    }
    if (residual.defined()) copy_into(out, residual);
    cublas_gemm(plain(cublas_operand(x, out.dtype())), transposed(weight), out, /*accumulate=*/residual.defined());
    if (bias.defined()) launch_1d(m * n, add_bias_kernel<T>, mutable_data_of<T>(out), data_of<T>(bias), m, n);
  });
  return operands;
}

// GELU of float32 pre written as bfloat16, 4 elements per step of a thread
// (the formula of elementwise_math.h, rounded to nearest even as .to(BF16)).
__global__ void gelu_bf16_kernel(const float* pre, __nv_bfloat16* out, int64_t n) {
  auto gelu = [](float v) { return elementwise_math::apply_unary(UnaryOp::Gelu, v); };
  const int64_t vectors = n / 4;
  for (int64_t i : grid_stride(vectors)) {
    const float4 x = reinterpret_cast<const float4*>(pre)[i];
    const __nv_bfloat162 lo = __floats2bfloat162_rn(gelu(x.x), gelu(x.y));
    const __nv_bfloat162 hi = __floats2bfloat162_rn(gelu(x.z), gelu(x.w));
    reinterpret_cast<__nv_bfloat162*>(out)[2 * i] = lo;
    reinterpret_cast<__nv_bfloat162*>(out)[2 * i + 1] = hi;
  }
  const int64_t tail = vectors * 4 + static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (tail < n) out[tail] = __float2bfloat16(gelu(pre[tail]));
}

Tensor gelu_operand_cuda(const Tensor& pre) {
  DeviceGuard guard(pre);
  const bool bf16 = linear_operand_dtype(pre) == DType::BF16;
  if (!bf16 || !aligned_for(pre.raw_data(), 16)) {  // (pre is a fresh GEMM output: aligned)
    Tensor activation = Tensor::empty_like(pre);
    unary_kernel.get(pre.device())(UnaryOp::Gelu, pre, activation);
    return bf16 ? activation.to(DType::BF16) : activation;
  }
  Tensor out = Tensor::empty(pre.shape(), DType::BF16, pre.device());
  const int64_t n = pre.numel();
  launch_1d((n + 3) / 4, gelu_bf16_kernel, data_of<float>(pre), mutable_data_of<__nv_bfloat16>(out), n);
  return out;
}

void linear_backward_cuda(const LinearOperands& saved, const Tensor& pre, const Tensor& dy, const Tensor& dx,
                          const Tensor& dweight, const Tensor& dbias) {
  DeviceGuard guard(dy);
  const int device = dy.device().index;
  const int64_t m = dy.shape()[0], n = dy.shape()[1], k = saved.weight.shape()[1];
  dispatch_float(dy.dtype(), "linear_backward", [&](auto tag) {
    using T = decltype(tag);
    constexpr bool is_float = std::is_same_v<T, float>;
    const bool bf16 = is_float && bf16_mode();
    const bool want_gemms = dx.defined() || dweight.defined();
    // g, the gradient at the GEMM's output: float (dy itself for linear) and,
    // in bf16 mode, only as the bfloat16 operand of both GEMMs.
    Tensor g = pre.defined() ? Tensor() : dy, g16;
    bool db_done = false;
    if (bf16 || pre.defined()) {
      if (bf16 && want_gemms) g16 = Tensor::empty({m, n}, DType::BF16, dy.device());
      if (!bf16 && want_gemms) g = Tensor::empty({m, n}, dy.dtype(), dy.device());
      linear_grad_pass<T>(dy, pre, bf16 || !g.defined() ? nullptr : mutable_data_of<T>(g),
                          g16.defined() ? mutable_data_of<__nv_bfloat16>(g16) : nullptr, dbias);
      db_done = true;
    }
    // The float32 g for the cuBLAS path, made on demand in bf16 mode (as cublas_operand).
    auto g_float = [&] {
      if (!g.defined()) g = cublas_operand(g16, dy.dtype());
      return g;
    };
    const cudaDataType_t operand_type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    const Tensor& g_operand = bf16 ? g16 : g;  // undefined when no GEMM runs
    const void* g_data = g_operand.defined() ? g_operand.raw_data() : nullptr;

    if (dx.defined()) {  // dx^T [k, m] = (W as [k, n]) (g as [n, m])
      bool done = false;
      if (is_float && cublaslt_enabled()) {
        const Tensor w_op = lt_operand(saved.weight, bf16);
        const LtGemm lt =
            LtGemm::of(k, m, n, operand_type, w_op.raw_data(), k, g_data, n, mutable_data_of<float>(dx), k);
        done = lt_matmul(device, lt);
      }
      if (!done) cublas_gemm(plain(g_float()), plain(cublas_operand(saved.weight, dy.dtype())), dx);
    }
    if (dweight.defined()) {  // dW^T [k, n] = (x as [k, m]) op_T(g as [n, m]), + BGRADB sums of op(g) over m
      bool done = false;
      if (is_float && cublaslt_enabled()) {
        const Tensor x_op = lt_operand(saved.x, bf16);
        LtGemm lt =
            LtGemm::of(k, n, m, operand_type, x_op.raw_data(), k, g_data, n, mutable_data_of<float>(dweight), k);
        lt.trans_b = CUBLAS_OP_T;
        if (dbias.defined() && !db_done && epilogue_vector_ok(dbias.raw_data())) {
          lt.epilogue = CUBLASLT_EPILOGUE_BGRADB;
          lt.bias = dbias.raw_data();
          db_done = done = lt_matmul(device, lt);
          lt.epilogue = CUBLASLT_EPILOGUE_DEFAULT;
          lt.bias = nullptr;
        }
        if (!done) done = lt_matmul(device, lt);
      }
      if (!done) cublas_gemm(transposed(g_float()), plain(cublas_operand(saved.x, dy.dtype())), dweight);
    }
    if (dbias.defined() && !db_done) linear_grad_pass<T>(dy, Tensor(), nullptr, nullptr, dbias);
  });
}

// d = GELU epilogue(a b) with a = [x, 0, ..., 0] (column-major [m, 16],
// bfloat16: x must be exact in it) and b = the first row all ones ([16, 16]):
// every column of d is the epilogue's GELU of x, products and sums exact.
Tensor gelu_epilogue_probe(const Tensor& x) {
  DeviceGuard guard(x);
  const int64_t m = x.numel(), k = 16, n = 16;
  Tensor a = Tensor::zeros({k, m});  // row-major [k, m] = column-major [m, k]
  const std::vector<float> values = x.to_floats();
  std::copy(values.begin(), values.end(), a.data<float>());
  Tensor b = Tensor::zeros({n, k});  // row-major [n, k] = column-major [k, n]
  for (int64_t j = 0; j < n; ++j) b.data<float>()[j * k] = 1.0f;
  const Tensor a16 = a.to(DType::BF16).to(x.device()), b16 = b.to(DType::BF16).to(x.device());
  Tensor d = Tensor::empty({n, m}, DType::F32, x.device());  // column-major [m, n]
  LtGemm g = LtGemm::of(m, n, k, CUDA_R_16BF, a16.raw_data(), m, b16.raw_data(), k, mutable_data_of<float>(d), m);
  g.epilogue = CUBLASLT_EPILOGUE_GELU;
  if (!lt_matmul(x.device().index, g)) return Tensor();
  return make_view(d, {m}, {1}, d.offset());  // column 0
}

const bool registered = [] {
  cublaslt_gelu_epilogue_probe = &gelu_epilogue_probe;
  linear_forward_kernel.cuda = &linear_forward_cuda;
  linear_backward_kernel.cuda = &linear_backward_cuda;
  gelu_operand_kernel.cuda = &gelu_operand_cuda;
  return true;
}();

}  // namespace

}  // namespace engine
