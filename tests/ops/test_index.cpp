#include "engine/autograd.h"
#include "engine/ops/index/index.h"
#include "engine/ops/view/view.h"
#include "tests/ops/op_test.h"

namespace engine {
namespace {

Tensor arange_float(const Shape& shape) { return reshape(Tensor::arange(shape_numel(shape), DType::F32), shape); }

Tensor indices(const std::vector<int64_t>& values, const Shape& shape) { return Tensor::from_vector(values, shape); }

Tensor random_indices(const Shape& shape, int64_t bound, Rng& rng) {
  std::vector<int64_t> values(shape_numel(shape));
  for (int64_t& v : values) v = rng.integer(bound);
  return indices(values, shape);
}

Tensor mask(const std::vector<uint8_t>& values, const Shape& shape) { return Tensor::from_vector(values, shape); }

// Reference gathers over 3-D tensors: out[p] = x[p with p[dim] = source(p)].
template <typename Source>
Tensor naive_gather_3d(const Tensor& x, int64_t dim, const Shape& out_shape, Source&& source) {
  const std::vector<float> xs = x.to_floats();
  std::vector<float> out;
  for (int64_t a = 0; a < out_shape[0]; ++a)
    for (int64_t b = 0; b < out_shape[1]; ++b)
      for (int64_t c = 0; c < out_shape[2]; ++c) {
        int64_t p[3] = {a, b, c};
        const int64_t flat = (a * out_shape[1] + b) * out_shape[2] + c;
        p[dim] = source(p[dim], flat);
        out.push_back(xs[(p[0] * x.size(1) + p[1]) * x.size(2) + p[2]]);
      }
  return Tensor::from_vector(out, out_shape);
}

TEST(Index, IndexSelectMatchesNaiveLoops) {
  Tensor x = arange_float({3, 4, 5});
  const std::vector<int64_t> picks = {2, 0, 2};  // a duplicate
  for (const Tensor& input : {x, transpose(x, 0, 2)}) {  // contiguous and not
    for (int64_t dim = 0; dim < 3; ++dim) {
      Shape shape = input.shape();
      shape[dim] = 3;
      expect_close(index_select(input, dim, indices(picks, {3})),
                   naive_gather_3d(input, dim, shape, [&](int64_t k, int64_t) { return picks[k]; }), 0);
    }
  }
}

TEST(Index, GatherMatchesNaiveLoops) {
  Rng rng(11);
  Tensor x = arange_float({3, 4, 5});
  for (const Tensor& input : {x, transpose(x, 1, 2)}) {
    for (int64_t dim = 0; dim < 3; ++dim) {
      Shape shape = {2, 3, 4};
      shape[dim] = 6;  // larger than the input along dim, smaller elsewhere
      Tensor index = random_indices(shape, input.size(dim), rng);
      const std::vector<int64_t> values = index.to_ints();
      expect_close(gather(input, dim, index),
                   naive_gather_3d(input, dim, shape, [&](int64_t, int64_t flat) { return values[flat]; }), 0);
    }
  }
}

TEST(Index, IndexSelectAndGatherGradients) {
  Rng rng(12);
  Tensor x = random_leaf({3, 4, 5}, rng);
  Tensor picks = indices({1, 2, 1, 0, 1}, {5});  // duplicates must accumulate
  for (int64_t dim = 0; dim < 3; ++dim) {
    expect_gradients_match([&](const auto& in) { return index_select(in[0], dim, picks); }, {x});
    Shape shape = {2, 3, 4};
    shape[dim] = 6;  // more draws along dim than x has positions: duplicates for sure
    Tensor index = random_indices(shape, x.size(dim), rng);
    expect_gradients_match([&](const auto& in) { return gather(in[0], dim, index); }, {x});
  }
  Tensor t_index = random_indices({4, 3, 7}, 3, rng);
  expect_gradients_match([&](const auto& in) { return gather(transpose(in[0], 0, 1), 2, t_index); }, {x});
  expect_gradients_match([&](const auto& in) { return index_select(narrow(in[0], 2, 1, 3), 2, picks); }, {x});
}

TEST(Index, OutOfRangeIndicesAreErrors) {
  Tensor x = arange_float({3, 4});
  expect_error_mentioning([&] { index_select(x, 1, indices({0, 7}, {2})); }, {"index 7", "size 4"});
  expect_error_mentioning([&] { index_select(x, 0, indices({-1}, {1})); }, {"index -1", "size 3"});
  expect_error_mentioning([&] { gather(x, 0, indices({0, 3}, {1, 2})); }, {"index 3", "size 3"});
  expect_error_mentioning([&] { gather(x, 0, indices({0, 0, 0, 0, 0}, {1, 5})); }, {"[1, 5]", "[3, 4]"});
  EXPECT_THROW(index_select(x, 0, Tensor::zeros({1}, DType::F32)), Error);  // not int64
}

TEST(Index, DeviceIndexSelectsAsItsHostIndexForEveryTensor) {
  Rng rng(13);
  const Tensor host = indices({4, 0, 4, 2}, {4});  // a duplicate
  const DeviceIndex index(host, Device::cpu());
  EXPECT_EQ(index.bound(), 5);
  Tensor x = random_leaf({6, 3}, rng), rows = random_leaf({5}, rng);
  expect_close(index_select(x, 0, index), index_select(x, 0, host), 0);
  expect_close(index_select(rows, 0, index), index_select(rows, 0, host), 0);
  expect_close(index_select(transpose(x, 0, 1), 1, index), index_select(transpose(x, 0, 1), 1, host), 0);
  expect_gradients_match([&](const auto& in) { return index_select(in[0], 0, index); }, {x});
}

TEST(Index, DeviceIndexErrors) {
  expect_error_mentioning([] { DeviceIndex(indices({1, -2}, {2}), Device::cpu()); }, {"negative entry -2"});
  expect_error_mentioning([] { DeviceIndex(Tensor::zeros({2}, DType::F32), Device::cpu()); }, {"int64"});
  const DeviceIndex index(indices({0, 4}, {2}), Device::cpu());
  expect_error_mentioning([&] { index_select(arange_float({3, 4}), 0, index); }, {"index 4", "size 3"});
  expect_error_mentioning([] { index_select(arange_float({3}), 0, DeviceIndex()); }, {"undefined DeviceIndex"});
  expect_error_mentioning([] { DeviceIndex(indices({0, 1, 2, 3}, {2, 2}), Device::cpu()); }, {"1-D int64"});
  // A copy: changing the caller's index later cannot reach past the checked bound.
  Tensor host = indices({0, 1}, {2});
  const DeviceIndex copied(host, Device::cpu());
  host.data<int64_t>()[1] = 9;
  expect_close(index_select(arange_float({3}), 0, copied), arange_float({2}), 0);
}

TEST(Index, ConcatAndSplitValues) {
  Tensor a = arange_float({2, 3});
  Tensor b = add(arange_float({2, 1}), 10.0);
  Tensor c = add(arange_float({2, 2}), 20.0);
  Tensor joined = concat({a, b, c}, 1);
  EXPECT_EQ(joined.to_floats(), (std::vector<float>{0, 1, 2, 10, 20, 21, 3, 4, 5, 11, 22, 23}));
  EXPECT_EQ(concat({a, transpose(arange_float({3, 1}), 0, 1)}, 0).to_floats(),
            (std::vector<float>{0, 1, 2, 3, 4, 5, 0, 1, 2}));
  std::vector<Tensor> pieces = split(joined, {3, 1, 2}, -1);
  ASSERT_EQ(pieces.size(), 3u);
  expect_close(pieces[0], a, 0);
  expect_close(pieces[1], b, 0);
  expect_close(pieces[2], c, 0);
  EXPECT_TRUE(pieces[2].same_storage(joined));  // views, not copies
}

TEST(Index, ConcatAndSplitGradients) {
  Rng rng(13);
  Tensor a = random_leaf({2, 3, 4}, rng);
  Tensor b = random_leaf({2, 4, 2}, rng);  // enters transposed: non-contiguous
  Tensor c = random_leaf({2, 1, 4}, rng);
  expect_gradients_match([](const auto& in) { return concat({in[0], transpose(in[1], 1, 2), in[2]}, 1); },
                         {a, b, c});
  // The middle piece is unused: its part of the gradient must be zero.
  expect_gradients_match(
      [](const auto& in) {
        std::vector<Tensor> p = split(in[0], {1, 2, 1}, 2);
        return concat({p[2], p[0] * p[0]}, 2);
      },
      {a});
}

// split records one node for all its pieces (autograd's several-output
// path): each piece keeps its index through later views, and a piece used
// twice sums its gradients before the node writes them into one buffer.
TEST(Index, SplitIsOneNodeWhosePiecesKeepTheirIndex) {
  Rng rng(17);
  Tensor a = random_leaf({2, 3, 6}, rng);
  expect_gradients_match(
      [](const auto& in) {
        std::vector<Tensor> p = split(in[0] * 2.0, {1, 3, 2}, 2);  // from a non-leaf
        return concat({p[1] * p[0], reshape(transpose(p[2], 1, 2), {2, 3, 2}), p[0]}, 2);
      },
      {a});
  std::vector<Tensor> p = split(a * 1.0, {1, 3, 2}, 2);
  ASSERT_TRUE(p[0].grad_fn());
  EXPECT_EQ(p[0].grad_fn(), p[2].grad_fn());
  EXPECT_EQ(p[0].grad_fn()->name, "split");
  EXPECT_EQ(p[0].grad_fn()->outputs, 3);
  EXPECT_EQ(p[2].impl()->grad_output, 2);
}

TEST(Index, ConcatAndSplitShapeErrors) {
  Tensor x = arange_float({2, 5});
  expect_error_mentioning([&] { split(x, {2, 2}, 1); }, {"[2, 2]", "size 5"});
  expect_error_mentioning([&] { split(x, {6, -1}, 1); }, {"[6, -1]"});
  expect_error_mentioning([&] { concat({x, arange_float({3, 4})}, 0); }, {"[2, 5]", "[3, 4]"});
  EXPECT_THROW(concat({}, 0), Error);
}

TEST(Index, WhereBroadcastsLikeNaiveLoops) {
  Tensor condition = mask({1, 0, 1}, {3, 1});
  Tensor a = arange_float({1, 4});
  Tensor b = add(arange_float({3, 4}), 100.0);
  std::vector<float> expected;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) expected.push_back(i != 1 ? j : 100 + i * 4 + j);
  EXPECT_EQ(where(condition, a, b).to_floats(), expected);
  EXPECT_THROW(where(Tensor::ones({3, 1}, DType::F32), a, b), Error);  // condition must be uint8
}

TEST(Index, MaskedFillMatchesNaiveLoops) {
  Tensor x = arange_float({3, 4});
  Tensor m = mask({0, 1, 1, 0}, {4});
  std::vector<float> expected;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) expected.push_back(j == 1 || j == 2 ? -5.0f : i * 4 + j);
  EXPECT_EQ(masked_fill(x, m, -5.0).to_floats(), expected);
  expect_error_mentioning([&] { masked_fill(x, mask({1, 0}, {2, 1, 1}), 0.0); }, {"[2, 1, 1]", "[3, 4]"});
}

