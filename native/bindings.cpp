// ipy_parallel._engine: the pybind11 face of the engine, and the only file that includes pybind11.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <optional>
#include <type_traits>
#include <chrono>
#include <cstdio>
#include <thread>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "counted.h"
#include "floor.h"
#include "lent.h"
#include "lock_hold.h"
#include "native_kernel.h"
#include "engine.h"
#include "rendezvous.h"
#include "reserve.h"

namespace py = pybind11;

namespace {

// Every open pool, so that one atexit hook can end them all before the main interpreter
// finalizes: finalizing with live sub-interpreters aborts on 3.12, and on 3.13 a worker that
// needs the main GIL to end its interpreter would hang once finalization has begun.
std::mutex g_live_mutex;
std::vector<ipp::Engine*> g_live;
bool g_exiting = false;             // at_exit() has begun: no new pools (g_live_mutex)
std::vector<ipp::Engine*> g_forked;   // pools the fork hook closed, which may start again (g_live_mutex)
int g_creating = 0;                 // pools whose workers are being created, not yet in g_live (g_live_mutex)
std::condition_variable g_created;  // g_creating went down
// From the before-fork hook until the fork is over (the after hooks, in parent and child): no
// pool may start (g_live_mutex). Without a GIL (3.14t) another thread runs meanwhile, and one
// that started a pool there (a warm start, a pool restarting after the hook closed it) would
// have sub-interpreters alive as the process forks: the child then crashes (gh-139759).
bool g_forking = false;
std::condition_variable g_fork_over;
constexpr double kForkWaitSeconds = 30.0;  // a fork whose after hook never runs does not block pools for good

// Runs fn() with the GIL released and takes it back after, in a plain function rather than a
// destructor (py::gil_scoped_release's): once the interpreter finalizes, taking the GIL ends any
// thread but the finalizing one (pthread_exit), and the forced unwind that does it must not
// leave a noexcept frame, or the process aborts ("terminate called without an active
// exception"). A daemon thread waiting in the engine at exit is such a thread.
template <typename Fn>
auto without_gil(Fn&& fn) -> decltype(fn()) {
  using Result = decltype(fn());
  std::exception_ptr error;
  PyThreadState* saved = PyEval_SaveThread();
  if constexpr (std::is_void_v<Result>) {
    try {
      fn();
    } catch (...) {
      error = std::current_exception();
    }
    PyEval_RestoreThread(saved);
    if (error) std::rethrow_exception(error);
  } else {
    std::optional<Result> result;
    try {
      result.emplace(fn());
    } catch (...) {
      error = std::current_exception();
    }
    PyEval_RestoreThread(saved);
    if (error) std::rethrow_exception(error);
    return std::move(*result);
  }
}

py::list abandoned_list(const std::vector<ipp::Abandoned>& given_up) {
  py::list out;
  for (const auto& a : given_up) out.append(py::make_tuple(a.worker_id, a.why));
  return out;
}

// Closes with the default bounds, GIL released (the workers take the main GIL to end their
// interpreters); for atexit, fork and a handle that is garbage collected.
void close_released(ipp::Engine& pool) {
  without_gil([&] { pool.close(); });
}

// Called with the GIL held; waits (GIL released: the workers need it to create their
// interpreters) up to `seconds` until no pool is being created, so that a pool started in
// another thread (%load_ext warms one) is in g_live when the caller closes them all.
void wait_for_creations(double seconds) {
  without_gil([&] {
    std::unique_lock<std::mutex> lock(g_live_mutex);
    g_created.wait_for(lock, std::chrono::duration<double>(seconds), [] { return g_creating == 0; });
  });
}

void close_all_pools() {
  std::vector<ipp::Engine*> live;
  {
    std::lock_guard<std::mutex> lock(g_live_mutex);
    live = g_live;
  }
  for (ipp::Engine* pool : live) close_released(*pool);
}

// os.register_at_fork(before=): a child forked while sub-interpreters are alive crashes in
// PyOS_AfterFork_Child on 3.12-3.14 (gh-101437, gh-139759), so every pool ends first; these may
// start again after (Engine does, saying so).
void close_for_fork() {
  {
    std::lock_guard<std::mutex> lock(g_live_mutex);
    g_forking = true;
  }
  wait_for_creations(5.0);
  {
    std::lock_guard<std::mutex> lock(g_live_mutex);
    for (ipp::Engine* pool : g_live)
      if (!pool->closed()) g_forked.push_back(pool);
  }
  close_all_pools();
  without_gil([] { ipp::Reserve::instance().close(); });
}

// os.register_at_fork(after_in_parent=): pools may start again, and keep their ended workers.
void fork_over() {
  bool exiting = false;
  {
    std::lock_guard<std::mutex> lock(g_live_mutex);
    g_forking = false;
    exiting = g_exiting;
  }
  g_fork_over.notify_all();
  if (!exiting) ipp::Reserve::instance().open();  // the exit hook's close is for good
}

// The child has one thread: the flag is reset without the lock, which a thread of the parent may
// have held as it forked (that thread does not exist here). The reserve is not used there (its
// lock is in the same case, see Reserve): the child's pools end their interpreters as they close.
void fork_over_in_child() { g_forking = false; }

// The status the process leaves with when at_exit() cannot finalize: 1, as the status it was
// exiting with cannot be read from an atexit hook (Py_RunMain keeps it in a local), unless the
// program said which (the IPython extension: 0 when its shell exits as asked).
std::atomic<int> g_stuck_exit_status{1};

// The atexit hook: close every pool. Interpreters that could not be ended (their workers
// abandoned, or left to threads the cells started) cannot stay while the main interpreter
// finalizes: 3.12 aborts ("remaining subinterpreters"), 3.13 crashes beside one still running
// Python code and hangs on one whose threads still run. So the process then leaves without
// finalizing, after flushing what it wrote, with g_stuck_exit_status.
void at_exit() {
  {
    std::lock_guard<std::mutex> lock(g_live_mutex);
    g_exiting = true;  // a daemon thread's pool stays closed from now on
  }
  const ipp::compat::ExitStatus program;  // the main program's; the workers' stops are not
  wait_for_creations(5.0);
  close_all_pools();
  without_gil([] { ipp::Reserve::instance().close(); });  // kept workers end too, before finalizing
  ipp::release_lent();
  program.restore();
  const int alive = ipp::Interpreter::alive();
  if (alive == 0) return;
  for (const char* name : {"stdout", "stderr"}) {
    PyObject* stream = PySys_GetObject(name);  // borrowed
    if (stream != nullptr && stream != Py_None) {
      PyObject* done = PyObject_CallMethod(stream, "flush", nullptr);
      if (done == nullptr) PyErr_Clear();
      Py_XDECREF(done);
    }
  }
  const int status = g_stuck_exit_status.load();
  std::fprintf(stderr,
               "ipy_parallel: %d sub-interpreter(s) of abandoned workers could not be ended, and CPython cannot "
               "finalize beside them: exiting now without finalizing, with status %d\n",
               alive, status);
  std::fflush(nullptr);
  _exit(status);
}

class EngineHandle {
 public:
  EngineHandle(int n_workers, std::string modules, bool fresh) {
    // GIL released while a fork is under way: the forking thread's hooks need no GIL, but a
    // thread of ours holding it would keep the other Python threads from running meanwhile.
    const bool exiting = without_gil([] {
      std::unique_lock<std::mutex> lock(g_live_mutex);
      g_fork_over.wait_for(lock, std::chrono::duration<double>(kForkWaitSeconds), [] { return !g_forking; });
      if (!g_exiting) ++g_creating;
      return g_exiting;
    });
    if (exiting) throw std::runtime_error("the interpreter is exiting: no new pool can start");
    try {
      if (!ipp::compat::prepare_main_interpreter()) throw py::error_already_set();
      // Workers take the main GIL while they create their interpreters.
      engine_ = without_gil([&] { return std::make_unique<ipp::Engine>(n_workers, std::move(modules), fresh); });
    } catch (...) {
      created();
      throw;
    }
    created();
  }

