#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops/elementwise/elementwise.h"
#include "engine/ops/index/index.h"
#include "engine/ops/reduce/reduce.h"
#include "engine/ops/view/view.h"
#include "engine/random.h"
#include "tests/expect_error.h"

namespace engine {
namespace {

using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

TEST(Tensor, CreationAndMetadata) {
  Tensor t = Tensor::full({2, 3}, 1.5);
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_EQ(t.strides(), (Shape{3, 1}));
  EXPECT_EQ(t.numel(), 6);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.to_floats(), std::vector<float>(6, 1.5f));
  EXPECT_EQ(t.describe(), "float32[2, 3] on cpu");
  EXPECT_THROW(Tensor().shape(), Error);
  EXPECT_THROW(t.data<double>(), Error);
}

// The test binary runs with set_poison_empty(true) (tests/test_main.cpp):
// fresh floating-point tensors hold NaN until written; zeros and full are
// written, and integer tensors are left alone.
// The stride of a size-1 dimension never matters: views that differ from a
// contiguous layout only there are contiguous, so that contiguous() and
// reshape keep sharing memory instead of copying.
TEST(Tensor, SizeOneDimensionsDoNotBreakContiguity) {
  Rng rng(2);
  const Tensor x = Tensor::uniform({3, 4}, rng, -1, 1);
  const Tensor odd_stride = make_view(x, {1, 3, 4}, {99, 4, 1}, 0);
  for (const Tensor& view : {unsqueeze(x, 1), unsqueeze(x, 2), narrow(x, 0, 1, 1), odd_stride}) {
    EXPECT_TRUE(view.is_contiguous()) << shape_str(view.shape()) << " strides " << shape_str(view.strides());
    EXPECT_EQ(view.contiguous().raw_data(), view.raw_data());
    EXPECT_EQ(reshape(view, {-1}).raw_data(), view.raw_data());
  }
  EXPECT_FALSE(transpose(x, 0, 1).is_contiguous());
}

TEST(Tensor, PoisonedEmptyTensorsHoldNaN) {
  ASSERT_TRUE(poison_empty());
  for (float v : Tensor::empty({5}).to_floats()) EXPECT_TRUE(std::isnan(v));
  for (double v : Tensor::empty({3}, DType::F64).to_doubles()) EXPECT_TRUE(std::isnan(v));
  EXPECT_EQ(Tensor::zeros({4}).to_floats(), std::vector<float>(4, 0.0f));
  EXPECT_EQ(Tensor::full({2}, 3.0, DType::BF16).to_floats(), std::vector<float>(2, 3.0f));
  EXPECT_EQ(Tensor::empty({0}).numel(), 0);
}

// Shapes: size() counts a negative dim from the end, and a dim out of range
// on either side is an error naming it and the shape.
TEST(Tensor, SizeCountsNegativeDimsFromTheEnd) {
  const Tensor t = Tensor::empty({2, 3, 4});
  EXPECT_EQ(t.size(0), 2);
  EXPECT_EQ(t.size(2), 4);
  EXPECT_EQ(t.size(-1), 4);
  EXPECT_EQ(t.size(-3), 2);
  for (int64_t d : {3, -4}) {
    testing::expect_error_mentioning([&] { t.size(d); }, {"dimension " + std::to_string(d), "[2, 3, 4]"});
  }
}

// A value count, element count or shape that does not fit is an error naming
// the shapes (and the op).
TEST(Tensor, ShapeMismatchesNameTheShapes) {
  testing::expect_error_mentioning([] { Tensor::from_vector<float>({1, 2, 3}, {2}); }, {"3 values", "[2]"});
  testing::expect_error_mentioning([] { Tensor::from_vector<float>({1}, {2}); }, {"1 values", "[2]"});
  testing::expect_error_mentioning([] { Tensor::from_vector<float>({1, 2}, {2}).item<float>(); }, {"item()", "[2]"});
  testing::expect_error_mentioning([] { check_same_shape(Tensor::empty({2, 3}), Tensor::empty({3, 2}), "my_op"); },
                                   {"my_op", "[2, 3]", "[3, 2]"});
}

// randn and uniform draw from the distribution asked for, not a default one.
TEST(Tensor, RandomTensorsFollowTheirDistribution) {
  Rng rng(3);
  const std::vector<double> u = Tensor::uniform({4000}, rng, 2.0, 3.0, DType::F64).to_doubles();
  const auto [u_min, u_max] = std::minmax_element(u.begin(), u.end());
  EXPECT_GE(*u_min, 2.0);
  EXPECT_LT(*u_min, 2.01);
  EXPECT_LT(*u_max, 3.0);
  EXPECT_GT(*u_max, 2.99);
  const std::vector<double> n = Tensor::randn({4000}, rng, DType::F64, 0.5).to_doubles();
  const double mean = std::accumulate(n.begin(), n.end(), 0.0) / n.size();
  double variance = 0;
  for (double v : n) variance += (v - mean) * (v - mean) / n.size();
  EXPECT_NEAR(mean, 0.0, 0.05);
  EXPECT_NEAR(std::sqrt(variance), 0.5, 0.05);
}

// A seed picks the stream: two Rngs of one seed draw the same numbers, of
// two seeds different ones; normal() is centred on its mean.
TEST(Rng, SeedsPickTheStream) {
  Rng a(7), b(7), c(8);
  for (int i = 0; i < 4; ++i) {
    const uint64_t from_a = a.next();
    EXPECT_EQ(b.next(), from_a);
    EXPECT_NE(c.next(), from_a);
  }
  double sum = 0;
  for (int i = 0; i < 2000; ++i) sum += a.normal(5.0, 0.5);
  EXPECT_NEAR(sum / 2000, 5.0, 0.05);
}

// A view of borrowed bytes (a memory-mapped file) starts at its offset, and
// must end within them.
TEST(Tensor, FromStorageViewsTheBytesFromItsOffset) {
  auto values = std::make_shared<std::vector<float>>(std::vector<float>{0.5f, 1.5f, -2.0f, 4.0f, 8.0f});
  auto storage = std::make_shared<Storage>(values->data(), values->size() * sizeof(float), Device::cpu(), values);
  const Tensor tail = Tensor::from_storage(storage, {2, 2}, DType::F32, 1);
  EXPECT_EQ(tail.to_floats(), (std::vector<float>{1.5f, -2.0f, 4.0f, 8.0f}));
  testing::expect_error_mentioning([&] { Tensor::from_storage(storage, {2, 2}, DType::F32, 2); },
                                   {"[2, 2]", "offset 2", "20 bytes"});
  testing::expect_error_mentioning([&] { Tensor::from_storage(storage, {2}, DType::F32, -1); },
                                   {"[2]", "offset -1", "20 bytes"});
}

// Each size-1 dim gets the stride of the dims after it as a contiguous layout
// would, counted from the last: [2, 1, 1, 3] -> 3, 3, 3, 1 whatever the view had.
TEST(Tensor, CanonicalUnitStridesAreThoseOfTheDimsAfter) {
  Rng rng(4);
  const Tensor x = Tensor::uniform({2, 3}, rng, -1, 1);
  const Tensor row = make_view(x, {2, 1, 1, 3}, {3, 99, 77, 1}, 0);
  EXPECT_EQ(with_canonical_unit_strides(row).strides(), (Shape{3, 3, 3, 1}));
  const Tensor column = make_view(x, {1, 3, 1}, {5, 1, 7}, 3);  // x's second row, as a column
  const Tensor canonical = with_canonical_unit_strides(column);
  EXPECT_EQ(canonical.strides(), (Shape{3, 1, 1}));
  EXPECT_EQ(canonical.to_floats(), column.to_floats());
  EXPECT_EQ(canonical.raw_data(), column.raw_data());
}

TEST(Tensor, DtypeConversionsRoundTrip) {
  Rng rng(1);
  Tensor x = Tensor::randn({64}, rng);
  std::vector<float> original = x.to_floats();
  std::vector<float> via_bf16 = x.to(DType::BF16).to(DType::F32).to_floats();
  std::vector<float> via_f16 = x.to(DType::F16).to(DType::F32).to_floats();
  std::vector<float> via_f64 = x.to(DType::F64).to(DType::F32).to_floats();
  // Round to nearest: within half a unit in the last place, at most |x| 2^-8
  // for bfloat16's 8 significant bits and |x| 2^-11 for half's 11 (plus half
  // of half's subnormal step, 2^-25). A whole unit (|x| / 128, |x| / 1024)
  // would also pass truncation.
  for (size_t i = 0; i < original.size(); ++i) {
    EXPECT_NEAR(via_bf16[i], original[i], std::abs(original[i]) / 256) << original[i];
    EXPECT_NEAR(via_f16[i], original[i], std::abs(original[i]) / 2048 + std::ldexp(1.0, -25)) << original[i];
    EXPECT_EQ(via_f64[i], original[i]);
  }
  EXPECT_EQ(Tensor::from_vector<float>({2.7f, -3.2f}, {2}).to(DType::I64).to_ints(),
            (std::vector<int64_t>{2, -3}));
}

TEST(Tensor, HalfPrecisionEdgeCases) {
  EXPECT_EQ(float_to_f16(65504.0f), 0x7BFF);            // largest half
  EXPECT_EQ(float_to_f16(1e6f), 0x7C00);                // overflow -> inf
  EXPECT_EQ(f16_to_float(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(f16_to_float(float_to_f16(-2.5f)), -2.5f);
}

// The dtype table: each dtype's element size is its C++ type's, and its
// names are those messages and safetensors files use.
TEST(Dtype, SizesAndNamesOfEveryDtype) {
  const std::vector<std::tuple<DType, const char*, const char*, bool>> table = {
      {DType::F32, "float32", "F32", true},    {DType::F64, "float64", "F64", true},
      {DType::BF16, "bfloat16", "BF16", true}, {DType::F16, "float16", "F16", true},
      {DType::I32, "int32", "I32", false},     {DType::I64, "int64", "I64", false},
      {DType::U8, "uint8", "U8", false}};
  for (const auto& [dtype, name, file_name, floating] : table) {
    dispatch_any(dtype, [&, dtype = dtype, name = name](auto zero) {
      EXPECT_EQ(DTypeOf<decltype(zero)>::value, dtype) << name;
      EXPECT_EQ(dtype_size(dtype), sizeof(zero)) << name;
    });
    EXPECT_STREQ(dtype_name(dtype), name);
    EXPECT_STREQ(safetensors_dtype_name(dtype), file_name);
    EXPECT_EQ(is_floating(dtype), floating) << name;
    DType parsed = dtype == DType::U8 ? DType::F32 : DType::U8;
    EXPECT_TRUE(parse_safetensors_dtype(file_name, &parsed)) << file_name;
    EXPECT_EQ(parsed, dtype) << file_name;
  }
  DType untouched = DType::F32;
  for (const char* unknown : {"F3", "F32x", "f32", "BF", "F8", ""}) {
    EXPECT_FALSE(parse_safetensors_dtype(unknown, &untouched)) << unknown;
  }
  EXPECT_EQ(untouched, DType::F32);
}

// Halfway between two neighbours, both 16-bit formats round to the even one,
// half's subnormals (multiples of 2^-24) too; the sign of a subnormal stays.
TEST(Tensor, SixteenBitFloatsRoundTiesToEven) {
  const auto times_2_to = [](double n, int exponent) { return static_cast<float>(std::ldexp(n, exponent)); };
  EXPECT_EQ(float_to_bf16(1 + times_2_to(1, -8)), 0x3F80);  // bfloat16's unit at 1 is 2^-7: down to even
  EXPECT_EQ(float_to_bf16(1 + times_2_to(3, -8)), 0x3F82);  // up to even
  EXPECT_EQ(float_to_bf16(1 + times_2_to(3, -9)), 0x3F81);  // past halfway: up
  EXPECT_EQ(float_to_f16(1 + times_2_to(1, -11)), 0x3C00);  // half's unit at 1 is 2^-10
  EXPECT_EQ(float_to_f16(1 + times_2_to(3, -11)), 0x3C02);
  EXPECT_EQ(float_to_f16(times_2_to(1.5, -24)), 0x0002);    // subnormal ties
  EXPECT_EQ(float_to_f16(times_2_to(2.5, -24)), 0x0002);
  EXPECT_EQ(float_to_f16(times_2_to(-3, -16)), 0x8300);     // 3/4 of the smallest normal, 2^-14
  EXPECT_EQ(f16_to_float(0x8300), times_2_to(-3, -16));
  EXPECT_EQ(float_to_f16(65519.0f), 0x7BFF);          // below halfway to 2^16: the largest half
  EXPECT_EQ(float_to_f16(65520.0f), 0x7C00);          // halfway: to even, which is infinity
}

// NaN stays NaN, whichever of its bits are set (bfloat16 drops the low 16,
// and rounding must not carry a full mantissa into the exponent or sign);
// infinities stay infinite.
TEST(Tensor, SixteenBitFloatsKeepNaNAndInfinity) {
  for (uint32_t bits : {0x7F800001u, 0x7FFFFFFFu, 0xFFFFFFFFu, 0x7FC00000u}) {
    float nan;
    std::memcpy(&nan, &bits, sizeof nan);
    EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(nan)))) << std::hex << bits;
    EXPECT_TRUE(std::isnan(f16_to_float(float_to_f16(nan)))) << std::hex << bits;
  }
  EXPECT_TRUE(std::isnan(f16_to_float(0x7E00)));
  EXPECT_TRUE(std::isnan(f16_to_float(0x7C01)));
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(float_to_bf16(-inf), 0xFF80);
  EXPECT_EQ(float_to_f16(-inf), 0xFC00);
  EXPECT_EQ(f16_to_float(0xFC00), -inf);
}

