// The engine of a sub-interpreter Pool (ipy_parallel.Pool's Engine): N workers, each with its own sub-interpreter; broadcast or scatter a task, wait, collect results, close.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "countdown.h"
#include "worker.h"

namespace ipp {

// A worker the pool gave up on while closing, and why.
struct Abandoned {
  int worker_id;
  std::string why;
};

// Threading contract: every method is called from main-interpreter threads. The constructor,
// wait() and the closing methods block on the workers, who need the main interpreter's GIL to
// create and destroy their interpreters: the caller must have released it (bindings.cpp does).
class Engine final : public Completion {
 public:
  // How long the first wait of a run yields before it blocks (see countdown.h): about one VM
  // wake-up, so a short run is caught without a sleep, and a long one costs 50 us of polling.
  static constexpr int kSpinMicros = 50;
  // Closing: running tasks are interrupted (again every 50 ms: an interrupt can be swallowed)
  // for up to kStopSeconds; then every worker is asked to end, and those whose threads have not
  // ended kEndSeconds later are abandoned.
  static constexpr double kStopSeconds = 1.0;
  static constexpr double kEndSeconds = 1.5;

  // Starts all workers at once (taking parked ones from the Reserve first, unless `fresh`: then
  // every interpreter it ever has is a new one); throws if one fails. Its workers retire to the
  // Reserve as it closes or shrinks, where they can.
  Engine(int n_workers, std::string modules, bool fresh = false);
  ~Engine();                                   // close() with the default bounds
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  int size() const { return size_.load(); }
  std::uint64_t group() const { return group_; }
  bool closed() const;
  bool busy() const;  // a run was started and has not finished
  std::uint64_t runs() const;

  // Lent inputs: one list for each payload (or none), in the order the payload names them.
  using LentInputs = std::vector<std::vector<std::shared_ptr<const Lent>>>;

  // payloads: empty (no inputs), one (the same for every worker) or one per worker; `lent` is
  // empty or matches them. Throws if the pool is closed or the previous run has not finished.
  void start(const std::string& source, const std::string& filename, std::vector<std::string> payloads,
             LentInputs lent, bool stream);
  bool wait(double timeout_seconds);       // true once every worker of the current run is done
  std::vector<TaskResult> take_results();  // the finished run's results, by worker id, once
  // A RAW result's bytes, given to fn(data, size) while its worker keeps them (see
  // Worker::read_held); false if they are gone. Then drop_raw(): every worker frees its own.
  template <typename Fn>
  bool read_raw(const TaskResult& result, Fn&& fn) {
    std::lock_guard<std::mutex> lock(mutex_);  // the workers stay meanwhile (abandon() takes them under it)
    const auto i = static_cast<size_t>(result.worker_id);
    return i < workers_.size() && workers_[i]->read_held(result.generation, std::forward<Fn>(fn));
  }
  void drop_raw();

  // Raise KeyboardInterrupt in every worker still running the current run (see
  // Worker::interrupt); returns their ids. busy_workers(): the ids of those still running.
  std::vector<int> interrupt();
  std::vector<int> busy_workers() const;

  std::vector<double> cpu_times() const;  // per worker thread, seconds; empty once closed
  // Per worker, its task's worker.progress() position (see Worker::progress); empty once closed.
  std::vector<std::optional<std::pair<std::int64_t, std::int64_t>>> progress();
  std::vector<OutputChunk> drain_output();

  // Closing, in steps a caller can interleave with its own checks: begin_close() stops new
  // runs and asks the workers to end (a run in progress counts as finished from then on);
  // wait_closed() waits up to `timeout` for their threads, interrupting running tasks again
  // meanwhile; abandon() gives up on those still running and returns them. close() is all
  // three with the default bounds. All harmless twice.
  void begin_close();
  bool wait_closed(double timeout_seconds);
  std::vector<Abandoned> abandon();
  std::vector<Abandoned> close();

  // Between runs: grow to n_workers (the new workers start as the first ones did, all at once;
  // if one fails they all go and this throws) or shrink (the last workers end, within the
  // closing bounds; those that do not are abandoned and returned). The workers that stay keep
  // their interpreters; telling them the new size is the caller's (the runtime's RESIZE). Throws
  // if the pool is closed or a run has not finished.
  std::vector<Abandoned> resize(int n_workers);

  void task_done(TaskResult&& result) override;

 private:
  void check_open() const;  // requires mutex_
  // Workers first..n_workers-1, started at once and ready; throws (ending them) if one fails.
  std::vector<std::unique_ptr<Worker>> start_workers(int first, int n_workers);
  template <typename Predicate>
  std::vector<int> workers_where(Predicate predicate) const;  // ids of the workers it holds for

  mutable std::mutex mutex_;
  std::mutex closing_mutex_;  // wait_closed() vs abandon() from two closing threads
  Countdown pending_;  // workers still busy with the current run
  std::atomic<bool> spin_next_wait_{false};  // the first wait of a run yields before it blocks
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<TaskResult> results_;
  bool closed_ = false;
  bool stopping_ = false;  // begin_close() has asked the workers to end
  std::chrono::steady_clock::time_point stop_until_;  // interrupts go on until then (set once, before waits)
  std::vector<bool> stuck_;  // per worker, at begin_close(): given up on by a run already, not waited for
  std::uint64_t runs_ = 0;
  std::atomic<int> size_;
  const std::shared_ptr<const std::string> modules_;  // what new workers install
  const bool fresh_;
  const pid_t owner_pid_;
  const std::uint64_t group_;  // this pool's id in the process, for its workers' barrier
};

}  // namespace ipp
