// One OS thread that owns one isolated sub-interpreter and runs tasks in it, one at a time, for one pool after another.
#pragma once

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "interpreter.h"
#include "lent.h"
#include "wire_formats.h"  // generated from ipy_parallel/_wire/protocol.py

namespace ipp {

// What a worker is asked to run (ipy_parallel/_wire/protocol.py defines the task). Strings are
// shared, not copied, between the workers of a broadcast: a 100 MB input is held once in the
// main process until each worker has unpickled it.
struct Task {
  std::shared_ptr<const std::string> source;    // UTF-8 cell source, or an operation of the runtime
  std::shared_ptr<const std::string> filename;  // name shown in tracebacks
  std::shared_ptr<const std::string> payload;   // the payload bytes, or null for none
  std::vector<std::shared_ptr<const Lent>> lent;  // the payload's lent inputs, in its order
  std::uint64_t run = 0;                        // the pool's run number (its barrier's epoch)
  std::uint64_t generation = 0;                 // set by Worker::post
};


// An error record of the protocol: (type_name, message, traceback, pickled exception | None).
struct TaskError {
  std::string type_name, message, traceback;
  std::optional<std::string> pickled;
};

// What a worker made of a task: the fields of the protocol's result record.
struct TaskResult {
  int worker_id = -1;
  std::optional<std::string> value;  // the cell's last expression, serialized
  int value_format = 0;              // the protocol's PICKLE (0), MARSHAL (1) or RAW (2)
  // RAW: the value is a bytes object of the worker's interpreter, which the worker holds for the
  // main interpreter to copy (Worker::read_held) until it is told to drop it or runs its next task.
  std::size_t raw_size = 0;
  std::uint64_t generation = 0;  // of the task, for Worker::read_held
  std::string out, err;              // everything the task wrote to sys.stdout / sys.stderr
  std::optional<TaskError> error;
  double wall_time = 0, cpu_time = 0;
};

struct OutputChunk {
  int worker_id;
  int stream;  // 1 stdout, 2 stderr
  std::string text;
};

// Told by a worker when its task is done; called on the worker's thread, no thread state attached.
class Completion {
 public:
  virtual void task_done(TaskResult&& result) = 0;

 protected:
  ~Completion() = default;
};

class Worker {
 public:
  // Starts the thread, which creates the interpreter, installs the shipped modules in it
  // (`modules`: a marshalled list of (module name, code object), see ipy_parallel/_wire) and
  // calls setup() of the last one. group: the pool's process-wide id, for the barrier its
  // workers share (see rendezvous.h).
  Worker(int id, int n_workers, std::uint64_t group, std::shared_ptr<const std::string> modules, Completion& sink);
  ~Worker();  // request_stop() and join(); only for a worker whose thread has ended or will
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Blocks until the interpreter is ready; returns "" or why it could not start.
  std::string wait_ready();
  void post(Task task);
  void request_stop();    // finish the current task, then end the interpreter
  // Finish the current task, then, if the interpreter can serve another pool (no thread a cell
  // started is left in it, and the runtime reset it: see its recycle()), park: keep thread and
  // interpreter, idle, until adopt() or request_stop(). Otherwise end it, as request_stop().
  void request_retire();
  // A parked worker joins another pool as its worker `id` of `n_workers`: it sets its runtime up
  // again for them, as a new worker would; wait_ready() then says whether it could.
  void adopt(int id, int n_workers, std::uint64_t group, Completion& sink);
  bool runs(const std::string& modules) const { return *modules_ == modules; }  // installed these
  void join();

  // Ending: a worker's thread ends once it has ended (or left) its interpreter. True once it
  // has, or has failed to start, or has parked.
  bool wait_ended(std::chrono::steady_clock::time_point deadline);
  bool parked() const;
  // Give up on a worker whose thread has not ended: it will never report to its sink again (nor
  // park: it ends once its task does), its thread is detached, and this object must then be
  // leaked (the thread still uses it).
  void abandon();
  // Why the interpreter was left alive instead of ended ("" if it was ended); once ended.
  std::string left_alive() const;

  // The RAW value of this worker's task `generation`: fn(data, size) with the worker kept from
  // dropping it meanwhile; false (fn not called) if it has gone. Any thread.
  template <typename Fn>
  bool read_held(std::uint64_t generation, Fn&& fn) {
    std::lock_guard<std::mutex> lock(held_mutex_);
    if (held_ == nullptr || held_generation_ != generation) return false;
    fn(held_data_, held_size_);
    return true;
  }
  void drop_held();  // the main interpreter has its copy: free the value now rather than at the next task

  double cpu_time() const;  // CPU seconds used by this worker's thread since it joined its pool

  // Raise KeyboardInterrupt in the task this worker was last given, if unfinished: at its next
  // bytecode (a pending call into its interpreter), at once if it sleeps in time.sleep (which
  // the runtime replaces with sleep()), or as it starts if it has not yet. Returns whether
  // there was such a task. Any thread, no GIL.
  bool interrupt();
  bool running() const;
  // Still running a task that was first interrupted at least `seconds` ago: one that a run
  // has given up on (blocked in C, swallowing KeyboardInterrupt), which closing need not wait for.
  bool stuck_for(double seconds) const;

  // The position of this worker's task in its worker.progress(): (done, total), total -1 if not
  // known; nullopt if the task has made none (or none was read yet). Asks the task for a fresh
  // reading, which the next call sees: at its next bytecode, a pending call into its
  // interpreter has the runtime emit it (one call outstanding at most). Any thread, no GIL.
  std::optional<std::pair<std::int64_t, std::int64_t>> progress();