  ~EngineHandle() {
    {
      std::lock_guard<std::mutex> lock(g_live_mutex);
      g_live.erase(std::remove(g_live.begin(), g_live.end(), engine_.get()), g_live.end());
      g_forked.erase(std::remove(g_forked.begin(), g_forked.end(), engine_.get()), g_forked.end());
    }
    collected_ = py::object();
    close_released(*engine_);
  }

  ipp::Engine& engine() { return *engine_; }

 private:
  // The creation is over: the pool (if any) joins g_live, for the atexit and fork hooks, in the
  // same step as the count goes down, so that a hook waiting for creations finds it there.
  void created() {
    {
      std::lock_guard<std::mutex> lock(g_live_mutex);
      if (engine_) g_live.push_back(engine_.get());
      --g_creating;
    }
    g_created.notify_all();
  }

 public:

  void start(const std::string& source, const std::string& filename, std::vector<std::string> payloads,
             ipp::Engine::LentInputs lent, bool stream) {
    {
      ipp::compat::StateLock::Held held(state_lock_);
      collected_ = py::object();  // the previous run's records belong to its Run object from now on
    }
    ipp::release_lent();
    engine_->start(source, filename, std::move(payloads), std::move(lent), stream);
  }

  // The finished run's result records, the same list each time until the next start(): a
  // caller interrupted before it kept them can ask again. A RAW value is copied here, once,
  // from the worker's own bytes object; then the workers free theirs.
  py::object collect() {
    ipp::release_lent();
    ipp::compat::StateLock::Held held(state_lock_);
    if (!collected_) {
      py::list out;
      bool raw = false;
      for (const auto& r : engine_->take_results()) {
        raw = raw || r.value_format == ipp::kRawFormat;
        out.append(result_record(r));
      }
      collected_ = std::move(out);
      if (raw) engine_->drop_raw();
    }
    return collected_;
  }