struct WhereCase {
  Shape condition, a, b;
};

class IndexWhereGrad : public ::testing::TestWithParam<WhereCase> {};

TEST_P(IndexWhereGrad, BothSidesAndMaskedFill) {
  Rng rng(14);
  const WhereCase& shapes = GetParam();
  std::vector<uint8_t> bits(shape_numel(shapes.condition));
  for (uint8_t& bit : bits) bit = static_cast<uint8_t>(rng.integer(2));
  Tensor condition = mask(bits, shapes.condition);
  Tensor a = random_leaf(shapes.a, rng);
  Tensor b = random_leaf(shapes.b, rng);
  expect_gradients_match([&](const auto& in) { return where(condition, in[0], in[1]); }, {a, b});
  expect_gradients_match([&](const auto& in) { return masked_fill(in[0], condition, 3.0); }, {b});
}

// b is always the full broadcast shape, so the condition also broadcasts to it (masked_fill).
INSTANTIATE_TEST_SUITE_P(Shapes, IndexWhereGrad,
                         ::testing::Values(WhereCase{{3, 4}, {3, 4}, {3, 4}}, WhereCase{{3, 1}, {1, 4}, {3, 4}},
                                           WhereCase{{4}, {2, 1, 4}, {2, 3, 4}},
                                           WhereCase{{3, 1}, {}, {2, 3, 4}}));

TEST(Index, WhereGradientThroughNonContiguousInput) {
  Rng rng(15);
  Tensor condition = mask({1, 0, 0, 1}, {4, 1});
  Tensor a = random_leaf({3, 4}, rng);
  Tensor b = random_leaf({4, 3}, rng);
  expect_gradients_match([&](const auto& in) { return where(condition, transpose(in[0], 0, 1), in[1]); }, {a, b});
  expect_gradients_match([&](const auto& in) { return masked_fill(transpose(in[0], 0, 1), condition, 0.5); }, {a});
}

}  // namespace
}  // namespace engine

namespace engine {
namespace {

TEST(IndexDtypes, IndexSelectMovesIntegerLabels) {
  Tensor labels = Tensor::from_vector<int64_t>({5, 6, 7, 8}, {4});
  Tensor picked = index_select(labels, 0, Tensor::from_vector<int64_t>({3, 0, 3}, {3}));
  EXPECT_EQ(picked.dtype(), DType::I64);
  EXPECT_EQ(picked.to_ints(), (std::vector<int64_t>{8, 5, 8}));
}

}  // namespace
}  // namespace engine
