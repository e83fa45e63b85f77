// ipy_parallel._engine: the pybind11 face of the engine, and the only file that includes pybind11.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "floor.h"
#include "native_kernel.h"
#include "pool.h"
#include "rendezvous.h"

namespace py = pybind11;

namespace {

// Every open pool, so that one atexit hook can end them all before the main interpreter
// finalizes: finalizing with live sub-interpreters aborts on 3.12, and on 3.13 a worker that
// needs the main GIL to end its interpreter would hang once finalization has begun.
std::mutex g_live_mutex;
std::vector<ipp::Pool*> g_live;

void close_released(ipp::Pool& pool) {
  if (pool.closed()) return;
  py::gil_scoped_release release;  // the workers take the main GIL to end their interpreters
  pool.close();
}

void close_all_pools() {
  std::vector<ipp::Pool*> live;
  {
    std::lock_guard<std::mutex> lock(g_live_mutex);
    live = g_live;
  }
  for (ipp::Pool* pool : live) close_released(*pool);
}

class PoolHandle {
 public:
  PoolHandle(int n_workers, std::string runtime_code) {
    // gh-136421: importing _datetime concurrently in several isolated interpreters crashes
    // 3.13.0. Loading it once in the main interpreter first avoids the race.
    PyObject* datetime = PyImport_ImportModule("_datetime");
    if (datetime == nullptr) PyErr_Clear();
    Py_XDECREF(datetime);
    {
      py::gil_scoped_release release;  // workers take the main GIL while they create interpreters
      pool_ = std::make_unique<ipp::Pool>(n_workers, std::move(runtime_code));
    }
    std::lock_guard<std::mutex> lock(g_live_mutex);
    g_live.push_back(pool_.get());
  }

  ~PoolHandle() {
    {
      std::lock_guard<std::mutex> lock(g_live_mutex);
      g_live.erase(std::remove(g_live.begin(), g_live.end(), pool_.get()), g_live.end());
    }
    close_released(*pool_);
  }

  ipp::Pool& pool() { return *pool_; }

