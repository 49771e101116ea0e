// ./bench_kernels [--device auto|cpu|cuda] [--out FILE.json] [--repeats N] [--only gemm,mlp,core,scan,softplus_linear]
// The kernel audit: for each kernel, its shape, the median time over repeated
// runs (after warm-up, timed on the device: CUDA events on a GPU), and either
// the achieved GB/s, counted as the fewest bytes it must move (every input
// read once, every output written once), as a percentage of a large
// device-to-device copy; or, for GEMMs and fused attention, the achieved
// TFLOP/s as a percentage of a large bf16 GEMM (tensor cores) or, for the
// float32 ones on a GPU, of the float32 FMA rate. The ceilings are measured first.
#include <algorithm>
#include <functional>
#include <map>

#include "engine/autograd.h"
#include "engine/bench_timing.h"
#include "engine/cli.h"
#include "engine/config.h"
#include "engine/ops/attention/attention_kernels.h"
#include "engine/ops/attention_stats/attention_stats.h"
#include "engine/ops/conv/depthwise_conv1d_kernels.h"
#include "engine/ops/elementwise/elementwise_kernels.h"
#include "engine/ops/matmul/matmul.h"
#include "engine/ops/matmul/matmul_kernels.h"
#include "engine/ops/norm/layernorm_kernels.h"
#include "engine/ops/ops.h"
#include "engine/ops/rows.h"
#include "engine/ops/scan/scan_kernels.h"
#include "engine/ops/scan/selective_scan_kernels.h"
#include "engine/ops/softmax/softmax_kernels.h"
#include "engine/ops/softplus_linear/softplus_linear_kernels.h"
#include "engine/optim/optimizer.h"
#include "engine/random.h"
#include "train/metrics.h"

using namespace engine;

namespace {

// What a row is measured against: the copy's bytes per second, the large
// GEMM's FLOPs (bf16 on the tensor cores; float32 on the CPU), the float32 FMA
// pipe's FLOPs (a GPU's), or the rate of hardware exponentials (MUFU.EX2).
enum class Roof { Copy, Gemm, Fp32Fma, Exp2 };

// One measured kernel: bytes for memory-bound kernels, flops for GEMMs and
// attention, exps for the exp2 probe. A memory-bound row may also count its
// exponentials (the selective scan), to show the time they alone take.
struct Timing {
  std::string kernel, shape;
  Roof roof = Roof::Copy;
  bool ceiling = false;  // the row that sets its roof's ceiling
  double ms = 0, bytes = 0, flops = 0, exps = 0;
};

// Builds the rows: random inputs on the device, every call timed the same way.
class KernelBench {
 public:
  KernelBench(Device device, int repeats) : device_(device), repeats_(repeats) {}

  Tensor uniform(const Shape& shape, double low = -1, double high = 1) {
    return Tensor::uniform(shape, rng_, low, high).to(device_);
  }
  Tensor empty(const Shape& shape) { return Tensor::empty(shape, DType::F32, device_); }
  Device device() const { return device_; }

  void memory(const std::string& kernel, const Shape& shape, double bytes, const std::function<void()>& run,
              double exps = 0) {
    add({kernel, shape_str(shape), Roof::Copy, false, time(run), bytes, 0, exps});
  }
  // GEMMs and attention: on a GPU in float32 mode against the FMA pipe (they
  // do not use the tensor cores), else against the large GEMM.
  void compute(const std::string& kernel, const std::string& shape, double flops, const std::function<void()>& run) {
    const bool fp32_gpu = device_.is_cuda() && gemm_precision() == GemmPrecision::Float32;
    const Roof roof = fp32_gpu ? Roof::Fp32Fma : Roof::Gemm;
    add({kernel, shape, roof, false, time(run), 0, flops});
  }
  void fma_probe(const std::string& kernel, double fmas, const std::function<void()>& run) {
    add({kernel, fmt::format("{:.3g} FFMA", fmas), Roof::Fp32Fma, true, time(run), 0, 2 * fmas});
  }
  void exp2_probe(const std::string& kernel, double exps, const std::function<void()>& run) {
    add({kernel, fmt::format("{:.3g} exp2", exps), Roof::Exp2, true, time(run), 0, 0, exps});
  }
  // The row just measured is its roof's ceiling (the copy, the large GEMM).
  void mark_ceiling() { rows_.back().ceiling = true; }
  const std::vector<Timing>& rows() const { return rows_; }