  // The runtime's time.sleep: waits with this interpreter's GIL released; true if interrupted.
  bool sleep(double seconds);
  void set_streaming(bool on);
  void drain_output(std::vector<OutputChunk>& into);

  // Called by the runtime inside the interpreter (through emit_function) for each write.
  void emit(int stream, const char* data, size_t size);

 private:
  enum class State { starting, ready, failed, parked, ended };
  void main();
  void announce(const std::string& failure);  // ready, or failed to start
  void serve();              // runs the tasks posted until a stop is requested
  void start_interpreter();  // creates it and loads the runtime; throws std::runtime_error
  bool load_runtime();       // attached; false with a Python error set
  bool bind();               // attached: the runtime's setup() for this pool; false with a Python error set
  bool park();               // attached on entry: true once adopted (and bound or failed), false to end
  bool recycle();            // attached: the runtime reset for another pool, and the interpreter alone
  void end_interpreter();    // attached on entry; ends it, or leaves it alive if other threads run there
  void drop_runtime();       // attached: releases runtime_, run_fn_, teardown_fn_ and view_type_
  double thread_cpu() const;
  static int raise_interrupt(void* self);  // the pending call, in the worker's interpreter
  static int read_progress(void* self);    // likewise: the runtime's report_progress()
  void store_progress(const char* data, size_t size);  // the PROGRESS stream's "done total"
  TaskResult execute(const Task& task);
  PyObject* lent_tuple(const Task& task);  // attached: the objects the task's lent inputs become here
  void hold(PyObject* value, std::uint64_t generation);  // attached; steals value (null: hold nothing)
  void report(TaskResult&& result);

  // The pool's: set by the constructor or adopt(), read by the worker's thread only after.
  int id_, n_workers_;
  std::uint64_t group_;
  const std::shared_ptr<const std::string> modules_;

  std::mutex sink_mutex_;  // abandon() vs a task_done() in progress: the pool must not go meanwhile
  Completion* sink_;       // null once abandoned

  mutable std::mutex mailbox_mutex_;
  std::condition_variable mailbox_cv_;
  std::optional<Task> mailbox_;
  bool stop_requested_ = false;
  bool keep_ = false;       // the stop asked for is request_retire()'s, and no request_stop() came
  bool adopted_ = false;    // adopt() was called while parked
  bool threads_waited_for_ = false;  // recycle() gave the cells' threads their time (worker thread only)
  bool drop_held_ = false;  // drop_held() was called
  State state_ = State::starting;
  std::string start_error_;
  std::string left_alive_;  // why the interpreter was not ended

  // An interrupt is for one task. It raises once through a pending call (the first to take
  // interrupt_pending_ raises; a call that fires after its task ended does nothing), and from
  // then on every time.sleep of that task returns at once: the task was asked to stop. A
  // KeyboardInterrupt can be swallowed by C code that clears errors, so callers that must stop
  // a task interrupt it again until it ends (Engine's close, Run.stop).
  mutable std::mutex task_mutex_;
  std::condition_variable task_cv_;  // wakes sleep() on interrupt
  std::uint64_t posted_generation_ = 0;     // of the last task posted
  std::uint64_t finished_generation_ = 0;   // of the last task finished
  std::uint64_t task_generation_ = 0;       // of the task running, or of the last one
  std::uint64_t interrupt_generation_ = 0;  // the task that must stop
  std::chrono::steady_clock::time_point interrupted_at_;  // when that task was first interrupted
  bool interrupt_pending_ = false;
  bool task_running_ = false;
  bool take_interrupt();  // requires task_mutex_: true (and consumed) if pending for this task

  std::mutex output_mutex_;  // emit() on the worker thread vs drain_output() on the main thread
  std::string out_, err_;
  std::vector<OutputChunk> live_;
  bool streaming_ = false;
  void queue_live(int stream, const char* data, size_t size);  // requires output_mutex_

  // The task's position: written by the worker's emit(), read by any thread; both -1 when the
  // task has none, which post() resets it to. progress_asked_: a read_progress call is queued.
  std::atomic<std::int64_t> progress_done_{-1}, progress_total_{-1};
  std::atomic<bool> progress_asked_{false};

  clockid_t cpu_clock_{};
  std::atomic<bool> have_cpu_clock_{false};
  double cpu_mark_ = 0;  // this thread's CPU clock at the end of its last task (worker thread only)
  std::atomic<double> cpu_base_{0};  // its CPU clock when it joined its pool
  std::unique_ptr<Interpreter> interp_;  // created and destroyed on thread_
  // Raw pointers, not Refs: they belong to interp_'s heap and are released on this worker's
  // thread while it is attached (drop_runtime()), never by a destructor running elsewhere.
  PyObject* runtime_ = nullptr;          // the runtime module; owned by interp_'s heap: touch only while attached
  PyObject* run_fn_ = nullptr;           // likewise: setup()'s run, for the current pool
  PyObject* teardown_fn_ = nullptr;      // likewise
  PyObject* view_type_ = nullptr;        // likewise: make_view_type() of this interpreter

  // A RAW value, read by the main interpreter's thread while the worker holds this lock, and
  // dropped by the worker (attached to its own interpreter) under it: the lock is never taken
  // with the other order of GILs, so it cannot deadlock.
  std::mutex held_mutex_;
  PyObject* held_ = nullptr;  // owned by interp_'s heap
  const char* held_data_ = nullptr;
  std::size_t held_size_ = 0;
  std::uint64_t held_generation_ = 0;
  std::thread thread_;
};

}  // namespace ipp
