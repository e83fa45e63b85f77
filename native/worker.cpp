// One worker thread: creates its sub-interpreter, runs tasks in it, captures output and CPU time, ends it.
#include "worker.h"

#include "ref.h"
#include "rendezvous.h"

#include <marshal.h>

#include <signal.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <utility>

namespace ipp {
namespace {

constexpr const char* kCapsuleName = "ipy_parallel.worker";
constexpr double kTeardownSeconds = 0.5;  // threads a cell started get this long to finish at the end

double thread_cpu_seconds(clockid_t clock) {
  timespec ts{};
  if (clock_gettime(clock, &ts) != 0) return 0.0;
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Signals are for the main thread: CPython runs their Python handlers there only, and a blocking
// call of the main thread (a wait for this pool) must be the one a Ctrl-C interrupts. So worker
// threads, and the threads their cells start, block every asynchronous signal.
void block_async_signals() {
  sigset_t set;
  sigfillset(&set);
  for (int sync : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS}) sigdelset(&set, sync);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

// Copies a str (as UTF-8; a lone surrogate becomes its escape) or bytes object; false with a
// Python error set otherwise.
bool copy_text(PyObject* obj, std::string& out) {
  if (PyBytes_Check(obj)) {
    out.assign(PyBytes_AS_STRING(obj), static_cast<size_t>(PyBytes_GET_SIZE(obj)));
    return true;
  }
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(obj, &size);
  if (data != nullptr) {
    out.assign(data, static_cast<size_t>(size));
    return true;
  }
  if (!PyUnicode_Check(obj) || !PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return false;
  PyErr_Clear();
  const Ref encoded(PyUnicode_AsEncodedString(obj, "utf-8", "backslashreplace"));
  if (!encoded) return false;
  out.assign(PyBytes_AS_STRING(encoded.get()), static_cast<size_t>(PyBytes_GET_SIZE(encoded.get())));
  return true;
}

// emit(stream, text): the runtime's sys.stdout/sys.stderr write here. A C function rather than
// a module, so the worker needs no extension module that would have to be isolation-safe.
PyObject* emit_impl(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 2 || !PyLong_Check(args[0]) || !PyUnicode_Check(args[1])) {
    PyErr_SetString(PyExc_TypeError, "emit(stream: int, text: str)");
    return nullptr;
  }
  auto* worker = static_cast<Worker*>(PyCapsule_GetPointer(self, kCapsuleName));
  if (worker == nullptr) return nullptr;
  const long stream = PyLong_AsLong(args[0]);
  if (stream == -1 && PyErr_Occurred()) return nullptr;
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(args[1], &size);  // cached in the str: no copy
  if (data != nullptr) {
    worker->emit(static_cast<int>(stream), data, static_cast<size_t>(size));
    Py_RETURN_NONE;
  }
  PyErr_Clear();
  std::string text;  // lone surrogates: kept visible as their escapes rather than losing the write
  if (!copy_text(args[1], text)) return nullptr;
  worker->emit(static_cast<int>(stream), text.data(), text.size());
  Py_RETURN_NONE;
}

PyMethodDef emit_def = {"emit", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(emit_impl)),
                        METH_FASTCALL, "Append text to this worker's captured output."};

// sleep(seconds): time.sleep for a worker, which an interrupt ends at once. time.sleep itself
// cannot be interrupted outside the main thread (signals reach only that one), and neither a
// pending call nor an async exception is looked at while it waits.
PyObject* sleep_impl(PyObject* self, PyObject* arg) {
  auto* worker = static_cast<Worker*>(PyCapsule_GetPointer(self, kCapsuleName));
  if (worker == nullptr) return nullptr;
  const double seconds = PyFloat_AsDouble(arg);
  if (seconds == -1.0 && PyErr_Occurred()) return nullptr;
  if (seconds < 0) {
    PyErr_SetString(PyExc_ValueError, "sleep length must be non-negative");
    return nullptr;
  }
  if (std::isnan(seconds)) {
    PyErr_SetString(PyExc_ValueError, "Invalid value NaN (not a number)");
    return nullptr;
  }
  bool interrupted = false;
  Py_BEGIN_ALLOW_THREADS  // this interpreter's GIL: its other threads may run meanwhile
  interrupted = worker->sleep(seconds);
  Py_END_ALLOW_THREADS
  if (interrupted) {
    PyErr_SetNone(PyExc_KeyboardInterrupt);
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyMethodDef sleep_def = {"sleep", sleep_impl, METH_O,
                         "sleep(seconds): time.sleep, ended at once by an ipy_parallel interrupt."};

// Turns the raised exception into a TaskError; for failures outside the runtime's own handling.
TaskError error_from_raised() {
  TaskError error;
  const Ref exc(PyErr_GetRaisedException());
  if (!exc) {
    error.type_name = "SystemError";
    error.message = "the worker runtime failed without an exception";
  } else {
    error.type_name = Py_TYPE(exc.get())->tp_name;
    const Ref text(PyObject_Str(exc.get()));
    if (!text || !copy_text(text.get(), error.message)) {
      PyErr_Clear();
      error.message = "<exception str() failed>";
    }
  }
  error.traceback = error.type_name + ": " + error.message + "\n";
  return error;
}

// Reads run()'s reply, the protocol's (value | None, error record | None, value_format). A RAW
// value is not copied: `raw` gets a new reference to it.
bool unpack_reply(PyObject* reply, TaskResult& result, Ref& raw) {
  if (!PyTuple_Check(reply) || PyTuple_GET_SIZE(reply) != kReplyFields) {
    PyErr_SetString(PyExc_SystemError, "worker runtime returned a malformed reply");
    return false;
  }
  PyObject* value = PyTuple_GET_ITEM(reply, 0);
  PyObject* error = PyTuple_GET_ITEM(reply, 1);
  result.value_format = static_cast<int>(PyLong_AsLong(PyTuple_GET_ITEM(reply, 2)));
  if (result.value_format == -1 && PyErr_Occurred()) return false;
  if (value != Py_None && result.value_format == kRawFormat) {
    if (!PyBytes_CheckExact(value)) {
      PyErr_SetString(PyExc_SystemError, "worker runtime returned a RAW value that is not bytes");
      return false;
    }
    raw.reset(Py_NewRef(value));
    result.raw_size = static_cast<size_t>(PyBytes_GET_SIZE(value));
  } else if (value != Py_None) {
    result.value.emplace();
    if (!copy_text(value, *result.value)) return false;
  }
  if (error == Py_None) return true;
  if (!PyTuple_Check(error) || PyTuple_GET_SIZE(error) != kErrorFields) {
    PyErr_SetString(PyExc_SystemError, "worker runtime returned a malformed error");
    return false;
  }
  TaskError& e = result.error.emplace();
  if (!copy_text(PyTuple_GET_ITEM(error, 0), e.type_name) || !copy_text(PyTuple_GET_ITEM(error, 1), e.message) ||
      !copy_text(PyTuple_GET_ITEM(error, 2), e.traceback))
    return false;
  PyObject* pickled = PyTuple_GET_ITEM(error, 3);
  if (pickled != Py_None) {
    e.pickled.emplace();
    if (!copy_text(pickled, *e.pickled)) return false;
  }
  return true;
}

// Runs `code` as the module `name`, registered in sys.modules first (as import does, so that a
// later module of the list can import it). Returns a new reference, or null with an error set.
PyObject* install_module(PyObject* name, PyObject* code) {
  if (!PyUnicode_Check(name) || !PyCode_Check(code)) {
    PyErr_SetString(PyExc_TypeError, "the shipped modules must be (name, code object) pairs");
    return nullptr;
  }
  Ref module(PyModule_NewObject(name));
  if (!module) return nullptr;
  PyObject* dict = PyModule_GetDict(module.get());  // borrowed
  const Ref filename(PyObject_GetAttrString(code, "co_filename"));
  // Builtins of its own, copied now: a cell that patches the builtins module (builtins.list =
  // None) must not break the code that runs it (see ipy_parallel._wire.install).
  const Ref builtins(PyDict_Copy(PyEval_GetBuiltins()));
  if (!filename || !builtins || PyDict_SetItemString(dict, "__file__", filename.get()) != 0 ||
      PyDict_SetItemString(dict, "__builtins__", builtins.get()) != 0 ||
      PyDict_SetItem(PyImport_GetModuleDict(), name, module.get()) != 0)
    return nullptr;
  const Ref done(PyEval_EvalCode(code, dict, dict));
  return done ? module.release() : nullptr;
}

}  // namespace

Worker::Worker(int id, int n_workers, std::uint64_t group, std::shared_ptr<const std::string> modules,
               Completion& sink)
    : id_(id), n_workers_(n_workers), group_(group), modules_(std::move(modules)), sink_(&sink) {
  thread_ = std::thread([this] { main(); });
}

Worker::~Worker() {
  request_stop();
  join();
}

std::string Worker::wait_ready() {
  std::unique_lock<std::mutex> lock(mailbox_mutex_);
  mailbox_cv_.wait(lock, [this] { return state_ != State::starting; });
  return state_ == State::failed ? start_error_ : std::string();
}

void Worker::post(Task task) {
  {
    std::lock_guard<std::mutex> lock(task_mutex_);
    task.generation = ++posted_generation_;
  }
  progress_done_.store(-1);  // the previous task's position is not this one's
  progress_total_.store(-1);
  {
    std::lock_guard<std::mutex> lock(mailbox_mutex_);
    mailbox_ = std::move(task);
  }
  mailbox_cv_.notify_one();
}

void Worker::request_stop() {
  {
    std::lock_guard<std::mutex> lock(mailbox_mutex_);
    stop_requested_ = true;
    keep_ = false;  // also ends a parked worker
  }
  mailbox_cv_.notify_all();
}

void Worker::request_retire() {
  {
    std::lock_guard<std::mutex> lock(mailbox_mutex_);
    if (!stop_requested_) keep_ = true;  // a request_stop() already made wins
    stop_requested_ = true;
  }
  mailbox_cv_.notify_all();
}

void Worker::adopt(int id, int n_workers, std::uint64_t group, Completion& sink) {
  {
    std::lock_guard<std::mutex> lock(sink_mutex_);
    sink_ = &sink;
  }
  {
    std::lock_guard<std::mutex> lock(mailbox_mutex_);
    id_ = id;
    n_workers_ = n_workers;
    group_ = group;
    // Here, not as the worker wakes: a request_stop() that comes before it does must stand.
    stop_requested_ = keep_ = drop_held_ = false;
    mailbox_.reset();
    adopted_ = true;
    state_ = State::starting;  // wait_ready() waits for the setup
  }
  mailbox_cv_.notify_all();
}

bool Worker::parked() const {
  std::lock_guard<std::mutex> lock(mailbox_mutex_);
  return state_ == State::parked;
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

bool Worker::wait_ended(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mailbox_mutex_);
  return mailbox_cv_.wait_until(
      lock, deadline, [this] { return state_ == State::ended || state_ == State::failed || state_ == State::parked; });
}

void Worker::abandon() {
  request_stop();  // not park: nobody would adopt or end it
  {
    std::lock_guard<std::mutex> lock(sink_mutex_);
    sink_ = nullptr;
  }
  if (thread_.joinable()) thread_.detach();
}

std::string Worker::left_alive() const {
  std::lock_guard<std::mutex> lock(mailbox_mutex_);
  return left_alive_;
}

void Worker::report(TaskResult&& result) {
  std::lock_guard<std::mutex> lock(sink_mutex_);
  if (sink_ != nullptr) sink_->task_done(std::move(result));
}

double Worker::thread_cpu() const {
  return have_cpu_clock_.load(std::memory_order_acquire) ? thread_cpu_seconds(cpu_clock_) : 0.0;
}

double Worker::cpu_time() const { return thread_cpu() - cpu_base_.load(); }

void Worker::set_streaming(bool on) {
  std::lock_guard<std::mutex> lock(output_mutex_);
  streaming_ = on;
}

void Worker::drain_output(std::vector<OutputChunk>& into) {
  std::lock_guard<std::mutex> lock(output_mutex_);
  for (auto& chunk : live_) into.push_back(std::move(chunk));
  live_.clear();
}

void Worker::emit(int stream, const char* data, size_t size) {
  // The runtime keeps each stream of a task within the protocol's OUTPUT_LIMIT before it calls here.
  if (size == 0) return;
  if (stream == kProgressStream) return store_progress(data, size);
  std::lock_guard<std::mutex> lock(output_mutex_);
  (stream == 2 ? err_ : out_).append(data, size);
  queue_live(stream, data, size);
}

void Worker::queue_live(int stream, const char* data, size_t size) {
  if (!streaming_) return;
  if (!live_.empty() && live_.back().stream == stream)
    live_.back().text.append(data, size);
  else
    live_.push_back(OutputChunk{id_, stream, std::string(data, size)});
}

void Worker::main() {
  block_async_signals();
  clockid_t clock{};
  if (pthread_getcpuclockid(pthread_self(), &clock) == 0) {
    cpu_clock_ = clock;
    have_cpu_clock_.store(true, std::memory_order_release);
  }
  std::string failure;
  try {
    start_interpreter();
  } catch (const std::exception& e) {
    failure = e.what();
  }
  announce(failure);
  if (!failure.empty()) return;
  do {
    serve();
    interp_->attach();
    hold(nullptr, 0);
  } while (park());
  end_interpreter();
  {
    std::lock_guard<std::mutex> lock(mailbox_mutex_);
    state_ = State::ended;
  }
  mailbox_cv_.notify_all();
}

void Worker::announce(const std::string& failure) {
  cpu_mark_ = thread_cpu();
  cpu_base_.store(cpu_mark_);
  {
    std::lock_guard<std::mutex> lock(mailbox_mutex_);
    state_ = failure.empty() ? State::ready : State::failed;
    start_error_ = failure;
  }
  mailbox_cv_.notify_all();
}

void Worker::serve() {
  for (;;) {
    Task task;
    {
      std::unique_lock<std::mutex> lock(mailbox_mutex_);
      mailbox_cv_.wait(lock, [this] { return mailbox_.has_value() || stop_requested_ || drop_held_; });
      const bool drop = std::exchange(drop_held_, false);
      if (drop && !mailbox_ && !stop_requested_) {
        lock.unlock();
        Attached attached(*interp_);
        hold(nullptr, 0);
        continue;
      }
      if (!mailbox_) break;  // stop requested and nothing left to run
      task = std::move(*mailbox_);
      mailbox_.reset();
    }
    report(execute(task));
  }
}

bool Worker::park() {
  {
    std::lock_guard<std::mutex> lock(mailbox_mutex_);
    if (!keep_) return false;
  }
  Py_CLEAR(run_fn_);  // the last pool's streams and compiled cells, before recycle() collects
  if (!recycle()) return false;
  interp_->detach();
  {
    std::unique_lock<std::mutex> lock(mailbox_mutex_);
    state_ = State::parked;
    mailbox_cv_.notify_all();
    mailbox_cv_.wait(lock, [this] { return adopted_ || !keep_; });
    const bool adopted = std::exchange(adopted_, false);
    if (!adopted) {
      lock.unlock();
      interp_->attach();
      return false;
    }
    threads_waited_for_ = false;
  }
  {
    std::lock_guard<std::mutex> lock(task_mutex_);
    interrupt_pending_ = false;
  }
  {
    std::lock_guard<std::mutex> lock(output_mutex_);
    out_.clear();
    err_.clear();
    live_.clear();
    streaming_ = false;
  }
  interp_->attach();
  std::string failure;
  if (!bind()) failure = "cannot start the worker runtime again: " + error_from_raised().message;
  interp_->detach();
  announce(failure);
  if (failure.empty()) return true;
  interp_->attach();
  return false;
}

bool Worker::recycle() {
  const Ref done(PyObject_CallMethod(runtime_, "recycle", "d", kTeardownSeconds));
  if (!done) {
    PyErr_Clear();
    return false;
  }
  threads_waited_for_ = true;  // whatever it found: ending the interpreter then need not wait again
  const bool reset = PyObject_IsTrue(done.get()) == 1;
  if (PyErr_Occurred()) PyErr_Clear();
  return reset && interp_->alone(50);
}

void Worker::start_interpreter() {
  interp_ = std::make_unique<Interpreter>();  // attached on return
  if (!load_runtime() || !bind()) {
    std::string why = "cannot start the worker runtime: " + error_from_raised().message;
    drop_runtime();
    interp_.reset();
    throw std::runtime_error(why);
  }
  interp_->detach();
}

bool Worker::load_runtime() {
  const Ref modules(PyMarshal_ReadObjectFromString(modules_->data(), static_cast<Py_ssize_t>(modules_->size())));
  if (!modules) return false;
  if (!PyList_Check(modules.get()) || PyList_GET_SIZE(modules.get()) == 0) {
    PyErr_SetString(PyExc_TypeError, "the shipped modules must be a non-empty list");
    return false;
  }
  Ref last;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(modules.get()); ++i) {
    PyObject* entry = PyList_GET_ITEM(modules.get(), i);  // borrowed
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2) {
      PyErr_SetString(PyExc_TypeError, "the shipped modules must be (name, code object) pairs");
      return false;
    }
    last.reset(install_module(PyTuple_GET_ITEM(entry, 0), PyTuple_GET_ITEM(entry, 1)));
    if (!last) return false;
  }
  // The members are released by start_interpreter() and end_interpreter(), attached.
  teardown_fn_ = PyObject_GetAttrString(last.get(), "teardown");
  if (teardown_fn_ == nullptr) return false;
  view_type_ = make_view_type();
  if (view_type_ == nullptr) return false;
  runtime_ = last.release();
  return true;
}

bool Worker::bind() {
  const Ref capsule(PyCapsule_New(this, kCapsuleName, nullptr));
  if (!capsule) return false;
  const Ref emit(PyCFunction_New(&emit_def, capsule.get()));
  if (!emit) return false;
  const Ref sleep(PyCFunction_New(&sleep_def, capsule.get()));
  if (!sleep) return false;
  run_fn_ = PyObject_CallMethod(runtime_, "setup", "iiOOK", id_, n_workers_, emit.get(), sleep.get(),
                                static_cast<unsigned long long>(group_));
  return run_fn_ != nullptr;
}

void Worker::drop_runtime() {
  Py_CLEAR(runtime_);
  Py_CLEAR(run_fn_);
  Py_CLEAR(teardown_fn_);
  Py_CLEAR(view_type_);
}

void Worker::end_interpreter() {
  // Py_EndInterpreter joins the threads a cell started with threading (forever, if one never
  // ends) and aborts the whole process if any other thread of the interpreter is alive, a
  // _thread.start_new_thread one included. So the runtime first gives them a moment to finish
  // (and says whether any is left), and an interpreter that still has threads is left to them.
  bool alone = false;
  {
    const Ref done(PyObject_CallFunction(teardown_fn_, "d", threads_waited_for_ ? 0.0 : kTeardownSeconds));
    if (!done) {
      PyErr_Clear();
    } else {
      alone = PyObject_IsTrue(done.get()) == 1;
      if (PyErr_Occurred()) PyErr_Clear();
    }
  }
  alone = alone && interp_->alone(50);
  drop_runtime();
  if (alone) {
    interp_.reset();
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mailbox_mutex_);
    left_alive_ = "a thread the cells started is still running in it";
  }
  interp_->leave();
  interp_.reset();  // ends only our main-interpreter thread state
}

