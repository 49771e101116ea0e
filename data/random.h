// Portable randomness for augmentation and shuffling.
//
// std::mt19937_64 is fully specified by the C++ standard, but std::uniform_*_distribution
// and std::shuffle are not (libstdc++ and libc++ give different numbers), so the few draws
// the pipeline needs are written out here: the same seed gives the same augmentations with
// any compiler.
#pragma once
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace data {

// Uniform in [0, 1) with 53 random bits.
inline double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// Uniform in [lo, hi).
inline double uniform(std::mt19937_64& rng, double lo, double hi) {
  return lo + (hi - lo) * uniform01(rng);
}

// Uniform integer in [lo, hi] (inclusive), exactly uniform: draws below 2^64 mod n are
// rejected so that x % n favours no value.
inline int64_t uniform_int(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  const uint64_t n = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo) + 1;  // 0: the full range
  if (n == 0) return static_cast<int64_t>(rng());
  const uint64_t reject_below = (0 - n) % n;
  uint64_t x;
  do {
    x = rng();
  } while (x < reject_below);
  return lo + static_cast<int64_t>(x % n);
}

// Fisher-Yates.
template <typename T>
void shuffle(std::vector<T>& items, std::mt19937_64& rng) {
  for (size_t i = items.size(); i > 1; --i) {
    std::swap(items[i - 1], items[static_cast<size_t>(uniform_int(rng, 0, static_cast<int64_t>(i) - 1))]);
  }
}

// SplitMix64 finaliser: turns structured inputs (seed, epoch, index) into well-mixed seeds.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// A seed derived from a parent seed and a key, e.g. mix_seed(mix_seed(seed, epoch), index).
inline uint64_t mix_seed(uint64_t parent, uint64_t key) { return splitmix64(splitmix64(parent) ^ key); }

}  // namespace data
