#include "layers/module.h"

#include <cmath>
#include <vector>

namespace engine {

void move_parameters(const std::function<void(const ParamVisitor&)>& visit, Device device) {
  visit([&](const std::string&, Tensor& p) {
    const bool required = p.requires_grad();
    const std::string name = p.name();
    p = p.detach().to(device);
    p.set_name(name);
    if (required) p.set_requires_grad(true);
  });
}

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