bool Worker::running() const {
  std::lock_guard<std::mutex> lock(task_mutex_);
  return finished_generation_ != posted_generation_;  // given a task it has not finished
}

bool Worker::stuck_for(double seconds) const {
  std::lock_guard<std::mutex> lock(task_mutex_);
  return finished_generation_ != posted_generation_ && interrupt_generation_ == posted_generation_ &&
         std::chrono::steady_clock::now() - interrupted_at_ >= std::chrono::duration<double>(seconds);
}

bool Worker::interrupt() {
  PyInterpreterState* interp = nullptr;
  {
    std::lock_guard<std::mutex> lock(task_mutex_);
    if (finished_generation_ == posted_generation_) return false;  // idle
    if (interrupt_generation_ != posted_generation_) interrupted_at_ = std::chrono::steady_clock::now();
    interrupt_generation_ = posted_generation_;
    interrupt_pending_ = true;
    if (task_running_ && task_generation_ == posted_generation_) interp = interp_->state();
  }
  task_cv_.notify_all();
  // The interpreter outlives the call: it ends only on this worker's thread, after its last
  // task. A task not started yet gets its pending call from execute().
  if (interp != nullptr) compat::add_pending_call(interp, &Worker::raise_interrupt, this);
  return true;
}

std::optional<std::pair<std::int64_t, std::int64_t>> Worker::progress() {
  PyInterpreterState* interp = nullptr;
  {
    std::lock_guard<std::mutex> lock(task_mutex_);
    if (task_running_ && task_generation_ == posted_generation_) interp = interp_->state();
  }
  // As interrupt(): the interpreter outlives the call. One call queued at most, so a task stuck
  // in C (no bytecode runs) never fills the interpreter's queue of pending calls, which its
  // interrupts need.
  if (interp != nullptr && !progress_asked_.exchange(true) && !compat::add_pending_call(interp, &Worker::read_progress, this))
    progress_asked_.store(false);
  const std::int64_t done = progress_done_.load();
  if (done < 0) return std::nullopt;
  return std::make_pair(done, progress_total_.load());
}

