// The engine of a sub-interpreter Pool: owns N workers, hands each run to all of them, gathers their results, ends them (or gives up on them).
#include "engine.h"

#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <thread>
#include <utility>

#include "rendezvous.h"
#include "reserve.h"

namespace ipp {

namespace {

std::uint64_t next_group() {
  static std::atomic<std::uint64_t> last{0};
  return ++last;
}

// Workers given up on: their threads may still use them, so they are never destroyed.
std::mutex g_abandoned_mutex;
std::vector<std::unique_ptr<Worker>>& abandoned_workers() {
  static auto* const kept = new std::vector<std::unique_ptr<Worker>>();
  return *kept;
}

}  // namespace

Engine::Engine(int n_workers, std::string modules, bool fresh)
    : size_(n_workers),
      modules_(std::make_shared<const std::string>(std::move(modules))),
      fresh_(fresh),
      owner_pid_(getpid()),
      group_(next_group()) {
  if (n_workers < 1) throw std::invalid_argument("a pool needs at least one worker");
  workers_ = start_workers(0, n_workers);
}

std::vector<std::unique_ptr<Worker>> Engine::start_workers(int first, int n_workers) {
  const auto count = static_cast<size_t>(n_workers - first);
  std::vector<std::unique_ptr<Worker>> started;
  if (!fresh_) started = Reserve::instance().take(*modules_, count);
  for (size_t k = 0; k < started.size(); ++k) started[k]->adopt(first + static_cast<int>(k), n_workers, group_, *this);
  started.reserve(count);
  // Every new worker creates its interpreter on its own thread, all at the same time.
  for (int i = first + static_cast<int>(started.size()); i < n_workers; ++i)
    started.push_back(std::make_unique<Worker>(i, n_workers, group_, modules_, *this));
  std::string failure;
  for (auto& worker : started) {
    std::string why = worker->wait_ready();
    if (failure.empty() && !why.empty())
      failure = "worker " + std::to_string(first + (&worker - &started[0])) + ": " + why;
  }
  if (!failure.empty()) {
    for (auto& worker : started) worker->request_stop();
    started.clear();  // joins: no task ever ran, so each ends at once
    throw std::runtime_error(failure);
  }
  return started;
}

std::vector<Abandoned> Engine::resize(int n_workers) {
  if (n_workers < 1) throw std::invalid_argument("a pool needs at least one worker");
  std::vector<std::unique_ptr<Worker>> leaving;
  int now = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    check_open();
    if (pending_.remaining() != 0) throw std::runtime_error("this pool is still running a task: wait for it to finish first");
    now = size_.load();
    if (n_workers < now) {
      for (size_t i = static_cast<size_t>(n_workers); i < workers_.size(); ++i) leaving.push_back(std::move(workers_[i]));
      workers_.resize(static_cast<size_t>(n_workers));
      size_.store(n_workers);
    }
  }
  if (n_workers > now) {
    // Outside the lock: the new workers need the main GIL, which the caller has let go.
    auto joining = start_workers(now, n_workers);
    std::lock_guard<std::mutex> lock(mutex_);
    check_open();
    for (auto& worker : joining) workers_.push_back(std::move(worker));
    size_.store(n_workers);
    return {};
  }
  std::vector<Abandoned> given_up;
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(kEndSeconds));
  for (auto& worker : leaving) worker->request_retire();  // idle: each parks or ends at once
  for (size_t i = 0; i < leaving.size(); ++i) {
    Worker& worker = *leaving[i];
    const int id = n_workers + static_cast<int>(i);
    std::string why;
    if (!worker.wait_ended(deadline)) {
      why = "it did not end its interpreter in time";
      worker.abandon();
    } else if (worker.parked()) {
      Reserve::instance().put(std::move(leaving[i]));
      continue;
    } else {
      why = worker.left_alive();
      if (why.empty()) continue;  // joined when `leaving` goes
    }
    given_up.push_back({id, why});
    std::lock_guard<std::mutex> lock(g_abandoned_mutex);
    abandoned_workers().push_back(std::move(leaving[i]));
  }
  return given_up;
}