  // Closes within about `timeout` seconds (GIL released, signals looked at every 20 ms: a
  // Ctrl-C gives up waiting), then abandons the workers that have not ended. Returns them as
  // (worker_id, why); `abandoned` keeps them too, for a caller that got the KeyboardInterrupt.
  py::list close(double timeout) {
    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + std::chrono::duration<double>(std::max(timeout, 0.0));
    without_gil([&] { engine_->begin_close(); });
    bool interrupted = false;
    for (;;) {
      const double left = std::chrono::duration<double>(deadline - clock::now()).count();
      const bool ended = without_gil([&] { return engine_->wait_closed(std::min(0.02, std::max(left, 0.0))); });
      if (ended || left <= 0) break;
      if (PyErr_CheckSignals() != 0) {
        interrupted = true;
        break;
      }
    }
    const std::vector<ipp::Abandoned> given_up = without_gil([&] { return engine_->abandon(); });
    keep_abandoned(given_up);
    if (interrupted) throw py::error_already_set();
    return abandoned_list(given_up);
  }

  // The caller has the records now: the engine lets go of them, so that a value the user drops
  // is freed then rather than at the next start(). They die outside the lock.
  void release() {
    py::object records;
    {
      ipp::compat::StateLock::Held held(state_lock_);
      records = std::move(collected_);
    }
  }

  py::list abandoned() {
    ipp::compat::StateLock::Held held(state_lock_);
    return abandoned_list(abandoned_);
  }

  py::list resize(int n_workers) {
    {
      ipp::compat::StateLock::Held held(state_lock_);
      collected_ = py::object();
    }
    const auto given_up = without_gil([&] { return engine_->resize(n_workers); });
    keep_abandoned(given_up);
    return abandoned_list(given_up);
  }

  bool closed_for_fork() const {
    std::lock_guard<std::mutex> lock(g_live_mutex);
    return std::find(g_forked.begin(), g_forked.end(), engine_.get()) != g_forked.end();
  }

 private:
  py::tuple result_record(const ipp::TaskResult& r);

  void keep_abandoned(const std::vector<ipp::Abandoned>& given_up) {
    ipp::compat::StateLock::Held held(state_lock_);
    abandoned_.insert(abandoned_.end(), given_up.begin(), given_up.end());
  }

