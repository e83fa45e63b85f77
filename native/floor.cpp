// The latency floor: a bare condition-variable round trip to N sleeping threads, no Python.
#include "floor.h"

#include <chrono>
#include <stdexcept>

namespace ipp {

CondvarFloor::CondvarFloor(int n_threads, int spin_micros) : spin_(spin_micros) {
  if (n_threads < 1) throw std::invalid_argument("the floor needs at least one thread");
  for (int i = 0; i < n_threads; ++i) {
    sleepers_.push_back(std::make_unique<Sleeper>());
    Sleeper& s = *sleepers_.back();
    s.thread = std::thread([this, &s] { sleep_loop(s); });
  }
}

CondvarFloor::~CondvarFloor() {
  for (auto& s : sleepers_) {
    {
      std::lock_guard<std::mutex> lock(s->mutex);
      s->stop = true;
    }
    s->cv.notify_one();
  }
  for (auto& s : sleepers_) s->thread.join();
}

void CondvarFloor::sleep_loop(Sleeper& self) {
  long seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(self.mutex);
      self.cv.wait(lock, [&] { return self.posted != seen || self.stop; });
      if (self.stop) return;
      seen = self.posted;
    }
    pending_.arrive();
  }
}

std::vector<double> CondvarFloor::round_trips(int iterations) {
  std::vector<double> times;
  times.reserve(static_cast<size_t>(iterations > 0 ? iterations : 0));
  for (int it = 0; it < iterations; ++it) {
    const auto start = std::chrono::steady_clock::now();
    pending_.reset(static_cast<int>(sleepers_.size()));
    for (auto& s : sleepers_) {
      {
        std::lock_guard<std::mutex> lock(s->mutex);
        ++s->posted;
      }
      s->cv.notify_one();
    }
    while (!pending_.wait_for(std::chrono::hours(1), spin_)) {
    }
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return times;
}

}  // namespace ipp