Engine::~Engine() { close(); }

bool Engine::closed() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return closed_;
}

bool Engine::busy() const { return pending_.remaining() != 0; }

std::uint64_t Engine::runs() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return runs_;
}

void Engine::check_open() const {
  if (closed_) throw std::runtime_error("this pool is closed: create a new Pool to run more work");
}

void Engine::start(const std::string& source, const std::string& filename, std::vector<std::string> payloads,
                 LentInputs lent, bool stream) {
  const auto n = static_cast<size_t>(size_.load());  // resize() runs between runs, from the same caller
  if (payloads.size() > 1 && payloads.size() != n)
    throw std::invalid_argument("expected 0, 1 or " + std::to_string(n) + " payloads, got " +
                                std::to_string(payloads.size()));
  if (!lent.empty() && lent.size() != payloads.size())
    throw std::invalid_argument("expected a list of lent inputs for each payload");
  std::vector<std::shared_ptr<const std::string>> shared;
  for (auto& p : payloads) shared.push_back(std::make_shared<const std::string>(std::move(p)));
  auto shared_source = std::make_shared<const std::string>(source);
  auto shared_filename = std::make_shared<const std::string>(filename);
  std::lock_guard<std::mutex> lock(mutex_);
  check_open();
  if (pending_.remaining() != 0)
    throw std::runtime_error("this pool is still running a task: wait for it to finish first");
  pending_.reset(static_cast<int>(n));
  spin_next_wait_.store(true);
  results_.assign(n, TaskResult{});
  const std::uint64_t run = ++runs_;
  // Under the pool's lock, so that close() cannot take the workers away meanwhile.
  for (size_t i = 0; i < n; ++i) {
    workers_[i]->set_streaming(stream);
    const size_t which = shared.size() == n ? i : 0;  // one payload for all, or one each
    std::shared_ptr<const std::string> payload;
    if (!shared.empty()) payload = shared[which];
    std::vector<std::shared_ptr<const Lent>> inputs;
    if (!lent.empty()) inputs = lent[which];
    workers_[i]->post(Task{shared_source, shared_filename, std::move(payload), std::move(inputs), run});
  }
}

void Engine::task_done(TaskResult&& result) {
  std::lock_guard<std::mutex> lock(mutex_);  // lock order: pool, then the countdown
  if (stopping_) return;  // the run was given up with the pool (its count released): nobody will collect it
  results_[static_cast<size_t>(result.worker_id)] = std::move(result);
  pending_.arrive();
}

bool Engine::wait(double timeout_seconds) {
  if (pending_.remaining() == 0) return true;
  const auto spin = std::chrono::microseconds(spin_next_wait_.exchange(false) ? kSpinMicros : 0);
  return pending_.wait_for(std::chrono::duration<double>(timeout_seconds < 0 ? 0 : timeout_seconds), spin);
}

std::vector<TaskResult> Engine::take_results() {
  std::lock_guard<std::mutex> lock(mutex_);
  check_open();
  if (runs_ == 0) throw std::runtime_error("no run to collect: call start() first");
  if (pending_.remaining() != 0) throw std::runtime_error("the run is not finished: wait() until it returns true");
  return std::move(results_);
}

void Engine::drop_raw() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& worker : workers_) worker->drop_held();
}

void Engine::begin_close() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
    closed_ = stopping_ = true;
    pending_.release_all();  // a waiter for the current run wakes: it will find the pool closed
    stop_until_ = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                          std::chrono::duration<double>(kStopSeconds));
  }
  if (getpid() != owner_pid_) return;  // a forked child: none of the threads is here (see abandon())
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stuck_.clear();
    for (auto& worker : workers_) stuck_.push_back(worker->stuck_for(kStopSeconds));
  }
  for (auto& worker : workers_) worker->interrupt();
  for (auto& worker : workers_) worker->request_retire();  // each parks or ends once its task has stopped
}

