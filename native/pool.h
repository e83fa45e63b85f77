// N workers, each with its own sub-interpreter: broadcast or scatter a task, wait, collect results.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "countdown.h"
#include "worker.h"

namespace ipp {

// Threading contract: every method is called from main-interpreter threads. The constructor,
// wait() and close() block on the workers, who need the main interpreter's GIL to create and
// destroy their interpreters: the caller must have released it (bindings.cpp does).
class Pool final : public Completion {
 public:
  // How long the first wait of a run yields before it blocks (see countdown.h): about one VM
  // wake-up, so a short run is caught without a sleep, and a long one costs 50 us of polling.
  static constexpr int kSpinMicros = 50;

  Pool(int n_workers, std::string runtime_code);  // starts all workers at once; throws if one fails
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  int size() const { return size_; }
  std::uint64_t group() const { return group_; }
  bool closed() const;
  bool busy() const;
  std::uint64_t runs() const;

  // payloads: empty (no inputs), one (the same for every worker) or one per worker.
  void start(const std::string& source, const std::string& filename, std::vector<std::string> payloads);
  bool wait(double timeout_seconds);  // true once every worker of the current run is done
  std::vector<TaskResult> collect();  // the finished run's results, by worker id
  void close();                       // interrupts running tasks and waits for them; harmless twice

  // Raise KeyboardInterrupt in every worker still running the current run (see
  // Worker::interrupt); returns their ids. busy_workers(): the ids of those still running.
  std::vector<int> interrupt();
  std::vector<int> busy_workers() const;

  std::vector<double> cpu_times() const;  // per worker thread, seconds; empty once closed
  void set_streaming(bool on);
  std::vector<OutputChunk> drain_output();

  void task_done(TaskResult&& result) override;

 private:
  void check_open() const;  // requires mutex_
  template <typename Predicate>
  std::vector<int> workers_where(Predicate predicate) const;  // ids of the workers it holds for

  mutable std::mutex mutex_;
  Countdown pending_;  // workers still busy with the current run
  std::atomic<bool> spin_next_wait_{false};  // the first wait of a run yields before it blocks
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<TaskResult> results_;
  bool running_ = false;
  bool closed_ = false;
  std::uint64_t runs_ = 0;
  const int size_;
  const pid_t owner_pid_;
  const std::uint64_t group_;  // this pool's id in the process, for its workers' barrier
};

}  // namespace ipp
