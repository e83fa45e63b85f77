// The latency floor: a bare condition-variable round trip to N sleeping threads, no Python.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>

#include "countdown.h"
#include <mutex>
#include <thread>
#include <vector>

namespace ipp {

// N threads that sleep on condition variables, woken and awaited exactly as Engine::start and
// Engine::wait wake and await workers; the difference between the two is what the engine itself
// costs. Kept alive between calls so that a benchmark can interleave it with the pool it is
// compared to. Takes no GIL.
class CondvarFloor {
 public:
  // spin_micros: 0 for a waiter that blocks at once (the bare floor), or the pool's
  // Engine::kSpinMicros to give the floor the same yield-then-block wait as the pool.
  CondvarFloor(int n_threads, int spin_micros);
  ~CondvarFloor();
  CondvarFloor(const CondvarFloor&) = delete;
  CondvarFloor& operator=(const CondvarFloor&) = delete;

  std::vector<double> round_trips(int iterations);  // seconds each

 private:
  struct Sleeper {
    std::mutex mutex;
    std::condition_variable cv;
    long posted = 0;  // generation number, as a worker's mailbox
    bool stop = false;
    std::thread thread;
  };
  void sleep_loop(Sleeper& self);

  Countdown pending_;
  const std::chrono::microseconds spin_;
  std::vector<std::unique_ptr<Sleeper>> sleepers_;
};

}  // namespace ipp