int Worker::read_progress(void* self) {
  auto* worker = static_cast<Worker*>(self);
  worker->progress_asked_.store(false);
  if (worker->runtime_ == nullptr) return 0;
  // Between two bytecodes of whatever runs there: the task's own exception state is left as it
  // was, and a failure to read is a reading missed, never an error of the task.
  PyObject* raised = PyErr_GetRaisedException();
  PyObject* done = PyObject_CallMethod(worker->runtime_, "report_progress", nullptr);
  if (done == nullptr) PyErr_Clear();
  Py_XDECREF(done);
  PyErr_SetRaisedException(raised);
  return 0;
}

void Worker::store_progress(const char* data, size_t size) {
  const std::string text(data, size);
  char* end = nullptr;
  const long long done = std::strtoll(text.c_str(), &end, 10);
  const long long total = std::strtoll(end, nullptr, 10);
  if (done < 0) return;
  progress_total_.store(total < 0 ? -1 : total);
  progress_done_.store(done);
}

bool Worker::take_interrupt() {
  if (!interrupt_pending_ || !task_running_ || interrupt_generation_ != task_generation_) return false;
  interrupt_pending_ = false;
  return true;
}

int Worker::raise_interrupt(void* self) {
  auto* worker = static_cast<Worker*>(self);
  bool stop = false;
  {
    std::lock_guard<std::mutex> lock(worker->task_mutex_);
    stop = worker->take_interrupt();
  }
  if (!stop) return 0;  // meant for a task that has ended, or already raised by sleep()
  PyErr_SetNone(PyExc_KeyboardInterrupt);
  return -1;
}