 private:
  double time(const std::function<void()>& run) const { return median_time_ms(device_, run, repeats_); }
  // Keeps the row and shows progress on stderr (a full run on a CPU takes
  // long; the table against the ceilings comes at the end, on stdout).
  void add(const Timing& row) {
    rows_.push_back(row);
    fmt::print(stderr, "[{:>2}] {:<34} {:<34} {:>10.4f} ms\n", rows_.size(), row.kernel, row.shape, row.ms);
  }

  Device device_;
  int repeats_;
  Rng rng_{0};
  std::vector<Timing> rows_;
};

double bytes_of(const Shape& shape, int tensors) { return 4.0 * tensors * shape_numel(shape); }

// The label of rows run in the bf16 GEMM mode, which the CPU computes in float32.
std::string bf16_mode_tag(const KernelBench& bench) { return bench.device().is_cuda() ? " bf16" : " fp32"; }

// A device-to-device copy of src into dst (bytes read + written).
void copy_row(KernelBench& bench, const std::string& name, const Tensor& src, const Tensor& dst) {
  bench.memory(name, src.shape(), 2.0 * src.nbytes(), [&] {
    device_copy(dst.raw_data(), bench.device(), src.raw_data(), bench.device(), src.nbytes());
  });
}

// The ceilings, measured first: a 1 GiB device-to-device copy; on a GPU the
// float32 FMA rate and the rate of hardware exponentials; and a large GEMM
// with bf16 operands (fp32 on the CPU). The GEMM comes last: it draws the
// most power, and the probes right after it ran at lower clocks.
void ceilings(KernelBench& bench) {
  const bool gpu = bench.device().is_cuda();
  const int64_t elements = gpu ? (int64_t{1} << 28) : (int64_t{1} << 25);
  copy_row(bench, "device copy (ceiling)", bench.uniform({elements}), bench.empty({elements}));
  bench.mark_ceiling();
  if (gpu) {
    const int index = bench.device().index;
    const int64_t fmas = cuda_fma_probe(index, int64_t{1} << 34);
    bench.fma_probe("FP32 FMA (ceiling)", static_cast<double>(fmas), [&] { cuda_fma_probe(index, fmas); });
    // MUFU.EX2 bounds the selective scan from below as the copy bounds the memory-bound kernels.
    const int64_t exps = cuda_exp2_probe(index, int64_t{1} << 32);
    bench.exp2_probe("exp2 MUFU (ceiling)", static_cast<double>(exps), [&] { cuda_exp2_probe(index, exps); });
  }
  const int64_t n = gpu ? 8192 : 1024;
  Tensor a = bench.uniform({n, n}), b = bench.uniform({n, n});
  const GemmPrecisionGuard bf16(GemmPrecision::BFloat16);
  bench.compute("GEMM" + bf16_mode_tag(bench) + " (ceiling)", fmt::format("{0}x{0}x{0}", n), 2.0 * n * n * n,
                [&] { matmul(a, b); });
  bench.mark_ceiling();
}

// The GEMMs of a ViT-S block at batch 256 (M = 256 x 197 tokens), in both
// precisions on a GPU (on the CPU the bf16 rows would repeat the fp32 ones).
void gemms(KernelBench& bench) {
  const int64_t m = 256 * 197, d = 384;
  Tensor x = bench.uniform({m, d}), w_qkv = bench.uniform({3 * d, d}), w_fc1 = bench.uniform({4 * d, d});
  std::vector<GemmPrecision> precisions = {GemmPrecision::Float32};
  if (bench.device().is_cuda()) precisions.push_back(GemmPrecision::BFloat16);
  for (GemmPrecision precision : precisions) {
    const GemmPrecisionGuard guard(precision);
    const std::string tag = precision == GemmPrecision::BFloat16 ? " bf16" : " fp32";
    bench.compute("linear qkv" + tag, fmt::format("[{}, {}] x [{}, {}]^T", m, d, 3 * d, d), 2.0 * m * d * 3 * d,
                  [&] { linear(x, w_qkv); });
    bench.compute("linear fc1" + tag, fmt::format("[{}, {}] x [{}, {}]^T", m, d, 4 * d, d), 2.0 * m * d * 4 * d,
                  [&] { linear(x, w_fc1); });
  }
}

// ViT-S's fc1 + bias + GELU at batch 256 in the bf16 GEMM mode, fused
// (linear_gelu: the bias in the GEMM's epilogue, one exact-GELU pass; the
// backward's one pass for GELU's derivative, the bf16 operand and d(bias))
// against the unfused ops that autograd would run (GEMM, add, gelu; gelu's
// backward, sum for d(bias), two matmuls that each round their operands).
void fused_mlp(KernelBench& bench) {
  const int64_t m = 256 * 197, d = 384, hidden = 4 * d;
  const Device device = bench.device();
  Tensor x = bench.uniform({m, d}), w = bench.uniform({hidden, d}, -0.05, 0.05), b = bench.uniform({hidden});
  Tensor w_t = transpose(w, 0, 1);
  const GemmPrecisionGuard bf16(GemmPrecision::BFloat16);
  const std::string tag = bf16_mode_tag(bench), shape = fmt::format("[{}, {}] x [{}, {}]^T", m, d, hidden, d);
  const double flops = 2.0 * m * d * hidden;
  bench.compute("fc1+bias+GELU fwd unfused" + tag, shape, flops, [&] { gelu(add(matmul(x, w_t), b)); });
  bench.compute("fc1+bias+GELU fwd fused" + tag, shape, flops, [&] { linear_gelu(x, w, b); });

  // The backward from a saved pre-activation and an incoming gradient dy.
  Tensor pre = add(matmul(x, w_t), b), y = gelu(pre), dy = bench.uniform({m, hidden});
  Tensor dpre = bench.empty({m, hidden});
  bench.compute("fc1+bias+GELU bwd unfused" + tag, shape, 2 * flops, [&] {
    unary_backward_kernel.get(device)(UnaryOp::Gelu, pre, y, dy, dpre);
    sum(dpre, {0});
    matmul(dpre, w);
    matmul(transpose(x, 0, 1), dpre);
  });
  Tensor dx = bench.empty({m, d}), dw = bench.empty({hidden, d}), db = bench.empty({hidden});
  const LinearOperands saved{x.to(DType::BF16), w.to(DType::BF16)};  // as the forward keeps them in this mode
  bench.compute("fc1+bias+GELU bwd fused" + tag, shape, 2 * flops,
                [&] { linear_backward_kernel.get(device)(saved, pre, dy, dx, dw, db); });
}

// The element-wise, normalisation and optimizer kernels at ViT-S sizes.
void core_ops(KernelBench& bench) {
  const Shape tokens = {256, 197, 384}, probs = {256 * 6, 197, 197};
  Tensor x = bench.uniform(tokens), y = bench.uniform(tokens), gamma = bench.uniform({384}), beta = bench.uniform({384});
  bench.memory("add", tokens, bytes_of(tokens, 3), [&] { add(x, y); });
  bench.memory("gelu", tokens, bytes_of(tokens, 2), [&] { gelu(x); });
  // The sequential mixers' gate (h_fwd + h_bwd) * silu(z): the forward reads
  // three tensors and writes one; the backward reads a, b, z, g, writes da, dz.
  const Shape gate = {128, 197, 384};
  Tensor h_fwd = bench.uniform(gate), h_bwd = bench.uniform(gate), z = bench.uniform(gate), dgate = bench.uniform(gate);
  Tensor dsum = bench.empty(gate), dz = bench.empty(gate);
  bench.memory("silu_gated_sum fwd", gate, bytes_of(gate, 4), [&] { silu_gated_sum(h_fwd, h_bwd, z); });
  bench.memory("silu_gated_sum bwd", gate, bytes_of(gate, 6), [&] {
    silu_gated_sum_backward_kernel.get(bench.device())(h_fwd, h_bwd, z, dgate, dsum, dz);
  });
  bench.memory("layer_norm fwd", tokens, bytes_of(tokens, 2), [&] { layer_norm(x, gamma, beta, 1e-6); });
  // The backward with the weight and bias gradients (per-block partial sums,
  // then their column sums): reads x and dy, writes dx. Also at the CIFAR
  // ViT-Ti's tokens, where the column sums are a larger share.
  for (const Shape& shape : {tokens, Shape{256, 65, 192}}) {
    const int64_t rows = shape[0] * shape[1], cols = shape[2];
    const Tensor in = bench.uniform({rows, cols}), dy = bench.uniform({rows, cols}), weight = bench.uniform({cols});
    const Tensor mean = bench.empty({rows}), rstd = bench.empty({rows}), dx = bench.empty({rows, cols});
    const Tensor dweight = bench.empty({cols}), dbias = bench.empty({cols});
    layer_norm_forward_kernel.get(bench.device())(in, weight, bench.uniform({cols}), 1e-6, bench.empty({rows, cols}),
                                                  mean, rstd);
    bench.memory("layer_norm bwd", shape, bytes_of(shape, 3), [&] {
      layer_norm_backward_kernel.get(bench.device())(in, weight, mean, rstd, dy, Tensor(), dx, dweight, dbias);
    });
  }
  // A slice of a projection's columns made contiguous (gated_rnn's z from its
  // [.., 3 x 96] projection; a split's gradient windows are the same copy).
  const Shape slice = {256, 65, 96};
  const Tensor projection = bench.uniform({256, 65, 288});
  bench.memory("copy of a column slice", slice, bytes_of(slice, 2),
               [&] { narrow(projection, 2, 192, 96).contiguous(); });
  // A loss's mean over every element (the distillation's MSE at batch 128):
  // one row, cut into chunks over the GPU.
  const Shape loss_terms = {128, 65, 192};
  const Tensor terms = bench.uniform(loss_terms);
  bench.memory("sum of all elements", loss_terms, bytes_of(loss_terms, 1), [&] { sum(terms); });
  Tensor scores = bench.uniform(probs);
  bench.memory("softmax", probs, bytes_of(probs, 2), [&] { softmax(scores); });
  // Its backward reads y and dy and writes dx.
  const Tensor probs_y = last_dim_rows(softmax(scores)), probs_dy = last_dim_rows(bench.uniform(probs));
  const Tensor probs_dx = last_dim_rows(bench.empty(probs));
  bench.memory("softmax bwd", probs, bytes_of(probs, 3), [&] {
    softmax_backward_kernel.get(bench.device())(SoftmaxKind::Softmax, probs_y, probs_dy, probs_dx);
  });
  // The sparsity statistics of attention rows (each row sorted): ViT-S/16's
  // [256, 6, 197, 197] above and the CIFAR ViT-Ti's [256, 3, 65, 65]. Bytes:
  // the probabilities read once (the per-head sums written are negligible).
  const Tensor vit_s_probs = reshape(softmax(scores), {256, 6, 197, 197});
  bench.memory("attention_row_stat_sums", vit_s_probs.shape(), bytes_of(vit_s_probs.shape(), 1),
               [&] { attention_row_stat_sums(vit_s_probs, Tensor(), 0); });
  const Tensor cifar_probs = softmax(bench.uniform({256, 3, 65, 65}));
  bench.memory("attention_row_stat_sums", cifar_probs.shape(), bytes_of(cifar_probs.shape(), 1),
               [&] { attention_row_stat_sums(cifar_probs, Tensor(), 0); });

  // A-ViT's halting layer at the CIFAR ViT's batch of 256 x 65 tokens
  // ([T, 192] block outputs). Bytes: channel 0 of each row (one float of the
  // 32-byte sector read), three [T] inputs and two [T] outputs.
  const int64_t halting_tokens = 256 * 65;
  const Tensor halting_rows = bench.uniform({halting_tokens, 192}), halting_state = bench.uniform({halting_tokens});
  bench.memory("halting_step", halting_rows.shape(), bytes_of({halting_tokens}, 6),
               [&] { halting_step(halting_rows, halting_state, halting_state, halting_state, 10.0, -30.0, 0.01); });

  // Fused attention over the same heads (q, k, v [256, 6, 197, 64]), never
  // materialising the probabilities above. FLOPs are the convention of the
  // FlashAttention papers: the forward's two GEMMs, 4 B H N^2 d (S = Q K^T,
  // O = P V), and 2.5x that for the backward (dV, dP, dQ, dK and recomputing
  // S); the exponentials and the backward's second recomputation of S and dP
  // (dQ runs as a separate pass) count for nothing.
  const Shape heads = {256, 6, 197, 64};
  const double attention_flops = 4.0 * 256 * 6 * 197.0 * 197.0 * 64;
  AttentionInputs in{bench.uniform(heads), bench.uniform(heads), bench.uniform(heads), Tensor(), 0.125};
  Tensor out = bench.empty(heads), lse = bench.empty({256, 6, 197}), dout = bench.uniform(heads);
  Tensor dq = bench.empty(heads), dk = bench.empty(heads), dv = bench.empty(heads);
  bench.compute("fused_attention fwd", shape_str(heads), attention_flops,
                [&] { attention_forward_kernel.get(bench.device())(in, out, lse); });
  bench.compute("fused_attention bwd", shape_str(heads), 2.5 * attention_flops,
                [&] { attention_backward_kernel.get(bench.device())(in, out, lse, dout, dq, dk, dv); });
  // The same heads read straight from the packed projection qkv [256, 197,
  // 3 x 384] and written token-major (out and dout [256, 197, 384], d(qkv)
  // [256, 197, 3 x 384]): fused_attention_packed's views, same FLOPs.
  const int64_t batch = heads[0], count = heads[1], n_tokens = heads[2], head_dim = heads[3], dim = count * head_dim;
  auto part = [&](const Tensor& t, int64_t parts, int64_t j) {
    return select(permute(reshape(t, {batch, n_tokens, parts, count, head_dim}), {2, 0, 3, 1, 4}), 0, j);
  };
  Tensor qkv = bench.uniform({batch, n_tokens, 3 * dim}), out_tokens = bench.empty({batch, n_tokens, dim});
  Tensor dout_tokens = bench.uniform({batch, n_tokens, dim}), dqkv = bench.empty({batch, n_tokens, 3 * dim});
  AttentionInputs packed{part(qkv, 3, 0), part(qkv, 3, 1), part(qkv, 3, 2), Tensor(), 0.125};
  const Tensor out_heads = part(out_tokens, 1, 0), dout_heads = part(dout_tokens, 1, 0);
  const Tensor dq_heads = part(dqkv, 3, 0), dk_heads = part(dqkv, 3, 1), dv_heads = part(dqkv, 3, 2);
  const std::string packed_shape = shape_str({batch, n_tokens, 3 * dim}) + " packed";
  bench.compute("fused_attention fwd packed", packed_shape, attention_flops,
                [&] { attention_forward_kernel.get(bench.device())(packed, out_heads, lse); });
  bench.compute("fused_attention bwd packed", packed_shape, 2.5 * attention_flops, [&] {
    attention_backward_kernel.get(bench.device())(packed, out_heads, lse, dout_heads, dq_heads, dk_heads, dv_heads);
  });
  // The same four in bf16 mode: on CUDA the tensor-core kernels
  // (attention_mma.cu: bf16 operands, float32 accumulation and outputs), same
  // FLOP counts. (On the CPU, bf16 mode changes nothing: no rows.)
  if (bench.device().is_cuda()) {
    GemmPrecisionGuard bf16(GemmPrecision::BFloat16);
    bench.compute("fused_attention fwd bf16", shape_str(heads), attention_flops,
                  [&] { attention_forward_kernel.get(bench.device())(in, out, lse); });
    bench.compute("fused_attention bwd bf16", shape_str(heads), 2.5 * attention_flops,
                  [&] { attention_backward_kernel.get(bench.device())(in, out, lse, dout, dq, dk, dv); });
    bench.compute("fused_attention fwd packed bf16", packed_shape, attention_flops,
                  [&] { attention_forward_kernel.get(bench.device())(packed, out_heads, lse); });
    bench.compute("fused_attention bwd packed bf16", packed_shape, 2.5 * attention_flops, [&] {
      attention_backward_kernel.get(bench.device())(packed, out_heads, lse, dout_heads, dq_heads, dk_heads, dv_heads);
    });
  }

  // AdamW over ViT-S's 22 M parameters in one tensor: reads p, g, m, v and writes p, m, v.
  const Shape params = {22050664};
  Tensor p = bench.uniform(params);
  p.set_requires_grad(true);
  p.set_grad(bench.uniform(params));
  auto adamw = make_adamw({ParamGroup{{p}, 0.05, 1.0}}, {1e-4});
  bench.memory("adamw step", params, bytes_of(params, 7), [&] { adamw->step(); });
}

// gated_scan forward and backward at `shape` [B, L, C], u and the gate's
// logits read in place from a [B, L, 3 C] projection, as the gated_rnn mixer
// holds them.
void gated_scan_rows(KernelBench& bench, const Shape& shape, const Tensor& h, const Tensor& g, const Tensor& du,
                     const Tensor& dgate) {
  const Device device = bench.device();
  const int64_t C = shape[2];
  const Tensor projection = bench.uniform({shape[0], shape[1], 3 * C});
  const GatedScanInputs in{narrow(projection, 2, 0, C), narrow(projection, 2, C, C), Tensor()};
  bench.memory("gated_scan fwd", shape, bytes_of(shape, 3), [&] { gated_scan_kernel.get(device)(in, h, false); });
  bench.memory("gated_scan bwd", shape, bytes_of(shape, 6),
               [&] { gated_scan_backward_kernel.get(device)(in, h, g, du, dgate, false); });
}

// The scan family at the sizes of the sequential mixers that replace attention.
void scans(KernelBench& bench) {
  // Linear recurrence at a ViT-B-sized gated_rnn: [B, L, C] = [128, 197, 768].
  const int64_t B = 128, L = 197, C = 768, S = 16, CS = 384;
  const Device device = bench.device();
  const Shape blc = {B, L, C};
  Tensor a = bench.uniform(blc, 0.5, 0.99), b = bench.uniform(blc), g = bench.uniform(blc);
  Tensor h = bench.empty(blc), da = bench.empty(blc), db = bench.empty(blc);
  for (bool reverse : {false, true}) {
    const std::string dir = reverse ? " (reverse)" : "";
    bench.memory("linear_scan fwd" + dir, blc, bytes_of(blc, 3),
                 [&] { linear_scan_kernel.get(device)(a, b, h, reverse); });
    bench.memory("linear_scan bwd" + dir, blc, bytes_of(blc, 5),
                 [&] { linear_scan_backward_kernel.get(device)(a, h, g, da, db, reverse); });
  }
  gated_scan_rows(bench, blc, h, g, da, db);  // gated_rnn's own op at that size
  // And at the default job's gated_rnn (width 96 on the CIFAR ViT-Ti's 65
  // tokens, batch 256): too few sequences to stream one thread each, so the
  // kernels cut them into spans of time.
  const Shape cifar = {256, 65, 96};
  // A copy that moves the forward rows' bytes (three tensors of this shape):
  // how much of the 1 GiB copy's rate a pass this small can reach at all.
  const Shape cifar_copy = {256, 65, 144};
  copy_row(bench, "device copy", bench.uniform(cifar_copy), bench.empty(cifar_copy));
  Tensor ca = bench.uniform(cifar, 0.5, 0.99), cb = bench.uniform(cifar), cg = bench.uniform(cifar);
  Tensor ch = bench.empty(cifar), cda = bench.empty(cifar), cdb = bench.empty(cifar);
  bench.memory("linear_scan fwd", cifar, bytes_of(cifar, 3), [&] { linear_scan_kernel.get(device)(ca, cb, ch, false); });
  bench.memory("linear_scan bwd", cifar, bytes_of(cifar, 5),
               [&] { linear_scan_backward_kernel.get(device)(ca, ch, cg, cda, cdb, false); });
  gated_scan_rows(bench, cifar, ch, cg, cda, cdb);

  // Selective scan at a ViT-S-sized Mamba: x [128, 197, 384], state 16.
  const Shape x_shape = {B, L, CS}, rows = {B, L, S};
  SelectiveScanInputs in{bench.uniform(x_shape), bench.uniform(x_shape, 0.001, 0.1), bench.uniform({CS, S}, -4, -0.5),
                         bench.uniform(rows),    bench.uniform(rows),                 bench.uniform({CS})};
  Tensor y = bench.empty(x_shape), dy = bench.uniform(x_shape);
  SelectiveScanGrads grads{bench.empty(x_shape), bench.empty(x_shape), bench.empty({CS, S}),
                           bench.empty(rows),    bench.empty(rows),    bench.empty({CS})};
  // One exponential per (token, channel, state) for the forward; the
  // backward replays the forward's states and walks back: twice that.
  // Bytes: the op's inputs and outputs only. The states that a training
  // forward saves for the backward (1/8 of all states on the GPU) are not
  // counted, neither as the forward's output nor as the backward's input.
  const double exps = static_cast<double>(B * L * CS * S);
  const int64_t fwd_bytes = bytes_of(x_shape, 3) + bytes_of(rows, 2);
  bench.memory("selective_scan fwd S=16", x_shape, fwd_bytes,
               [&] { selective_scan_kernel.get(device)(in, y, /*save_states=*/false, false); }, exps);
  Tensor saved;
  bench.memory("selective_scan fwd+save S=16", x_shape, fwd_bytes,
               [&] { saved = selective_scan_kernel.get(device)(in, y, /*save_states=*/true, false); }, exps);
  bench.memory("selective_scan bwd S=16", x_shape, bytes_of(x_shape, 5) + bytes_of(rows, 4),
               [&] { selective_scan_backward_kernel.get(device)(in, saved, dy, grads, false); }, 2 * exps);

  // Depthwise causal conv (Mamba's), kernel 4.
  Tensor w = bench.uniform({CS, 4}), bias = bench.uniform({CS});
  Tensor dx = bench.empty(x_shape), dw = bench.empty({CS, 4}), dbias = bench.empty({CS});
  bench.memory("depthwise_conv1d fwd K=4", x_shape, bytes_of(x_shape, 2),
               [&] { depthwise_conv1d_kernel.get(device)(in.x, w, bias, y, 3, false, false, Tensor()); });
  bench.memory("depthwise_conv1d+silu fwd K=4", x_shape, bytes_of(x_shape, 2),
               [&] { depthwise_conv1d_kernel.get(device)(in.x, w, bias, y, 3, false, /*silu=*/true, Tensor()); });
  bench.memory("depthwise_conv1d bwd K=4", x_shape, bytes_of(x_shape, 3),
               [&] { depthwise_conv1d_backward_kernel.get(device)(in.x, w, dy, dx, dw, dbias, 3, false); });
  // Wider kernels ('same', as the bidirectional conv mixer pads them): K = 7,
  // 9 and 15 take the fused backward's 8-, 12- and 16-tap windows; K = 17 and
  // 31 two passes of it (1 + 16 and 15 + 16 taps). Same bytes.
  for (int64_t taps : {7, 9, 15, 17, 31}) {
    Tensor wk = bench.uniform({CS, taps}), dwk = bench.empty({CS, taps});
    bench.memory(fmt::format("depthwise_conv1d bwd K={}", taps), x_shape, bytes_of(x_shape, 3), [&] {
      depthwise_conv1d_backward_kernel.get(device)(in.x, wk, dy, dx, dwk, dbias, (taps - 1) / 2, false);
    });
  }
}

// Mamba's dt path, dt = softplus(dt_proj(dt rows of x_proj's output)): the
// fused op reading the rows in place, and the unfused ops it replaces (a copy
// of the rows, the GEMM, softplus), at the CIFAR ViT-Ti's mamba with expand
// = 2 at batch 256 (dim 192: K = dt_rank = 12, N = d_inner = 384; 65 tokens)
// and at a ViT-S-sized one (dim 384: K = 24, N = 768; 197 tokens, batch 128).
// Bytes: x's rows read, weight and bias read, the output written.
void softplus_linears(KernelBench& bench) {
  struct Size {
    int64_t batch, tokens, k, n, state;
  };
  for (const Size& s : {Size{256, 65, 12, 384, 16}, Size{128, 197, 24, 768, 16}}) {
    const Tensor proj = bench.uniform({s.batch, s.tokens, s.k + 2 * s.state});
    const Tensor x = narrow(proj, -1, 0, s.k);  // rows k wide, k + 2 S apart
    const Tensor w = bench.uniform({s.n, s.k}, -0.3, 0.3), b = bench.uniform({s.n}, -7, -2);
    const int64_t rows = s.batch * s.tokens;
    const double bytes = 4.0 * (rows * s.k + s.n * s.k + s.n + rows * s.n);
    const std::string sizes = fmt::format(" K={} N={}", s.k, s.n);
    bench.memory("softplus_linear fwd" + sizes, x.shape(), bytes, [&] { softplus_linear(x, w, b); });
    // The kernel alone, without the op's host work (on a GPU, whether the host keeps up).
    const Tensor x_rows = reshape(x, {rows, s.k}), y_rows = bench.empty({rows, s.n});
    bench.memory("softplus_linear kernel" + sizes, x.shape(), bytes,
                 [&] { softplus_linear_kernel.get(bench.device())(x_rows, w, b, y_rows); });
    bench.memory("linear+softplus fwd" + sizes, x.shape(), bytes, [&] { softplus(linear(x, w, b)); });
    // The backward's own pass, d_pre = dy (1 - exp(-y)), before linear's GEMMs.
    const Shape out = {rows, s.n};
    const Tensor y = bench.uniform(out, 0.001, 0.1), dy = bench.uniform(out), d_pre = bench.empty(out);
    bench.memory("softplus_grad" + sizes, out, bytes_of(out, 3),
                 [&] { softplus_grad_kernel.get(bench.device())(y, dy, d_pre); });
  }
}

// The measure of a row on its roof's scale: GB/s, TFLOP/s or Gexp/s.
double achieved(const Timing& t) {
  switch (t.roof) {
    case Roof::Copy: return t.bytes / (t.ms * 1e6);
    case Roof::Exp2: return t.exps / (t.ms * 1e6);
    default: return t.flops / (t.ms * 1e9);
  }
}

const char* roof_name(Roof roof) {
  switch (roof) {
    case Roof::Copy: return "copy";
    case Roof::Gemm: return "gemm";
    case Roof::Fp32Fma: return "fp32_fma";
    default: return "exp2";
  }
}

// Prints the table (each row against its ceiling) and returns the report.
// Rows that also count exponentials show, after the bandwidth, the time that
// their exponentials alone take at the probe's rate ("exp floor").
nlohmann::json report(const std::vector<Timing>& rows, Device device) {
  std::map<Roof, double> ceiling;
  for (const Timing& t : rows) {
    if (t.ceiling) ceiling[t.roof] = achieved(t);
  }
  nlohmann::json out = {{"device", device.str()},
                        {"ceiling_gbps", ceiling.at(Roof::Copy)},
                        {"ceiling_tflops", ceiling.at(Roof::Gemm)},
                        {"kernels", nlohmann::json::array()}};
  if (ceiling.count(Roof::Fp32Fma)) out["ceiling_fp32_fma_tflops"] = ceiling.at(Roof::Fp32Fma);
  if (ceiling.count(Roof::Exp2)) out["ceiling_gexp2_per_s"] = ceiling.at(Roof::Exp2);
  fmt::print("{:<30} {:<34} {:>10} {:>14} {:>9}  {}\n", "kernel", "shape", "ms", "achieved", "% ceiling", "of");
  for (const Timing& t : rows) {
    const double value = achieved(t), percent = 100 * value / ceiling.at(t.roof);
    const char* unit = t.roof == Roof::Copy ? "GB/s" : t.roof == Roof::Exp2 ? "Gexp/s" : "TF/s";
    fmt::print("{:<30} {:<34} {:>10.4f} {:>8.2f} {:<6} {:>7.1f}%  {}", t.kernel, t.shape, t.ms, value, unit, percent,
               roof_name(t.roof));
    nlohmann::json row = {{"kernel", t.kernel},
                          {"shape", t.shape},
                          {"ms", t.ms},
                          {t.roof == Roof::Copy ? "gbps" : t.roof == Roof::Exp2 ? "gexp2_per_s" : "tflops", value},
                          {"ceiling", roof_name(t.roof)},
                          {"percent_of_ceiling", percent}};
    if (t.roof == Roof::Copy && t.exps > 0 && ceiling.count(Roof::Exp2)) {
      const double floor_ms = t.exps / (ceiling.at(Roof::Exp2) * 1e6);
      fmt::print("   exp floor {:.4f} ms ({:.0f}% of the time)", floor_ms, 100 * floor_ms / t.ms);
      row["exp_floor_ms"] = floor_ms;
    }
    fmt::print("\n");
    out["kernels"].push_back(row);
  }
  return out;
}

int bench_main(int argc, char** argv) {
  Flags flags("bench_kernels [flags]",
              {{"device", "cpu, cuda or auto", "auto"},
               {"out", "results JSON", "bench_kernels.json"},
               {"repeats", "calls per timed round", "20"},
               {"only", "families after the ceilings: all, or some of gemm,mlp,core,scan,softplus_linear", "all"}});
  if (!flags.parse(argc, argv)) return 0;
  NoGradGuard no_grad;
  const int repeats = static_cast<int>(flags.get_int_at_least("repeats", 1));
  KernelBench bench(Device::parse(flags.get("device")), repeats);
  const std::vector<std::pair<std::string, void (*)(KernelBench&)>> families = {
      {"gemm", gemms}, {"mlp", fused_mlp}, {"core", core_ops}, {"scan", scans}, {"softplus_linear", softplus_linears}};
  std::vector<std::string> known = {"all"};
  for (const auto& family : families) known.push_back(family.first);
  const std::vector<std::string> only = split_list(flags.get("only"));
  check(!only.empty(), "--only '{}' names no family ({})", flags.get("only"), fmt::join(known, ", "));
  auto chosen = [&](const std::string& name) { return std::find(only.begin(), only.end(), name) != only.end(); };
  for (const std::string& name : only) {
    check(std::find(known.begin(), known.end(), name) != known.end(), "--only: unknown family '{}' ({})", name,
          fmt::join(known, ", "));
  }
  prepare_output_file("flag --out", flags.get("out"));
  ceilings(bench);
  for (const auto& [name, run] : families) {
    if (chosen("all") || chosen(name)) run(bench);
  }
  write_json_atomic(flags.get("out"), report(bench.rows(), bench.device()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run_tool("bench_kernels", bench_main, argc, argv); }
