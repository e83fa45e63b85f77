// The pool: owns N workers, hands each run to all of them and gathers their results.
#include "pool.h"

#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <thread>
#include <utility>

#include "rendezvous.h"

namespace ipp {

namespace {

std::uint64_t next_group() {
  static std::atomic<std::uint64_t> last{0};
  return ++last;
}

}  // namespace

Pool::Pool(int n_workers, std::string runtime_code)
    : size_(n_workers), owner_pid_(getpid()), group_(next_group()) {
  if (n_workers < 1) throw std::invalid_argument("a pool needs at least one worker");
  auto runtime = std::make_shared<const std::string>(std::move(runtime_code));
  workers_.reserve(static_cast<size_t>(n_workers));
  // Every worker creates its interpreter on its own thread, all at the same time.
  for (int i = 0; i < n_workers; ++i) workers_.push_back(std::make_unique<Worker>(i, n_workers, group_, runtime, *this));
  std::string failure;
  for (auto& worker : workers_) {
    std::string why = worker->wait_ready();
    if (failure.empty() && !why.empty()) failure = "worker " + std::to_string(&worker - &workers_[0]) + ": " + why;
  }
  if (!failure.empty()) {
    for (auto& worker : workers_) worker->request_stop();
    workers_.clear();  // joins
    throw std::runtime_error(failure);
  }
}

Pool::~Pool() { close(); }

bool Pool::closed() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return closed_;
}

bool Pool::busy() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return running_;
}

std::uint64_t Pool::runs() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return runs_;
}

void Pool::check_open() const {
  if (closed_) throw std::runtime_error("this pool is closed: create a new Pool to run more work");
}

void Pool::start(const std::string& source, const std::string& filename, std::vector<std::string> payloads) {
  const auto n = static_cast<size_t>(size_);
  if (payloads.size() > 1 && payloads.size() != n)
    throw std::invalid_argument("expected 0, 1 or " + std::to_string(n) + " payloads, got " +
                                std::to_string(payloads.size()));
  std::vector<std::shared_ptr<const std::string>> shared;
  for (auto& p : payloads) shared.push_back(std::make_shared<const std::string>(std::move(p)));
  auto shared_source = std::make_shared<const std::string>(source);
  auto shared_filename = std::make_shared<const std::string>(filename);
  std::uint64_t run = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    check_open();
    if (running_) throw std::runtime_error("this pool is still running a task: wait for it to finish first");
    running_ = true;
    pending_.reset(static_cast<int>(n));
    spin_next_wait_.store(true);
    results_.assign(n, TaskResult{});
    run = ++runs_;
  }
  for (size_t i = 0; i < n; ++i) {
    std::shared_ptr<const std::string> payload;
    if (shared.size() == 1) payload = shared[0];
    if (shared.size() == n && n > 1) payload = shared[i];
    workers_[i]->post(Task{shared_source, shared_filename, std::move(payload), run});
  }
}

void Pool::task_done(TaskResult&& result) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    results_[static_cast<size_t>(result.worker_id)] = std::move(result);
  }
  pending_.arrive();
}

bool Pool::wait(double timeout_seconds) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!running_) return true;
  }
  const auto spin = std::chrono::microseconds(spin_next_wait_.exchange(false) ? kSpinMicros : 0);
  return pending_.wait_for(std::chrono::duration<double>(timeout_seconds < 0 ? 0 : timeout_seconds), spin);
}

std::vector<TaskResult> Pool::collect() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!running_) throw std::runtime_error("no run to collect: call start() first");
  if (pending_.remaining() != 0) throw std::runtime_error("the run is not finished: wait() until it returns true");
  running_ = false;
  return std::move(results_);
}

void Pool::close() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
    closed_ = true;
  }
  if (getpid() != owner_pid_) {
    // A forked child has copies of these objects but none of the threads: joining would hang
    // and destroying the interpreters would touch state the parent owns. Leak them.
    for (auto& worker : workers_) (void)worker.release();
    workers_.clear();
    return;
  }
  // Stop what runs (a worker blocked in C code other than time.sleep is waited for), ask all
  // to end, then join: the interpreters end in parallel. The vector itself changes only under
  // the mutex, so cpu_times() from a display thread stays safe meanwhile.
  for (int round = 0; round < 40; ++round) {  // up to 2 s: see Worker's interrupt notes
    bool running = false;
    for (auto& worker : workers_) running = worker->interrupt() || running;
    if (!running) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (auto& worker : workers_) worker->request_stop();
  for (auto& worker : workers_) worker->join();
  std::vector<std::unique_ptr<Worker>> joined;
  std::lock_guard<std::mutex> lock(mutex_);
  joined.swap(workers_);
  running_ = false;
  Rendezvous::instance().forget(group_);
}

template <typename Predicate>
std::vector<int> Pool::workers_where(Predicate predicate) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<int> ids;
  for (size_t i = 0; i < workers_.size(); ++i)
    if (predicate(*workers_[i])) ids.push_back(static_cast<int>(i));
  return ids;
}

std::vector<int> Pool::interrupt() {
  return workers_where([](Worker& worker) { return worker.interrupt(); });
}

std::vector<int> Pool::busy_workers() const {
  return workers_where([](Worker& worker) { return worker.running(); });
}

std::vector<double> Pool::cpu_times() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<double> times;
  times.reserve(workers_.size());
  for (const auto& worker : workers_) times.push_back(worker->cpu_time());
  return times;
}

void Pool::set_streaming(bool on) {
  std::lock_guard<std::mutex> lock(mutex_);  // lock order: pool, then a worker's output
  for (auto& worker : workers_) worker->set_streaming(on);
}

std::vector<OutputChunk> Pool::drain_output() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<OutputChunk> chunks;
  for (auto& worker : workers_) worker->drain_output(chunks);
  return chunks;
}

}  // namespace ipp
