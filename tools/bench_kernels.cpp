// ./bench_kernels [--device cuda|cpu] [--out FILE.json] [--repeats N]
// The kernel audit: for each kernel, its shape, the median time over repeated
// runs (after warm-up), the achieved GB/s counted as the fewest bytes it must
// move (every input read once, every output written once), and that as a
// percentage of the ceiling measured first with a large device-to-device copy.
// Covers the scan family today; the other families join with the CUDA issue.
#include <functional>

#include "engine/autograd.h"
#include "engine/bench_timing.h"
#include "engine/cli.h"
#include "engine/ops/scan/scan_kernels.h"
#include "engine/random.h"
#include "train/metrics.h"

using namespace engine;

namespace {

struct Timing {
  std::string kernel, shape;
  double ms = 0, bytes = 0;
};

int bench_main(int argc, char** argv) {
  Flags flags("bench_kernels [flags]", {{"device", "cpu, cuda or auto", "auto"},
                                        {"out", "results JSON", "bench_kernels.json"},
                                        {"repeats", "calls per timed round", "20"}});
  if (!flags.parse(argc, argv)) return 0;
  const Device device = Device::parse(flags.get("device"));
  const int repeats = static_cast<int>(flags.get_int("repeats"));
  NoGradGuard no_grad;
  Rng rng(0);
  auto uniform_on = [&](const Shape& shape, double low, double high) {
    return Tensor::uniform(shape, rng, low, high).to(device);
  };
  std::vector<Timing> rows;

  // Ceiling: a 1 GiB device-to-device copy (bytes read + bytes written).
  const int64_t copy_elements = device.is_cuda() ? (int64_t{1} << 28) : (int64_t{1} << 25);
  Tensor src = Tensor::full({copy_elements}, 1.5, DType::F32, device);
  Tensor dst = Tensor::empty({copy_elements}, DType::F32, device);
  const double copy_ms = median_time_ms(device, [&] {
    device_copy(dst.raw_data(), device, src.raw_data(), device, src.nbytes());
  }, repeats);
  const double ceiling = 2.0 * src.nbytes() / (copy_ms * 1e6);
  rows.push_back({"device copy (ceiling)", shape_str(src.shape()), copy_ms, 2.0 * src.nbytes()});

  // Linear recurrence at a ViT-B-sized gated_rnn: [B, L, C] = [128, 197, 768].
  const int64_t B = 128, L = 197, C = 768, S = 16, CS = 384;
  auto empty = [&](const Shape& shape) { return Tensor::empty(shape, DType::F32, device); };
  Tensor a = uniform_on({B, L, C}, 0.5, 0.99);
  Tensor b = uniform_on({B, L, C}, -1, 1);
  Tensor g = uniform_on({B, L, C}, -1, 1);
  Tensor h = empty({B, L, C}), da = empty({B, L, C}), db = empty({B, L, C});
  const double n = static_cast<double>(B * L * C) * 4;
  for (bool reverse : {false, true}) {
    const std::string dir = reverse ? " (reverse)" : "";
    rows.push_back({"linear_scan fwd" + dir, shape_str(a.shape()),
                    median_time_ms(device, [&] { linear_scan_kernel.get(device)(a, b, h, reverse); }, repeats), 3 * n});
    rows.push_back({"linear_scan bwd" + dir, shape_str(a.shape()),
                    median_time_ms(device, [&] { linear_scan_backward_kernel.get(device)(a, h, g, da, db, reverse); }, repeats),
                    5 * n});
  }

  // Selective scan at a ViT-S-sized Mamba: x [128, 197, 384], state 16.
  SelectiveScanInputs in{uniform_on({B, L, CS}, -1, 1), uniform_on({B, L, CS}, 0.001, 0.1), uniform_on({CS, S}, -4, -0.5),
                         uniform_on({B, L, S}, -1, 1),  uniform_on({B, L, S}, -1, 1),     uniform_on({CS}, -1, 1)};
  Tensor y = empty({B, L, CS});
  Tensor dy = uniform_on({B, L, CS}, -1, 1);
  SelectiveScanGrads grads{empty({B, L, CS}), empty({B, L, CS}), empty({CS, S}),
                           empty({B, L, S}),  empty({B, L, S}),  empty({CS})};
  const double xc = static_cast<double>(B * L * CS) * 4, xs = static_cast<double>(B * L * S) * 4;
  rows.push_back({"selective_scan fwd", shape_str(in.x.shape()) + " S=16",
                  median_time_ms(device, [&] { selective_scan_kernel.get(device)(in, y, false); }, repeats), 3 * xc + 2 * xs});
  rows.push_back({"selective_scan bwd", shape_str(in.x.shape()) + " S=16",
                  median_time_ms(device, [&] { selective_scan_backward_kernel.get(device)(in, dy, grads, false); }, repeats),
                  5 * xc + 4 * xs});

  // Depthwise causal conv (Mamba's), kernel 4.
  Tensor w = uniform_on({CS, 4}, -1, 1);
  Tensor bias = uniform_on({CS}, -1, 1);
  rows.push_back({"depthwise_conv1d fwd", shape_str(in.x.shape()) + " K=4",
                  median_time_ms(device, [&] { depthwise_conv1d_kernel.get(device)(in.x, w, bias, y, 3, false); }, repeats),
                  2 * xc});

  Tensor dx = empty({B, L, CS}), dw = empty({CS, 4}), dbias = empty({CS});
  rows.push_back({"depthwise_conv1d bwd", shape_str(in.x.shape()) + " K=4",
                  median_time_ms(device, [&] {
                    depthwise_conv1d_backward_kernel.get(device)(in.x, w, dy, dx, dw, dbias, 3, false);
                  }, repeats),
                  3 * xc});

  nlohmann::json report = {{"device", device.str()}, {"ceiling_gbps", ceiling}, {"kernels", nlohmann::json::array()}};
  fmt::print("{:<28} {:<26} {:>10} {:>10} {:>8}\n", "kernel", "shape", "ms", "GB/s", "% copy");
  for (const Timing& t : rows) {
    const double gbps = t.bytes / (t.ms * 1e6);
    fmt::print("{:<28} {:<26} {:>10.4f} {:>10.1f} {:>7.1f}%\n", t.kernel, t.shape, t.ms, gbps, 100 * gbps / ceiling);
    report["kernels"].push_back(
        {{"kernel", t.kernel}, {"shape", t.shape}, {"ms", t.ms}, {"gbps", gbps}, {"percent_of_copy", 100 * gbps / ceiling}});
  }
  write_json_atomic(flags.get("out"), report);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run_tool("bench_kernels", bench_main, argc, argv); }