  std::unique_ptr<ipp::Engine> engine_;
  // Python threads may call one handle at once (the display's thread reads it during a run); on a
  // free-threaded build nothing else keeps them apart, so these two fields are read and written
  // under state_lock_ (see compat.h). The pool itself has locks of its own.
  ipp::compat::StateLock state_lock_;
  py::object collected_;  // the current run's records, once collected
  std::vector<ipp::Abandoned> abandoned_;
};

py::object bytes_or_none(const std::optional<std::string>& s) {
  return s ? py::object(py::bytes(*s)) : py::object(py::none());
}

// The protocol's result record (ipy_parallel/_wire/protocol.py's RESULT_FIELDS): (worker_id, value,
// stdout, stderr, error, wall_time, cpu_time, value_format), error None or (type_name, message,
// traceback, pickled exception | None) (its ERROR_FIELDS); tests/test_protocol.py holds the two to it.
py::tuple EngineHandle::result_record(const ipp::TaskResult& r) {
  static_assert(ipp::kErrorFields == 4 && ipp::kResultFields == 8,
                "protocol.py's records changed: build them here to its ERROR_FIELDS and RESULT_FIELDS");
  py::object error = py::none();
  if (r.error) {
    error = py::make_tuple(py::str(r.error->type_name), py::str(r.error->message), py::str(r.error->traceback),
                           bytes_or_none(r.error->pickled));
  }
  py::object value = bytes_or_none(r.value);
  if (r.value_format == ipp::kRawFormat) {
    const bool read = engine_->read_raw(r, [&](const char* data, size_t size) { value = py::bytes(data, size); });
    if (!read) {
      const char* why = "the worker dropped its result before it was collected";
      error = py::make_tuple(py::str("RuntimeError"), py::str(why), py::str(std::string("RuntimeError: ") + why + "\n"),
                             py::none());
    }
  }
  return py::make_tuple(r.worker_id, value, py::str(r.out), py::str(r.err), error, r.wall_time, r.cpu_time,
                        r.value_format);
}

// Runs fn with the GIL released; a BarrierBroken it throws becomes threading.BrokenBarrierError
// once the GIL is back (no Python error may be set without it).
template <typename Fn>
auto released_rendezvous(Fn fn) -> decltype(fn()) {
  std::string broken;
  try {
    return without_gil(fn);
  } catch (const ipp::BarrierBroken& e) {
    broken = e.what();
  }
  PyErr_SetString(py::module_::import("threading").attr("BrokenBarrierError").ptr(), broken.c_str());
  throw py::error_already_set();
}

// The part of the module every interpreter may load: what workers share (ipy_parallel.worker
// wraps it). It holds no Python state, so one copy of the library serves all interpreters.
void def_rendezvous(py::module_& m) {
  auto& rv = ipp::Rendezvous::instance();
  m.def("barrier_arrive", [&rv](std::uint64_t group, int parties) {
    return released_rendezvous([&] { return rv.arrive(group, parties); });
  }, py::arg("group"), py::arg("parties"),
     "Arrive at the barrier of pool `group`; returns a ticket for barrier_wait. Raises "
     "threading.BrokenBarrierError if a worker of the run raised or finished first.");
  m.def("barrier_wait", [&rv](std::uint64_t group, std::uint64_t ticket, double timeout) {
    return released_rendezvous([&] { return rv.wait(group, ticket, timeout); });
  }, py::arg("group"), py::arg("ticket"), py::arg("timeout"),
     "Wait up to timeout seconds, GIL released: True once all parties arrived. Raises "
     "threading.BrokenBarrierError if the barrier broke.");
  m.def("barrier_excuse", [&rv](std::uint64_t group, int rank) { rv.excuse(group, rank); }, py::arg("group"),
        py::arg("rank"), "Worker `rank` is not one of this run's targets: no party to its barrier.");
  m.def("barrier_abort", [&rv](std::uint64_t group, const std::string& why) { rv.abort(group, why); },
        py::arg("group"), py::arg("why"), "Break the barrier of pool `group` until its next run.");
  m.def("shared_put", [&rv](const std::string& name, const py::bytes& value) {
    rv.share(name, value.cast<std::string>());
  }, py::arg("name"), py::arg("value"), "Keep bytes under `name` for every interpreter of the process.");
  m.def("shared_get", [&rv](const std::string& name) -> py::object {
    const auto value = rv.shared(name);
    if (!value) return py::none();
    return py::bytes(*value);
  }, py::arg("name"), "A copy of the bytes kept under `name`, or None.");
  m.def("shared_drop", [&rv](const std::string& name) { rv.unshare(name); }, py::arg("name"),
        "Forget the bytes kept under `name`.");
  m.def("queue_put", [&rv](const std::string& name, const py::bytes& item) {
    rv.put(name, item.cast<std::string>());
  }, py::arg("name"), py::arg("item"), "Append bytes to the process-wide queue `name`.");
  m.def("queue_get", [&rv](const std::string& name, double timeout, double spin) -> py::object {
    const std::optional<std::string> item = without_gil([&] { return rv.get(name, timeout, spin); });
    return item ? py::object(py::bytes(*item)) : py::object(py::none());
  }, py::arg("name"), py::arg("timeout"), py::arg("spin") = 0.0,
     "The oldest bytes of queue `name`, waiting up to timeout seconds with the GIL released; None if none "
     "came. With spin, first yields the CPU for up to that many seconds instead of blocking at once: "
     "cheaper when an item is about to come (a vCPU that halts is slow to wake).");
  m.def("queue_size", [&rv](const std::string& name) { return rv.size(name); }, py::arg("name"));
  m.def("queue_clear", [&rv](const std::string& name) { return rv.clear(name); }, py::arg("name"),
        "Drop every item of queue `name`; returns how many there were.");
}

}  // namespace

