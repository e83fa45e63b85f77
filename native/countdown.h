// A countdown that worker threads arrive at and one thread waits on: yield briefly, then block.
#pragma once

#include <sched.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>

namespace ipp {

// Why the waiter first yields instead of blocking at once: on a VM an idle vCPU halts, and
// waking a thread blocked on a futex costs 20-50 us there; in a warm round trip that wake-up,
// not any work, was most of the time. A waiter that calls sched_yield() for a few tens of
// microseconds keeps its core awake and hands it to the threads it waits for whenever they
// are runnable; a plain busy spin would instead take that core from them (3 threads, 2 cores).
// Then it blocks, so a long wait costs no CPU.
class Countdown {
 public:
  void reset(int n) {
    std::lock_guard<std::mutex> lock(mutex_);
    remaining_.store(n, std::memory_order_release);
  }

  int remaining() const { return remaining_.load(std::memory_order_acquire); }

  // Ends the count at once (the pool closed): waiters wake; later arrivals must not come.
  void release_all() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      remaining_.store(0, std::memory_order_release);
    }
    cv_.notify_all();
  }

  // Returns true for the last arrival, which wakes the waiter. The decrement happens under the
  // mutex so that it cannot fall between the waiter's check and its sleep.
  bool arrive() {
    bool last = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      last = remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1;
    }
    if (last) cv_.notify_all();
    return last;
  }

  // True once the count is zero; false if `timeout` passed first.
  bool wait_for(std::chrono::duration<double> timeout, std::chrono::microseconds spin) {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const auto spin_until = start + std::min<std::chrono::duration<double>>(spin, timeout);
    while (remaining() != 0 && clock::now() < spin_until) sched_yield();
    if (remaining() == 0) return true;
    std::unique_lock<std::mutex> lock(mutex_);
    const auto left = timeout - (clock::now() - start);
    return cv_.wait_for(lock, left, [this] { return remaining() == 0; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::atomic<int> remaining_{0};
};

}  // namespace ipp
