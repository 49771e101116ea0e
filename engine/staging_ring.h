// The bookkeeping of a ring of staging memory whose stretches are read
// asynchronously (engine/cuda/runtime.cu stages small host-to-device copies
// in pinned memory this way). Each claim takes the next `size` bytes after the
// previous one, starting again at 0 when they do not fit before the end (the
// skipped tail counts as claimed); before handing a stretch out it waits, oldest
// first, for every stretch in flight that the claim covers. Those lie in ring
// order from the last claim's end on, so the oldest are the first to wait for.
// Host code only: `Event` is whatever marks a stretch's readers as done (a
// cudaEvent_t), `wait` blocks on one. Not thread-safe: the owner locks.
#pragma once
#include <cstddef>
#include <deque>

#include "engine/error.h"

namespace engine {

template <typename Event>
class StagingRing {
 public:
  explicit StagingRing(size_t capacity) : capacity_(capacity) {}

  // The offset of `size` free bytes (0 < size <= capacity), after wait(event)
  // for every stretch in flight there, each then forgotten.
  template <typename Wait>
  size_t claim(size_t size, Wait&& wait) {
    check(size > 0 && size <= capacity_, "staging ring: cannot claim {} of its {} bytes", size, capacity_);
    const bool wraps = head_ + size > capacity_;
    const size_t begin = wraps ? 0 : head_;
    while (!in_flight_.empty() && covers(in_flight_.front(), wraps, begin, begin + size)) {
      wait(in_flight_.front().done);
      in_flight_.pop_front();
    }
    claimed_ = {begin, begin + size, Event{}};
    return begin;
  }

  // The last claimed stretch is in flight until `done`.
  void commit(Event done) {
    claimed_.done = done;
    in_flight_.push_back(claimed_);
    head_ = claimed_.end;
  }

  size_t in_flight() const { return in_flight_.size(); }

 private:
  struct Stretch {
    size_t begin, end;
    Event done;
  };

  // Whether the claim [begin, end) covers a stretch in flight, counting the
  // skipped tail [head_, capacity_) when it wraps.
  bool covers(const Stretch& s, bool wraps, size_t begin, size_t end) const {
    return (s.begin < end && begin < s.end) || (wraps && s.end > head_);
  }

  size_t capacity_;
  size_t head_ = 0;
  Stretch claimed_{0, 0, Event{}};
  std::deque<Stretch> in_flight_;
};

}  // namespace engine