bool Engine::wait_closed(double timeout_seconds) {
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + std::chrono::duration_cast<clock::duration>(
                                           std::chrono::duration<double>(std::max(timeout_seconds, 0.0)));
  if (getpid() != owner_pid_) return false;
  std::lock_guard<std::mutex> closing(closing_mutex_);  // the workers stay while we wait on them
  std::vector<Worker*> workers;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // A worker a run already gave up on has had its second, and more: the others are waited for.
    for (size_t i = 0; i < workers_.size(); ++i)
      if (i >= stuck_.size() || !stuck_[i]) workers.push_back(workers_[i].get());
  }
  for (Worker* worker : workers) {
    for (;;) {
      const auto slice = std::min(deadline, clock::now() + std::chrono::milliseconds(50));
      if (worker->wait_ended(slice)) break;
      if (clock::now() >= deadline) return false;
      if (clock::now() < stop_until_) worker->interrupt();  // swallowed by C code, or caught by the cell
    }
  }
  return true;
}

std::vector<Abandoned> Engine::abandon() {
  std::lock_guard<std::mutex> closing(closing_mutex_);
  std::vector<std::unique_ptr<Worker>> workers;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    workers.swap(workers_);  // cpu_times() and drain_output() see an empty pool from now on
  }
  std::vector<Abandoned> given_up;
  if (getpid() != owner_pid_) {
    // A forked child has copies of these objects but none of the threads: joining would hang
    // and destroying the interpreters would touch state the parent owns. Leak them.
    for (auto& worker : workers) (void)worker.release();
    return given_up;
  }
  const auto now = std::chrono::steady_clock::now();
  for (size_t i = 0; i < workers.size(); ++i) {
    Worker& worker = *workers[i];
    if (worker.wait_ended(now)) {
      if (worker.parked()) {
        Reserve::instance().put(std::move(workers[i]));
        continue;
      }
      std::string why = worker.left_alive();
      if (why.empty()) continue;  // joined when `workers` goes
      // The threads left in its interpreter may still call into this worker (its sleep).
      given_up.push_back({static_cast<int>(i), why});
      std::lock_guard<std::mutex> lock(g_abandoned_mutex);
      abandoned_workers().push_back(std::move(workers[i]));
      continue;
    }
    given_up.push_back({static_cast<int>(i), worker.running() ? "its task could not be stopped" :
                                                                "it did not end its interpreter in time"});
    worker.abandon();
    std::lock_guard<std::mutex> lock(g_abandoned_mutex);
    abandoned_workers().push_back(std::move(workers[i]));
  }
  Rendezvous::instance().forget(group_);
  return given_up;
}

std::vector<Abandoned> Engine::close() {
  begin_close();
  wait_closed(kStopSeconds + kEndSeconds);
  return abandon();
}

template <typename Predicate>
std::vector<int> Engine::workers_where(Predicate predicate) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<int> ids;
  for (size_t i = 0; i < workers_.size(); ++i)
    if (predicate(*workers_[i])) ids.push_back(static_cast<int>(i));
  return ids;
}

std::vector<int> Engine::interrupt() {
  return workers_where([](Worker& worker) { return worker.interrupt(); });
}

std::vector<int> Engine::busy_workers() const {
  return workers_where([](Worker& worker) { return worker.running(); });
}

std::vector<double> Engine::cpu_times() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<double> times;
  times.reserve(workers_.size());
  for (const auto& worker : workers_) times.push_back(worker->cpu_time());
  return times;
}

std::vector<std::optional<std::pair<std::int64_t, std::int64_t>>> Engine::progress() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::optional<std::pair<std::int64_t, std::int64_t>>> positions;
  positions.reserve(workers_.size());
  for (auto& worker : workers_) positions.push_back(worker->progress());
  return positions;
}

std::vector<OutputChunk> Engine::drain_output() {
  std::lock_guard<std::mutex> lock(mutex_);  // lock order: pool, then a worker's output
  std::vector<OutputChunk> chunks;
  for (auto& worker : workers_) worker->drain_output(chunks);
  return chunks;
}

}  // namespace ipp