TEST(Device, ParseAndErrors) {
  EXPECT_TRUE(Device::parse("cpu").is_cpu());
  Device automatic = Device::parse("auto");
  EXPECT_EQ(automatic.is_cuda(), cuda_device_count() > 0);
  if (cuda_device_count() == 0) {
    EXPECT_THROW(Device::parse("cuda"), Error);
  }
  testing::expect_error_mentioning([] { Device::parse("tpu"); }, {"unknown device 'tpu'"});
  testing::expect_error_mentioning([] { Device::parse("xcuda:0"); }, {"unknown device 'xcuda:0'"});
  EXPECT_EQ(Device::cuda(1).str(), "cuda:1");
  EXPECT_EQ(fmt::format("{}", Device::cpu()), "cpu");
}

// Host tensors start on a 64-byte boundary (AVX-512 loads, whole cache
// lines), whatever their size; all are live at once, so no two share a block.
TEST(Device, HostMemoryIsAlignedTo64Bytes) {
  std::vector<Tensor> tensors;
  for (int64_t n = 1; n < (1 << 22); n = n * 3 + 1) tensors.push_back(Tensor::empty({n}, DType::U8));
  for (const Tensor& t : tensors) EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u) << t.numel();
}

// On the CPU, run_branches runs the first piece of work, then the second;
// device_time_ms runs its work once.
TEST(Device, CpuRunsBranchesInOrderAndTimesOneRun) {
  std::string order;
  run_branches(Device::cpu(), [&] { order += "first "; }, [&] { order += "second"; });
  EXPECT_EQ(order, "first second");
  int runs = 0;
  EXPECT_GE(device_time_ms(Device::cpu(), [&] { ++runs; }), 0.0);
  EXPECT_EQ(runs, 1);
}

