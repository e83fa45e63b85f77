// The process-wide barrier per pool and named byte queues that workers and the main interpreter share.
#include "rendezvous.h"

#include <sched.h>

#include <algorithm>
#include <chrono>

namespace ipp {

namespace {

std::chrono::duration<double> span(double seconds) {
  return std::chrono::duration<double>(std::clamp(seconds, 0.0, 1e9));
}

}  // namespace

Rendezvous& Rendezvous::instance() {
  // Never destroyed: worker threads may still reach it while the process exits.
  static auto* const self = new Rendezvous();
  return *self;
}

Rendezvous::Barrier& Rendezvous::barrier(std::uint64_t group) { return barriers_[group]; }

void Rendezvous::enter(std::uint64_t group, std::uint64_t run) {
  std::lock_guard<std::mutex> lock(barrier_mutex_);
  Barrier& b = barrier(group);
  if (b.run != run) {  // runs of one pool never overlap: the first worker to start resets it
    b.run = run;
    b.arrived = 0;
    b.left.clear();
    b.broken.clear();
    b.excused.clear();
  }
}

void Rendezvous::share(const std::string& name, std::string value) {
  auto kept = std::make_shared<const std::string>(std::move(value));
  std::lock_guard<std::mutex> lock(shared_mutex_);
  shared_[name] = std::move(kept);
}

std::shared_ptr<const std::string> Rendezvous::shared(const std::string& name) {
  std::lock_guard<std::mutex> lock(shared_mutex_);
  auto it = shared_.find(name);
  return it == shared_.end() ? nullptr : it->second;
}

void Rendezvous::unshare(const std::string& name) {
  std::shared_ptr<const std::string> dropped;  // freed outside the lock
  std::lock_guard<std::mutex> lock(shared_mutex_);
  auto it = shared_.find(name);
  if (it == shared_.end()) return;
  dropped = std::move(it->second);
  shared_.erase(it);
}

void Rendezvous::excuse(std::uint64_t group, int rank) {
  std::lock_guard<std::mutex> lock(barrier_mutex_);
  barrier(group).excused.insert(rank);
}

void Rendezvous::leave(std::uint64_t group, int rank, const std::string* raised) {
  {
    std::lock_guard<std::mutex> lock(barrier_mutex_);
    auto it = barriers_.find(group);
    if (it == barriers_.end()) return;
    Barrier& b = it->second;
    if (b.excused.count(rank) != 0) return;  // no party to this run's barrier
    if (!b.left.empty()) return;  // the first to leave says why the barrier cannot be passed
    b.left = "worker " + std::to_string(rank) +
             (raised ? " raised " + *raised : std::string(" finished its task without reaching the barrier"));
    if (b.arrived == 0 || !b.broken.empty()) return;  // nobody waits: the next to arrive sees `left`
    b.broken = b.left;
  }
  barrier_cv_.notify_all();
}

void Rendezvous::forget(std::uint64_t group) {
  {
    std::lock_guard<std::mutex> lock(barrier_mutex_);
    barriers_.erase(group);
  }
  barrier_cv_.notify_all();
}

std::uint64_t Rendezvous::arrive(std::uint64_t group, int parties) {
  std::uint64_t ticket = 0;
  {
    std::lock_guard<std::mutex> lock(barrier_mutex_);
    Barrier& b = barrier(group);
    if (!b.broken.empty()) throw BarrierBroken(b.broken);
    if (!b.left.empty()) {  // that worker will never arrive
      b.broken = b.left;
      throw BarrierBroken(b.broken);
    }
    ticket = b.generation;
    if (++b.arrived < parties) return ticket;
    b.arrived = 0;
    ++b.generation;
  }
  barrier_cv_.notify_all();
  return ticket;
}

bool Rendezvous::wait(std::uint64_t group, std::uint64_t ticket, double timeout) {
  std::unique_lock<std::mutex> lock(barrier_mutex_);
  auto passed = [&] {
    auto it = barriers_.find(group);
    return it == barriers_.end() || it->second.generation > ticket || !it->second.broken.empty();
  };
  barrier_cv_.wait_for(lock, span(timeout), passed);
  auto it = barriers_.find(group);
  if (it == barriers_.end()) throw BarrierBroken("the pool was closed");
  if (it->second.generation > ticket) return true;
  if (!it->second.broken.empty()) throw BarrierBroken(it->second.broken);
  return false;
}

void Rendezvous::abort(std::uint64_t group, const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(barrier_mutex_);
    Barrier& b = barrier(group);
    if (b.broken.empty()) b.broken = why;
  }
  barrier_cv_.notify_all();
}

std::shared_ptr<Rendezvous::Queue> Rendezvous::queue(const std::string& name) {
  std::lock_guard<std::mutex> lock(queues_mutex_);
  auto& q = queues_[name];
  if (!q) q = std::make_shared<Queue>();
  return q;
}

void Rendezvous::put(const std::string& name, std::string item) {
  auto q = queue(name);
  {
    std::lock_guard<std::mutex> lock(q->mutex);
    q->items.push_back(std::move(item));
  }
  q->ready.notify_one();
}

std::optional<std::string> Rendezvous::get(const std::string& name, double timeout, double spin) {
  auto q = queue(name);
  std::unique_lock<std::mutex> lock(q->mutex);
  // As Countdown's waiter (countdown.h): on a VM a thread that blocks at once pays for its vCPU
  // halting and waking, tens of microseconds, when the item was about to come anyway.
  const auto spin_until = std::chrono::steady_clock::now() + span(std::min(spin, timeout));
  while (q->items.empty() && std::chrono::steady_clock::now() < spin_until) {
    lock.unlock();
    sched_yield();
    lock.lock();
  }
  if (!q->ready.wait_for(lock, span(timeout), [&] { return !q->items.empty(); })) return std::nullopt;
  std::string item = std::move(q->items.front());
  q->items.pop_front();
  return item;
}

std::size_t Rendezvous::size(const std::string& name) {
  auto q = queue(name);
  std::lock_guard<std::mutex> lock(q->mutex);
  return q->items.size();
}

std::size_t Rendezvous::clear(const std::string& name) {
  auto q = queue(name);
  std::lock_guard<std::mutex> lock(q->mutex);
  const std::size_t n = q->items.size();
  q->items.clear();
  return n;
}

}  // namespace ipp