// Loadable in every interpreter (pybind11 >= 3 keeps its state per interpreter), so that a
// worker can reach the shared queues and barrier; the pool itself exists only in the main one.
//
// py::mod_gil_not_used(): on a free-threaded build, a module that does not say so turns the GIL
// on for the whole process when it is imported. The engine's shared state is guarded by its own
// locks (g_live_mutex, the pools', the rendezvous', EngineHandle's state_lock_), never by the GIL.
PYBIND11_MODULE(_engine, m, py::mod_gil_not_used(), py::multiple_interpreters::per_interpreter_gil()) {
  m.doc() = "The C++ engine of ipy_parallel: a warm pool of isolated sub-interpreters, one thread each.";
  def_rendezvous(m);
  // A plain C type, not a pybind11 class: its __next__ runs once per item of a loop, where
  // pybind11's dispatch would cost more than the loop's own work.
  PyObject* counted = ipp::make_counted_type();
  if (counted == nullptr) throw py::error_already_set();
  m.add_object("Counted", py::reinterpret_steal<py::object>(counted));
  if (PyInterpreterState_Get() != PyInterpreterState_Main()) return;

  py::class_<EngineHandle>(m, "Engine")
      .def(py::init<int, std::string, bool>(), py::arg("n_workers"), py::arg("modules"), py::arg("fresh") = false,
           "Start n_workers workers (all in parallel), each a thread with one isolated sub-interpreter "
           "that installs the shipped modules (a marshalled list of (name, code object)) and calls "
           "setup(worker_id, n_workers, emit, sleep, group) of the last one. Workers kept in the "
           "reserve are taken first, unless fresh. Blocks until all are ready; releases the GIL meanwhile.")
      .def_property_readonly("size", [](EngineHandle& h) { return h.engine().size(); })
      .def_property_readonly("group", [](EngineHandle& h) { return h.engine().group(); },
                             "This pool's id in the process: its workers' barrier")
      .def_property_readonly("closed", [](EngineHandle& h) { return h.engine().closed(); })
      .def_property_readonly("busy", [](EngineHandle& h) { return h.engine().busy(); },
                             "A run was started and has not finished.")
      .def_property_readonly("runs", [](EngineHandle& h) { return h.engine().runs(); })
      .def_property_readonly("resizable", [](EngineHandle&) { return true; },
                             "resize() works (the Engine protocol, ipy_parallel/backends/engine.py).")
      .def_property_readonly("abandoned", &EngineHandle::abandoned,
                             "(worker_id, why) of every worker close() gave up on.")
      .def_property_readonly("closed_for_fork", &EngineHandle::closed_for_fork,
                             "Closed by the hook that runs before os.fork(), not by close(): it may start again.")
      .def(
          "start",
          [](EngineHandle& h, const std::string& source, const std::string& filename, const py::list& payloads,
             bool stream, double wait, const py::list& lent) {
            std::vector<std::string> copies;
            copies.reserve(payloads.size());
            for (const auto& p : payloads) copies.push_back(p.cast<py::bytes>().cast<std::string>());
            ipp::Engine::LentInputs inputs;
            for (const auto& group : lent) {
              auto& objects = inputs.emplace_back();
              for (const auto& object : group.cast<py::list>()) {
                auto one = ipp::Lent::from(object.ptr());
                if (!one) throw py::error_already_set();
                objects.push_back(std::move(one));
              }
            }
            h.start(source, filename, std::move(copies), std::move(inputs), stream);
            if (wait <= 0) return false;
            return without_gil([&] { return h.engine().wait(wait); });
          },
          py::arg("source"), py::arg("filename"), py::arg("payloads"), py::arg("stream") = false,
          py::arg("wait") = 0.0, py::arg("lent") = py::list(),
          "Hand one task to every worker, then wait up to `wait` seconds (GIL released) as wait() "
          "does; True when the run is already done. payloads: [] for no inputs, [b] for the same "
          "bytes everywhere, or one bytes per worker; stream: queue output for drain_output(); "
          "lent: [] or, for each payload, the list of objects it lends (ipy_parallel/_wire/protocol.py): "
          "a bytes or str is copied once into each worker, any other buffer is seen there in place, "
          "read-only, and released here once the workers' views of it are gone. Raises RuntimeError "
          "if the pool is closed or the previous run has not finished, BufferError if a buffer is "
          "not contiguous. Starting and waiting in one call spares a short run a GIL round trip.")
      .def(
          "wait",
          [](EngineHandle& h, double timeout) { return without_gil([&] { return h.engine().wait(timeout); }); },
          py::arg("timeout"), "Block up to timeout seconds, GIL released; True once every worker is done.")
      .def("collect", &EngineHandle::collect,
           "The finished run's result records (ipy_parallel/_wire/protocol.py), one per worker: the "
           "same list every time until the next start().")
      .def("release", &EngineHandle::release,
           "The caller has kept the finished run's records: drop the engine's (collect() then gives no "
           "more until the next start()).")
      .def("close", &EngineHandle::close, py::arg("timeout"),
           "Interrupt running tasks and end every worker within about `timeout` seconds, GIL "
           "released; workers that have not ended by then (blocked in C code, swallowing "
           "KeyboardInterrupt, or with threads of their own still running) are abandoned: left "
           "running, never joined. Returns them as (worker_id, why). A KeyboardInterrupt meanwhile "
           "abandons at once and propagates. Harmless twice.")
      .def("resize", &EngineHandle::resize, py::arg("n_workers"),
           "Between runs, grow to n_workers (the new ones start at once, GIL released) or shrink (the last "
           "ones end; any that cannot is abandoned and returned as (worker_id, why)). The workers that stay "
           "keep their interpreters and do not know the new size until told (the runtime's RESIZE). "
           "Raises RuntimeError if the pool is closed or a run has not finished.")
      .def("interrupt", [](EngineHandle& h) { return h.engine().interrupt(); },
           "Raise KeyboardInterrupt in every worker still running: at its next bytecode, or at once "
           "in time.sleep. Returns their ids. A worker blocked in other C code stops when it returns.")
      .def("busy_workers", [](EngineHandle& h) { return h.engine().busy_workers(); },
           "The ids of the workers still running the current run.")
      .def("cpu_times", [](EngineHandle& h) { return h.engine().cpu_times(); },
           "CPU seconds used so far by each worker's thread (read without stopping them).")
      .def(
          "progress",
          [](EngineHandle& h) {
            py::list out;
            for (const auto& p : h.engine().progress()) {
              if (p)
                out.append(py::make_tuple(p->first, p->second < 0 ? py::object(py::none()) : py::int_(p->second)));
              else
                out.append(py::none());
            }
            return out;
          },
          "Per worker, (done, total or None) of its task's ipy_parallel.worker.progress(), or None if it made "
          "none; asks each running task for a fresh reading, which the next call returns (never blocks).")
      .def(
          "drain_output",
          [](EngineHandle& h) {
            py::list out;
            for (const auto& c : h.engine().drain_output()) out.append(py::make_tuple(c.worker_id, c.stream, py::str(c.text)));
            return out;
          },
          "Output written since the last call, as (worker_id, stream, text); stream 1 is stdout, 2 stderr.");

  py::class_<ipp::LockHold>(m, "LockHold")
      .def(py::init([](const py::object& lock) { return std::make_unique<ipp::LockHold>(lock.ptr()); }),
           py::arg("lock"),
           "One `with` of `lock` (a threading.Lock) that an interrupt at any instant cannot leave held: "
           "the acquire is noted in C, and if the with statement is interrupted before its block "
           "(CPython gh-148874, 3.14) the object is dropped and releases the lock (native/lock_hold.h).")
      .def("__enter__", [](ipp::LockHold& hold) {
        if (!hold.enter()) throw py::error_already_set();
      }, "Acquire the lock, waiting as lock.acquire() does (a Ctrl-C meanwhile raises, not held).")
      .def("__exit__", [](ipp::LockHold& hold, const py::args&) {
        if (!hold.exit()) throw py::error_already_set();
        return false;
      });

  py::class_<ipp::CondvarFloor>(m, "CondvarFloor")
      .def(py::init<int, int>(), py::arg("n_threads"), py::arg("spin_micros") = 0,
           "The latency floor: n_threads bare C++ threads sleeping on condition variables. With "
           "spin_micros, the waiter first yields that long, as the pool's does.")
      .def(
          "round_trips",
          [](ipp::CondvarFloor& floor, int iterations) {
            return without_gil([&] { return floor.round_trips(iterations); });
          },
          py::arg("iterations"), "Seconds per round trip: wake every thread and wait for all to answer.");

  m.def(
      "seed_kernel",
      [](const std::vector<std::int64_t>& ns) { return without_gil([&] { return ipp::seed_kernel(ns); }); },
      py::arg("ns"),
      "The seed workload in C++: for each n, k = k * i % 1000000007 over i = n..2, each on its own "
      "std::thread, all at once, with the GIL released.");
  m.attr("SEED_KERNEL_MAX_N") = ipp::kMaxSeedN;
  m.attr("POOL_SPIN_MICROS") = ipp::Engine::kSpinMicros;
  m.attr("RAW_FORMAT") = ipp::kRawFormat;
  m.def("close_all_pools", &close_all_pools, "Close every open pool.");
  m.def(
      "prepare_main_interpreter",
      [] {
        if (!ipp::compat::prepare_main_interpreter()) throw py::error_already_set();
      },
      "Do in the main interpreter what a pool's start does there before its workers run (import "
      "_datetime, and the like: see compat.h); a new Engine does it too. Call it first where a pool "
      "is started in another thread, so that thread adds no module to sys.modules.");
  m.def("reserve_size", [] { return ipp::Reserve::instance().size(); },
        "Ended workers kept alive, parked, for the next pool (see reserve.h).");
  m.def("reserve_limit", [] { return ipp::Reserve::instance().limit(); }, "How many the reserve keeps at most.");
  m.def("set_reserve_limit", [](int limit) { without_gil([&] { ipp::Reserve::instance().set_limit(limit); }); },
        py::arg("limit"), "Keep at most `limit` (0: none); those over it end now. Blocks until they have, GIL released.");
  m.def("clear_reserve", [] { return without_gil([] { return ipp::Reserve::instance().clear(); }); },
        "End every kept worker's interpreter; returns how many. Blocks until they have, GIL released.");
  m.def("set_stuck_exit_status", [](int status) { g_stuck_exit_status.store(status); }, py::arg("status"),
        "The status the process exits with if interpreters the engine could not end keep it from "
        "finalizing (1 unless set: an atexit hook cannot read the status the program was exiting with).");
  m.def("interpreters_alive", &ipp::Interpreter::alive,
        "Sub-interpreters created by the engine and not ended (parked in the reserve, left alive, or of "
        "abandoned workers).");
  m.def(
      "_hold_gil",
      [](double seconds) {
        // On purpose neither releasing the GIL nor looking at signals: a worker that needed the
        // main interpreter's GIL meanwhile would wait until this returns.
        const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
        while (std::chrono::steady_clock::now() < until) std::this_thread::yield();
      },
      py::arg("seconds"), "Test only: keep the calling interpreter's GIL for `seconds`, letting nothing else run in it.");
  m.def("_fail_next_creations", [](int count) { ipp::testing::failing_creations.store(count); },
        py::arg("count"), "Test only: the next `count` interpreter creations fail as CPython's transient failure does.");
  py::module_::import("atexit").attr("register")(py::cpp_function(&at_exit));
  // A child forked while sub-interpreters are alive crashes in PyOS_AfterFork_Child on
  // 3.12-3.14 (gh-101437, gh-139759): end them first. This hook runs before os.fork() takes
  // the runtime's locks, so the workers can still end their interpreters.
  py::module_::import("os").attr("register_at_fork")(py::arg("before") = py::cpp_function(&close_for_fork),
                                                     py::arg("after_in_parent") = py::cpp_function(&fork_over),
                                                     py::arg("after_in_child") = py::cpp_function(&fork_over_in_child));
}