bool Worker::sleep(double seconds) {
  std::unique_lock<std::mutex> lock(task_mutex_);
  const auto stopped = [this] { return task_running_ && interrupt_generation_ == task_generation_; };
  // A sleep longer than steady_clock can count is a sleep until interrupted.
  const double capped = std::min(seconds, 1e9);
  if (!task_cv_.wait_for(lock, std::chrono::duration<double>(capped), stopped)) return false;
  interrupt_pending_ = false;  // raised here: the queued pending call must not raise it again
  return true;
}

PyObject* Worker::lent_tuple(const Task& task) {
  Ref objects(PyTuple_New(static_cast<Py_ssize_t>(task.lent.size())));
  if (!objects) return nullptr;
  for (size_t i = 0; i < task.lent.size(); ++i) {
    PyObject* object = Lent::receive(task.lent[i], view_type_);
    if (object == nullptr) return nullptr;
    PyTuple_SET_ITEM(objects.get(), static_cast<Py_ssize_t>(i), object);  // steals it
  }
  return objects.release();
}

void Worker::hold(PyObject* value, std::uint64_t generation) {
  PyObject* previous = nullptr;
  {
    std::lock_guard<std::mutex> lock(held_mutex_);
    previous = held_;
    held_ = value;
    held_data_ = value == nullptr ? nullptr : PyBytes_AS_STRING(value);
    held_size_ = value == nullptr ? 0 : static_cast<size_t>(PyBytes_GET_SIZE(value));
    held_generation_ = generation;
  }
  Py_XDECREF(previous);
}

