// The latency floor: a bare condition-variable round trip to N sleeping threads, no Python.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace ipp {

// N threads that sleep on condition variables, woken and awaited exactly as Pool::start and
// Pool::wait wake and await workers; the difference between the two is what the engine itself
// costs. Kept alive between calls so that a benchmark can interleave it with the pool it is
// compared to. Takes no GIL.
class CondvarFloor {
 public:
  explicit CondvarFloor(int n_threads);
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

  std::mutex done_mutex_;
  std::condition_variable done_cv_;
  int remaining_ = 0;
  std::vector<std::unique_ptr<Sleeper>> sleepers_;
};

}  // namespace ipp
