// The latency floor: a bare condition-variable round trip to N sleeping threads, no Python.
#include "floor.h"

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace ipp {
namespace {

struct Sleeper {
  std::mutex mutex;
  std::condition_variable cv;
  long posted = 0;  // generation numbers, as a worker's mailbox
  bool stop = false;
  std::thread thread;
};

}  // namespace

std::vector<double> condvar_round_trips(int n_threads, int iterations) {
  if (n_threads < 1 || iterations < 1) throw std::invalid_argument("need at least one thread and one iteration");
  std::mutex done_mutex;
  std::condition_variable done_cv;
  int remaining = 0;

  std::vector<std::unique_ptr<Sleeper>> sleepers;
  for (int i = 0; i < n_threads; ++i) {
    auto s = std::make_unique<Sleeper>();
    Sleeper* self = s.get();
    s->thread = std::thread([self, &done_mutex, &done_cv, &remaining] {
      long seen = 0;
      for (;;) {
        {
          std::unique_lock<std::mutex> lock(self->mutex);
          self->cv.wait(lock, [&] { return self->posted != seen || self->stop; });
          if (self->stop) return;
          seen = self->posted;
        }
        bool last = false;
        {
          std::lock_guard<std::mutex> lock(done_mutex);
          last = --remaining == 0;
        }
        if (last) done_cv.notify_all();
      }
    });
    sleepers.push_back(std::move(s));
  }

  std::vector<double> times;
  times.reserve(static_cast<size_t>(iterations));
  for (int it = 0; it < iterations; ++it) {
    const auto start = std::chrono::steady_clock::now();
    {
      std::lock_guard<std::mutex> lock(done_mutex);
      remaining = n_threads;
    }
    for (auto& s : sleepers) {
      {
        std::lock_guard<std::mutex> lock(s->mutex);
        ++s->posted;
      }
      s->cv.notify_one();
    }
    {
      std::unique_lock<std::mutex> lock(done_mutex);
      done_cv.wait(lock, [&] { return remaining == 0; });
    }
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  for (auto& s : sleepers) {
    {
      std::lock_guard<std::mutex> lock(s->mutex);
      s->stop = true;
    }
    s->cv.notify_one();
    s->thread.join();
  }
  return times;
}

}  // namespace ipp
