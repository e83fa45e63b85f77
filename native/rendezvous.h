// What the interpreters of one process share: a barrier per pool, and named queues of bytes.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace ipp {

// Why a barrier cannot be passed (a worker raised, left its task, or timed out, or the barrier
// was aborted); the bindings turn it into threading.BrokenBarrierError.
class BarrierBroken : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Everything here holds plain bytes and C++ state, never a PyObject: objects belong to one
// interpreter, while these are reached from all of them (one copy per process, since the
// extension module is loaded once). No method needs the GIL; waits must be called with it
// released, and they wait at most `timeout` so that the caller can see interrupts between waits.
class Rendezvous {
 public:
  static Rendezvous& instance();

  // The engine, on each worker's thread: a task of run `run` of pool `group` starts / ended.
  // A new run resets the pool's barrier; a worker that ends its task (raising or not) breaks
  // the barrier for those waiting on it, since it will never arrive.
  // raised: "Type: message" of the exception that ended the task, or null if it ended normally.
  void enter(std::uint64_t group, std::uint64_t run);
  void leave(std::uint64_t group, int rank, const std::string* raised);
  // A worker's runtime, during its task: this worker is not one of the run's targets, so it is
  // no party to the run's barrier and its leaving breaks nothing.
  void excuse(std::uint64_t group, int rank);
  void forget(std::uint64_t group);  // the pool closed

  // A worker reaches the barrier of its pool (parties: the run's workers); returns a ticket to
  // wait() on. Throws BarrierBroken.
  std::uint64_t arrive(std::uint64_t group, int parties);
  // True once every party has arrived for that ticket; false at the timeout. Throws BarrierBroken.
  bool wait(std::uint64_t group, std::uint64_t ticket, double timeout);
  void abort(std::uint64_t group, const std::string& why);

  // Named bytes kept once for every interpreter to read, however many do: the executor's
  // pickled functions, which then travel once rather than with every call.
  void share(const std::string& name, std::string value);
  std::shared_ptr<const std::string> shared(const std::string& name);  // null if there is none
  void unshare(const std::string& name);

  void put(const std::string& queue, std::string item);
  // The oldest item, or nullopt at the timeout; yields the CPU for up to `spin` seconds before it blocks.
  std::optional<std::string> get(const std::string& queue, double timeout, double spin = 0);
  std::size_t size(const std::string& queue);
  std::size_t clear(const std::string& queue);  // drops the items; returns how many

 private:
  struct Barrier {
    std::uint64_t run = 0;
    std::uint64_t generation = 0;  // passings so far; a ticket is the generation it waits to pass
    int arrived = 0;
    std::string left;              // how the first task of this run to end ended ("" while none has)
    std::string broken;            // why, once broken (until the next run)
    std::set<int> excused;         // workers that are not the run's targets
  };
  struct Queue {
    std::mutex mutex;
    std::condition_variable ready;
    std::deque<std::string> items;
  };

  Barrier& barrier(std::uint64_t group);  // requires barrier_mutex_
  std::shared_ptr<Queue> queue(const std::string& name);

  std::mutex barrier_mutex_;
  std::condition_variable barrier_cv_;
  std::map<std::uint64_t, Barrier> barriers_;

  std::mutex shared_mutex_;
  std::map<std::string, std::shared_ptr<const std::string>> shared_;

  std::mutex queues_mutex_;  // lock order: queues_mutex_ is never held while a Queue's is taken
  std::map<std::string, std::shared_ptr<Queue>> queues_;
};

}  // namespace ipp
