// Argument checks for the mixers' constructors, usable in member initialisers
// so that a bad size fails before any tensor of that size is allocated.
#pragma once
#include <cstdint>

#include "engine/error.h"

namespace engine {

inline int64_t positive(const char* what, int64_t value) {
  check(value > 0, "{} must be positive, got {}", what, value);
  return value;
}

}  // namespace engine
