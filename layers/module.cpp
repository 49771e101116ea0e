#include "layers/module.h"

namespace engine {

Tensor trunc_normal(const Shape& shape, Rng& rng, double stddev) {
  std::vector<float> values(static_cast<size_t>(shape_numel(shape)));
  for (float& v : values) {
    double sample;
    do {
      sample = rng.normal(0.0, stddev);
    } while (std::abs(sample) > 2.0 * stddev);
    v = static_cast<float>(sample);
  }
  return Tensor::from_vector(values, shape);
}

}  // namespace engine
