// The reserve of parked workers: taken by new pools and growing ones, given back by closing and shrinking ones.
#include "reserve.h"

#include <unistd.h>

#include <algorithm>
#include <utility>

namespace ipp {

Reserve::Reserve() : owner_pid_(getpid()) {}

bool Reserve::forked() const { return getpid() != owner_pid_; }

Reserve& Reserve::instance() {
  static auto* const reserve = new Reserve();  // never destroyed: the atexit hook empties it
  return *reserve;
}

std::vector<std::unique_ptr<Worker>> Reserve::take(const std::string& modules, std::size_t count) {
  std::vector<std::unique_ptr<Worker>> taken;
  if (forked()) return taken;
  std::lock_guard<std::mutex> lock(mutex_);
  // The most recently parked first: its memory is the likeliest to be still in the caches.
  for (auto it = kept_.rbegin(); it != kept_.rend() && taken.size() < count; ++it)
    if ((*it)->runs(modules)) taken.push_back(std::move(*it));
  kept_.erase(std::remove(kept_.begin(), kept_.end(), nullptr), kept_.end());
  return taken;
}

void Reserve::put(std::unique_ptr<Worker> worker) {
  if (!forked()) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (open_ && static_cast<int>(kept_.size()) < limit_) {
      kept_.push_back(std::move(worker));
      return;
    }
  }
  std::vector<std::unique_ptr<Worker>> one;
  one.push_back(std::move(worker));
  end(std::move(one));
}

int Reserve::clear() {
  if (forked()) return 0;
  std::vector<std::unique_ptr<Worker>> all;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    all.swap(kept_);
  }
  const int n = static_cast<int>(all.size());
  end(std::move(all));
  return n;
}

int Reserve::size() const {
  if (forked()) return 0;
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int>(kept_.size());
}

int Reserve::limit() const {
  if (forked()) return 0;
  std::lock_guard<std::mutex> lock(mutex_);
  return limit_;
}

void Reserve::set_limit(int limit) {
  if (forked()) return;
  std::vector<std::unique_ptr<Worker>> over;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    limit_ = std::max(limit, 0);
    while (static_cast<int>(kept_.size()) > limit_) {  // the oldest go first
      over.push_back(std::move(kept_.front()));
      kept_.erase(kept_.begin());
    }
  }
  end(std::move(over));
}

void Reserve::close() {
  if (forked()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    open_ = false;
  }
  clear();
}

void Reserve::open() {
  if (forked()) return;
  std::lock_guard<std::mutex> lock(mutex_);
  open_ = true;
}

void Reserve::end(std::vector<std::unique_ptr<Worker>> workers) {
  for (auto& worker : workers) worker->request_stop();
  workers.clear();  // joins each: parked, it ends its interpreter at once
}

}  // namespace ipp