void Worker::drop_held() {
  {
    std::lock_guard<std::mutex> lock(mailbox_mutex_);
    drop_held_ = true;
  }
  mailbox_cv_.notify_one();
}

TaskResult Worker::execute(const Task& task) {
  using clock = std::chrono::steady_clock;
  const auto wall_start = clock::now();
  TaskResult result;
  result.worker_id = id_;
  bool interrupted_early = false;
  const compat::ExitStatus before;
  {
    std::lock_guard<std::mutex> lock(task_mutex_);
    task_generation_ = task.generation;
    task_running_ = true;
    interrupted_early = interrupt_pending_ && interrupt_generation_ == task_generation_;
  }
  if (interrupted_early) compat::add_pending_call(interp_->state(), &Worker::raise_interrupt, this);
  result.generation = task.generation;
  Rendezvous::instance().enter(group_, task.run);
  {
    Attached attached(*interp_);
    hold(nullptr, 0);  // the previous task's value: the main interpreter has copied it, or never will
    const Ref source(
        PyUnicode_FromStringAndSize(task.source->data(), static_cast<Py_ssize_t>(task.source->size())));
    const Ref filename(
        PyUnicode_FromStringAndSize(task.filename->data(), static_cast<Py_ssize_t>(task.filename->size())));
    const Ref payload(task.payload ? PyBytes_FromStringAndSize(task.payload->data(),
                                                               static_cast<Py_ssize_t>(task.payload->size()))
                                   : Py_NewRef(Py_None));
    const Ref lent(task.lent.empty() ? nullptr : lent_tuple(task));
    Ref reply;
    Ref raw;
    if (source && filename && payload && (task.lent.empty() || lent)) {
      PyObject* args[] = {source.get(), filename.get(), payload.get(), lent.get()};
      reply.reset(PyObject_Vectorcall(run_fn_, args, lent ? 4 : 3, nullptr));
    }
    if (!reply || !unpack_reply(reply.get(), result, raw)) {
      raw.reset();
      result.value.reset();
      result.raw_size = 0;
      result.error = error_from_raised();
    }
    hold(raw.release(), task.generation);
  }
  // Our interrupt's mark, not an unhandled one of the program's; before the task counts as
  // finished, so that a close waiting for it (the exit's, which keeps the program's) comes after.
  bool stopped = false;
  {
    std::lock_guard<std::mutex> lock(task_mutex_);
    stopped = interrupt_generation_ == task_generation_;
  }
  if (stopped) before.restore();
  // Before the task counts as finished, so that no run can start before the barrier knows.
  if (result.error) {
    const std::string raised = result.error->type_name + ": " + result.error->message;
    Rendezvous::instance().leave(group_, id_, &raised);
  } else {
    Rendezvous::instance().leave(group_, id_, nullptr);
  }
  {
    std::lock_guard<std::mutex> lock(task_mutex_);
    task_running_ = false;
    finished_generation_ = task_generation_;
  }
  {
    std::lock_guard<std::mutex> lock(output_mutex_);
    result.out = std::move(out_);
    result.err = std::move(err_);
    out_.clear();
    err_.clear();
  }
  // One CPU-clock read per task, not two: the read is a system call (~0.7 us on a VM) on the
  // round trip's critical path. The task is charged from the previous task's end, which adds
  // only the few microseconds of CPU the thread spends waking up.
  const double cpu_end = thread_cpu();
  result.cpu_time = cpu_end - cpu_mark_;
  cpu_mark_ = cpu_end;
  result.wall_time = std::chrono::duration<double>(clock::now() - wall_start).count();
  return result;
}

}  // namespace ipp