TEST(Autograd, NoGradScopeRecordsNothing) {
  Tensor x = Tensor::ones({3}).set_requires_grad();
  {
    NoGradGuard guard;
    Tensor y = x * 2.0;
    EXPECT_FALSE(y.requires_grad());
    { NoGradGuard nested; }
    EXPECT_FALSE((x * 2.0).requires_grad()) << "a nested scope's end turned grad mode back on";
  }
  Tensor y = x * 2.0;
  EXPECT_TRUE(y.requires_grad());
  EXPECT_FALSE(y.detach().requires_grad());
}

// Both forms (ops use the pointer list to decide what to save for backward):
// undefined inputs (an absent bias) and constants do not count.
TEST(Autograd, NeedsGradWhenAnInputRequiresGradInGradMode) {
  const Tensor w = Tensor::ones({2}).set_requires_grad();
  const Tensor constant = Tensor::ones({2});
  const Tensor absent;
  EXPECT_TRUE(needs_grad({&absent, &constant, &w}));
  EXPECT_TRUE(needs_grad(std::vector<Tensor>{absent, constant, w}));
  EXPECT_FALSE(needs_grad({&absent, &constant}));
  EXPECT_FALSE(needs_grad(std::vector<Tensor>{absent, constant}));
  NoGradGuard guard;
  EXPECT_FALSE(needs_grad({&w}));
  EXPECT_FALSE(needs_grad(std::vector<Tensor>{w}));
}

