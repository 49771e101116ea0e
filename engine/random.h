// Seeded random numbers. One Rng per purpose (init, dropout, data) keeps runs
// reproducible when unrelated code draws more or fewer numbers.
#pragma once
#include <cstdint>
#include <random>

namespace engine {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) : gen_(seed) {}
  double normal(double mean = 0.0, double stddev = 1.0) {
    return std::normal_distribution<double>(mean, stddev)(gen_);
  }
  double uniform(double low = 0.0, double high = 1.0) {
    return std::uniform_real_distribution<double>(low, high)(gen_);
  }
  // Uniform integer in [0, n).
  int64_t integer(int64_t n) { return std::uniform_int_distribution<int64_t>(0, n - 1)(gen_); }
  uint64_t next() { return gen_(); }
  std::mt19937_64& generator() { return gen_; }

 private:
  std::mt19937_64 gen_;
};

}  // namespace engine
