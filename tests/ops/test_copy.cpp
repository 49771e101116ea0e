// copy_into on the CPU: writes through strided destination views (a
// transposed buffer, a column) land where a naive index loop puts them, with
// a dtype conversion on the way, and elements outside the view keep their
// values. (The other tests copy into narrow() windows, whose rows are
// contiguous.)
#include "engine/ops/copy/copy.h"
#include "engine/ops/view/view.h"
#include "tests/ops/op_test.h"

namespace engine {
namespace {

TEST(CopyInto, WritesThroughStridedDestinations) {
  Rng rng(31);
  const Tensor src = Tensor::uniform({3, 4}, rng, -1, 1, DType::F64);
  const std::vector<double> s = src.to_doubles();

  // A float32 [4, 3] buffer seen as [3, 4]: the destination's rows have stride 3.
  Tensor buffer = Tensor::full({4, 3}, 7.0);
  copy_into(transpose(buffer, 0, 1), src);
  const std::vector<float> b = buffer.to_floats();
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 4; ++j) EXPECT_EQ(b[j * 3 + i], static_cast<float>(s[i * 4 + j])) << i << ", " << j;
  }

  // Column 2 of a [3, 5] buffer (stride 5) from column 0 of src (stride 4).
  Tensor wide = Tensor::full({3, 5}, 7.0, DType::F64);
  copy_into(select(wide, 1, 2), select(src, 1, 0));
  const std::vector<double> w = wide.to_doubles();
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 5; ++j) EXPECT_EQ(w[i * 5 + j], j == 2 ? s[i * 4] : 7.0) << i << ", " << j;
  }
}

}  // namespace
}  // namespace engine