// Only tensors that require grad get one: a constant operand gets none.
TEST(Autograd, ConstantsGetNoGradient) {
  Tensor x = Tensor::from_vector<double>({1, 2}, {2}).set_requires_grad();
  const Tensor constant = Tensor::from_vector<double>({3, -4}, {2});
  sum(x * constant).backward();
  EXPECT_EQ(x.grad().to_doubles(), (std::vector<double>{3, -4}));
  EXPECT_FALSE(constant.grad().defined());
}

TEST(Autograd, GradientsAccumulateAcrossBackwardCalls) {
  Tensor x = Tensor::from_vector<double>({1, 2}, {2}).set_requires_grad();
  sum(x * x).backward();
  sum(x * 3.0).backward();
  EXPECT_EQ(x.grad().to_doubles(), (std::vector<double>{2 + 3, 4 + 3}));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

// Leaves' gradients are buffers of their own even where the backward hands
// one tensor to several inputs (add: the same gradient for both) or keeps it
// (the seed): the optimizer updates them in place.
TEST(Autograd, LeafGradientsAreBuffersOfTheirOwn) {
  Tensor a = Tensor::from_vector<float>({1, 2}, {2}).set_requires_grad();
  Tensor b = Tensor::from_vector<float>({3, 4}, {2}).set_requires_grad();
  Tensor c = Tensor::from_vector<float>({5, 6}, {2}).set_requires_grad();
  const Tensor seed = Tensor::from_vector<float>({1, 10}, {2});
  (a + b + c * 2.0).backward(seed);
  EXPECT_FALSE(a.grad().same_storage(b.grad()));
  EXPECT_FALSE(a.grad().same_storage(seed));
  a.grad().data<float>()[0] = 100.0f;
  EXPECT_EQ(b.grad().to_floats(), (std::vector<float>{1, 10}));
  EXPECT_EQ(seed.to_floats(), (std::vector<float>{1, 10}));
  EXPECT_EQ(c.grad().to_floats(), (std::vector<float>{2, 20}));
}

// A dtype conversion's gradient goes back in the source dtype: a float32 leaf
// used in float64 maths gets a float32 gradient (the optimizer updates it in
// the parameter's own dtype), the two uses' gradients added up.
TEST(Autograd, DtypeConversionGradientHasTheSourceDtype) {
  Tensor x = Tensor::from_vector<float>({1.5f, -2.0f, 0.25f}, {3}).set_requires_grad();
  const Tensor w = Tensor::from_vector<double>({2.0, -3.0, 0.5}, {3});
  sum(x.to(DType::F64) * x.to(DType::F64) * w).backward();  // d/dx = 2 x w
  ASSERT_EQ(x.grad().dtype(), DType::F32);
  EXPECT_EQ(x.grad().to_doubles(), (std::vector<double>{6.0, 12.0, 0.25}));
}

// An op whose backward returns a gradient in another dtype than its input's
// is stopped where the gradient reaches the leaf, naming the leaf; and a seed
// must have its root's dtype.
TEST(Autograd, GradientsOfAnotherDtypeAreRefused) {
  Tensor w = Tensor::from_vector<float>({0.5f, -1.0f}, {2}).set_requires_grad();
  w.set_name("w");
  Tensor y = w.detach().clone();
  record("wrong_dtype_backward", y, {w}, [](const Tensor& grad) { return std::vector<Tensor>{grad.to(DType::F64)}; });
  EXPECT_THAT([&] { sum(y).backward(); }, ThrowsMessage<Error>(HasSubstr("float64 gradient for float32 leaf 'w'")));
  EXPECT_THAT([&] { w.backward(Tensor::ones({2}, DType::F64)); },
              ThrowsMessage<Error>(HasSubstr("backward seed: float64, for a float32 tensor")));
}

// Only floating-point leaves can become parameters.
TEST(Autograd, RequiresGradNeedsAFloatingPointLeaf) {
  testing::expect_error_mentioning([] { Tensor::arange(3).set_requires_grad(); }, {"int64"});
  Tensor x = Tensor::ones({2}).set_requires_grad();
  Tensor y = x * 2.0;
  testing::expect_error_mentioning([&] { y.set_requires_grad(); }, {"non-leaf"});
}

// A tensor used twice: its op's backward runs once, with both uses' gradients
// summed, after both uses' backwards.
TEST(Autograd, EachBackwardRunsOnceWithTheSummedGradient) {
  Tensor x = Tensor::from_vector<double>({1, 2}, {2}).set_requires_grad();
  Tensor y = x.detach().clone();
  std::vector<std::vector<double>> seen;
  record("counted", y, {x}, [&seen](const Tensor& grad) {
    seen.push_back(grad.to_doubles());
    return std::vector<Tensor>{grad * 10.0};
  });
  sum(y * 2.0 + y * Tensor::from_vector<double>({3, -1}, {2})).backward();
  EXPECT_EQ(seen, (std::vector<std::vector<double>>{{5, 1}}));
  EXPECT_EQ(x.grad().to_doubles(), (std::vector<double>{50, 10}));
}

// An op may give no gradient for an input (an undefined Tensor); the pass
// goes on with the other branches, whatever their order.
TEST(Autograd, AnInputWithoutGradientDoesNotStopThePass) {
  for (size_t blocked : {0, 1}) {
    SCOPED_TRACE(blocked);
    Tensor x = Tensor::from_vector<double>({1, 2}, {2}).set_requires_grad();
    const Tensor doubled = x * 2.0, tripled = x * 3.0;
    Tensor y = doubled.detach().clone();
    record("one_sided", y, {doubled, tripled}, [blocked](const Tensor& grad) {
      std::vector<Tensor> grads{grad, grad};
      grads[blocked] = Tensor();
      return grads;
    });
    sum(y).backward();
    const double expected = blocked == 0 ? 3 : 2;
    EXPECT_EQ(x.grad().to_doubles(), (std::vector<double>{expected, expected}));
  }
}

// A piece of a split as the root: the seed is that piece's gradient.
TEST(Autograd, BackwardFromOneOutputOfAMultiOutputOp) {
  Tensor x = Tensor::from_vector<double>({1, 2, 3}, {3}).set_requires_grad();
  const std::vector<Tensor> pieces = split(x, {1, 2}, 0);
  pieces[1].backward(Tensor::from_vector<double>({5, 7}, {2}));
  EXPECT_EQ(x.grad().to_doubles(), (std::vector<double>{0, 5, 7}));
}

// A leaf as the root: its gradient is the seed, in a buffer of its own.
TEST(Autograd, BackwardOfALeafIsTheSeed) {
  Tensor x = Tensor::from_vector<float>({1, 2}, {2}).set_requires_grad();
  const Tensor seed = Tensor::from_vector<float>({3, -4}, {2});
  x.backward(seed);
  EXPECT_EQ(x.grad().to_floats(), (std::vector<float>{3, -4}));
  EXPECT_FALSE(x.grad().same_storage(seed));
}

// The backward pass records nothing: gradients are plain tensors, even where
// they were computed from tensors that require grad (x's from w) and summed
// over two passes.
TEST(Autograd, GradientsHaveNoHistory) {
  Tensor x = Tensor::from_vector<double>({1, 2}, {2}).set_requires_grad();
  Tensor w = Tensor::from_vector<double>({3, 4}, {2}).set_requires_grad();
  sum(x * w).backward();
  sum(x * w).backward();
  EXPECT_EQ(x.grad().to_doubles(), (std::vector<double>{6, 8}));
  EXPECT_FALSE(x.grad().requires_grad());
  EXPECT_FALSE(x.grad().grad_fn());
}

// Leaves' gradients are contiguous buffers of exactly their size, sharing
// memory with nothing: not a view of the caller's seed (reshape's backward),
// nor a transposed or narrowed view of a temporary.
TEST(Autograd, LeafGradientsAreCompactContiguousBuffers) {
  Tensor x = Tensor::from_vector<float>({1, 2, 3, 4}, {4}).set_requires_grad();
  const Tensor seed = Tensor::from_vector<float>({1, 2, 3, 4}, {2, 2});
  reshape(x, {2, 2}).backward(seed);
  EXPECT_FALSE(x.grad().same_storage(seed));

  const std::vector<std::function<Tensor()>> views_of_temporaries{
      [] { return transpose(Tensor::from_vector<float>({1, 2, 3, 4}, {2, 2}), 0, 1); },
      [] { return narrow(Tensor::from_vector<float>({1, 3, 2, 4, 5, 6}, {3, 2}), 0, 0, 2); }};
  for (const auto& view : views_of_temporaries) {
    Tensor w = Tensor::zeros({2, 2}).set_requires_grad();
    Tensor y = w.detach().clone();
    record("view_of_temporary", y, {w}, [&view](const Tensor&) { return std::vector<Tensor>{view()}; });
    sum(y).backward();
    EXPECT_EQ(w.grad().to_floats(), (std::vector<float>{1, 3, 2, 4}));
    EXPECT_TRUE(w.grad().is_contiguous());
    EXPECT_EQ(w.grad().storage()->nbytes(), w.grad().nbytes());
  }
}

// Misuse is caught where it happens, naming what is wrong: a root that
// requires no grad, a seed of another shape, an op's backward that returns a
// gradient of another shape than its input's or too many gradients.
TEST(Autograd, BadBackwardsAreRefused) {
  const Tensor constant = Tensor::ones({1});
  testing::expect_error_mentioning([&] { constant.backward(); }, {"does not require grad"});
  EXPECT_FALSE(constant.grad().defined());

  Tensor w = Tensor::from_vector<float>({0.5f, -1.0f}, {2}).set_requires_grad();
  w.set_name("w");
  testing::expect_error_mentioning([&] { (w * 2.0).backward(Tensor::ones({3})); }, {"backward seed", "[3]", "[2]"});
  testing::expect_error_mentioning([&] { w.backward(Tensor::ones({1, 2})); }, {"backward seed", "[1, 2]"});

  Tensor wrong_shape = w.detach().clone();
  record("wrong_shape_backward", wrong_shape, {w},
         [](const Tensor&) { return std::vector<Tensor>{Tensor::ones({3})}; });
  testing::expect_error_mentioning([&] { sum(wrong_shape).backward(); }, {"gradient [3]", "leaf 'w' of shape [2]"});

  Tensor too_many = w.detach().clone();
  record("too_many_gradients", too_many, {w}, [](const Tensor& grad) { return std::vector<Tensor>{grad, grad}; });
  testing::expect_error_mentioning([&] { sum(too_many).backward(); },
                                   {"op 'too_many_gradients' returned 2 gradients for 1 inputs"});
  EXPECT_FALSE(w.grad().defined());
}

TEST(Autograd, BackwardOfNonScalarNeedsSeed) {
  Tensor x = Tensor::ones({2}).set_requires_grad();
  Tensor y = x * 2.0;
  EXPECT_THROW(y.backward(), Error);
  y.backward(Tensor::from_vector<float>({1, 10}, {2}));
  EXPECT_EQ(x.grad().to_floats(), (std::vector<float>{2, 20}));
}

}  // namespace
}  // namespace engine