 private:
  std::unique_ptr<ipp::Pool> pool_;
};

py::object bytes_or_none(const std::optional<std::string>& s) {
  return s ? py::object(py::bytes(*s)) : py::object(py::none());
}

py::tuple result_tuple(const ipp::TaskResult& r) {
  py::object error = py::none();
  if (r.error) {
    error = py::make_tuple(py::str(r.error->type_name), py::str(r.error->message), py::str(r.error->traceback),
                           bytes_or_none(r.error->pickled));
  }
  return py::make_tuple(r.worker_id, bytes_or_none(r.value), py::str(r.out), py::str(r.err), error, r.wall_time,
                        r.cpu_time, r.value_format);
}

// Runs fn with the GIL released; a BarrierBroken it throws becomes threading.BrokenBarrierError
// once the GIL is back (no Python error may be set without it).
template <typename Fn>
auto released_rendezvous(Fn fn) -> decltype(fn()) {
  std::string broken;
  {
    py::gil_scoped_release release;
    try {
      return fn();
    } catch (const ipp::BarrierBroken& e) {
      broken = e.what();
    }
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
  m.def("barrier_abort", [&rv](std::uint64_t group, const std::string& why) { rv.abort(group, why); },
        py::arg("group"), py::arg("why"), "Break the barrier of pool `group` until its next run.");
  m.def("queue_put", [&rv](const std::string& name, const py::bytes& item) {
    rv.put(name, item.cast<std::string>());
  }, py::arg("name"), py::arg("item"), "Append bytes to the process-wide queue `name`.");
  m.def("queue_get", [&rv](const std::string& name, double timeout) -> py::object {
    std::optional<std::string> item;
    {
      py::gil_scoped_release release;
      item = rv.get(name, timeout);
    }
    return item ? py::object(py::bytes(*item)) : py::object(py::none());
  }, py::arg("name"), py::arg("timeout"),
     "The oldest bytes of queue `name`, waiting up to timeout seconds with the GIL released; None if none came.");
  m.def("queue_size", [&rv](const std::string& name) { return rv.size(name); }, py::arg("name"));
  m.def("queue_clear", [&rv](const std::string& name) { return rv.clear(name); }, py::arg("name"),
        "Drop every item of queue `name`; returns how many there were.");
}

}  // namespace

// Loadable in every interpreter (pybind11 >= 3 keeps its state per interpreter), so that a
// worker can reach the shared queues and barrier; the pool itself exists only in the main one.
PYBIND11_MODULE(_engine, m, py::multiple_interpreters::per_interpreter_gil()) {
  m.doc() = "The C++ engine of ipy_parallel: a warm pool of isolated sub-interpreters, one thread each.";
  def_rendezvous(m);
  if (PyInterpreterState_Get() != PyInterpreterState_Main()) return;

  py::class_<PoolHandle>(m, "Pool")
      .def(py::init<int, std::string>(), py::arg("n_workers"), py::arg("runtime_code"),
           "Start n_workers threads, each creating one isolated sub-interpreter (all in parallel) and "
           "running runtime_code (a marshalled code object) and its setup(worker_id, n_workers, emit, "
           "sleep, group) in it. Blocks until all are ready; releases the GIL meanwhile.")
      .def_property_readonly("size", [](PoolHandle& h) { return h.pool().size(); })
      .def_property_readonly("group", [](PoolHandle& h) { return h.pool().group(); },
                             "This pool's id in the process: its workers' barrier")
      .def_property_readonly("closed", [](PoolHandle& h) { return h.pool().closed(); })
      .def_property_readonly("busy", [](PoolHandle& h) { return h.pool().busy(); })
      .def_property_readonly("runs", [](PoolHandle& h) { return h.pool().runs(); })
      .def(
          "start",
          [](PoolHandle& h, const std::string& source, const std::string& filename, const py::list& payloads,
             double wait) {
            std::vector<std::string> copies;
            copies.reserve(payloads.size());
            for (const auto& p : payloads) copies.push_back(p.cast<py::bytes>().cast<std::string>());
            h.pool().start(source, filename, std::move(copies));
            if (wait <= 0) return false;
            py::gil_scoped_release release;
            return h.pool().wait(wait);
          },
          py::arg("source"), py::arg("filename"), py::arg("payloads"), py::arg("wait") = 0.0,
          "Hand one task to every worker, then wait up to `wait` seconds (GIL released) as wait() "
          "does; True when the run is already done. payloads: [] for no inputs, [b] for the same "
          "bytes everywhere, or one bytes per worker. Starting and waiting in one call spares a "
          "short run a GIL round trip.")
      .def(
          "wait",
          [](PoolHandle& h, double timeout) {
            py::gil_scoped_release release;
            return h.pool().wait(timeout);
          },
          py::arg("timeout"), "Block up to timeout seconds, GIL released; True once every worker is done.")
      .def(
          "collect",
          [](PoolHandle& h) {
            py::list out;
            for (const auto& r : h.pool().collect()) out.append(result_tuple(r));
            return out;
          },
          "The finished run's results: (worker_id, value, stdout, stderr, error, wall, cpu, "
          "value_format) per worker; value is pickled (format 0) or marshalled (1); error is None "
          "or (type_name, message, traceback, exception_pickle).")
      .def("close", [](PoolHandle& h) { close_released(h.pool()); },
           "Interrupt running tasks, end every interpreter and join every thread (a worker blocked in C "
           "code is waited for). Harmless twice.")
      .def("interrupt", [](PoolHandle& h) { return h.pool().interrupt(); },
           "Raise KeyboardInterrupt in every worker still running: at its next bytecode, or at once "
           "in time.sleep. Returns their ids. A worker blocked in other C code stops when it returns.")
      .def("busy_workers", [](PoolHandle& h) { return h.pool().busy_workers(); },
           "The ids of the workers still running the current run.")
      .def("cpu_times", [](PoolHandle& h) { return h.pool().cpu_times(); },
           "CPU seconds used so far by each worker's thread (read without stopping them).")
      .def("set_streaming", [](PoolHandle& h, bool on) { h.pool().set_streaming(on); }, py::arg("on"),
           "Also queue output for drain_output() as it is written.")
      .def(
          "drain_output",
          [](PoolHandle& h) {
            py::list out;
            for (const auto& c : h.pool().drain_output()) out.append(py::make_tuple(c.worker_id, c.stream, py::str(c.text)));
            return out;
          },
          "Output written since the last call, as (worker_id, stream, text); stream 1 is stdout, 2 stderr.");

  py::class_<ipp::CondvarFloor>(m, "CondvarFloor")
      .def(py::init<int, int>(), py::arg("n_threads"), py::arg("spin_micros") = 0,
           "The latency floor: n_threads bare C++ threads sleeping on condition variables. With "
           "spin_micros, the waiter first yields that long, as the pool's does.")
      .def(
          "round_trips",
          [](ipp::CondvarFloor& floor, int iterations) {
            py::gil_scoped_release release;
            return floor.round_trips(iterations);
          },
          py::arg("iterations"), "Seconds per round trip: wake every thread and wait for all to answer.");

  m.def(
      "seed_kernel",
      [](const std::vector<std::int64_t>& ns) {
        py::gil_scoped_release release;
        return ipp::seed_kernel(ns);
      },
      py::arg("ns"),
      "The seed workload in C++: for each n, k = k * i % 1000000007 over i = n..2, each on its own "
      "std::thread, all at once, with the GIL released.");
  m.attr("SEED_KERNEL_MAX_N") = ipp::kMaxSeedN;
  m.attr("POOL_SPIN_MICROS") = ipp::Pool::kSpinMicros;
  m.def("close_all_pools", &close_all_pools, "Close every open pool (registered with atexit and before fork).");
  py::module_::import("atexit").attr("register")(py::cpp_function(&close_all_pools));
  // A child forked while sub-interpreters are alive crashes in PyOS_AfterFork_Child on
  // 3.12-3.14 (gh-101437, gh-139759): end them first. This hook runs before os.fork() takes
  // the runtime's locks, so the workers can still end their interpreters.
  py::module_::import("os").attr("register_at_fork")(py::arg("before") = py::cpp_function(&close_all_pools));
}
