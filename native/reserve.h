// The process-wide reserve: workers whose pool ended, kept alive (thread and interpreter) for the next pool.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "worker.h"

namespace ipp {

// Why keep them: CPython 3.12 and 3.13 keep about 2 MiB of every sub-interpreter they end (its
// object arenas), so a loop that makes and closes pools grows without bound; and a new
// interpreter costs several milliseconds to create, a kept one a setup() call. A kept worker is
// parked (see Worker::request_retire): its __main__ and builtins are as new, the modules its
// cells imported stay.
//
// Threading contract: any main-interpreter thread, with the main GIL released: ending a worker
// (put() over the limit, clear(), set_limit(), close()) blocks until its interpreter has ended,
// which takes the main GIL. In a forked child the reserve is never used: it holds nothing there
// (the fork hook emptied it), and its lock may have been held by a thread of the parent.
class Reserve {
 public:
  static constexpr int kDefaultLimit = 64;
  static Reserve& instance();

  // Up to `count` kept workers that run `modules`, for a pool to adopt (Worker::adopt).
  std::vector<std::unique_ptr<Worker>> take(const std::string& modules, std::size_t count);
  // A parked worker: kept if the reserve is open and has room, else ended.
  void put(std::unique_ptr<Worker> worker);
  int clear();  // ends every kept worker; returns how many
  int size() const;
  int limit() const;
  void set_limit(int limit);  // ends those over it
  // While closed (the process forks or exits: no interpreter may outlive that) nothing is kept
  // and put() ends the worker; close() ends those kept.
  void close();
  void open();

 private:
  Reserve();
  bool forked() const;  // in a child forked from the process that made it
  static void end(std::vector<std::unique_ptr<Worker>> workers);  // all at once, then joined

  const pid_t owner_pid_;
  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<Worker>> kept_;  // parked, oldest first
  int limit_ = kDefaultLimit;
  bool open_ = true;
};

}  // namespace ipp
