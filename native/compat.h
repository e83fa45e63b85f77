// Every CPython-version difference the engine depends on, in one header.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if PY_VERSION_HEX < 0x030C0000
#error "ipy_parallel needs CPython 3.12 or newer: a GIL per interpreter (PEP 684) arrived in 3.12"
#endif

namespace ipp::compat {

// The configuration of an isolated worker: its own GIL and object allocator, no fork or exec
// (they would copy or replace a process that other interpreters are running in), threads
// allowed but not daemon threads (Py_EndInterpreter cannot wait for those), and only
// extensions that declare multi-interpreter support may load.
inline PyInterpreterConfig isolated_config() {
  PyInterpreterConfig config = {};
  config.use_main_obmalloc = 0;
  config.allow_fork = 0;
  config.allow_exec = 0;
  config.allow_threads = 1;
  config.allow_daemon_threads = 0;
  config.check_multi_interp_extensions = 1;
  config.gil = PyInterpreterConfig_OWN_GIL;
  return config;
}

// The thread state attached to the calling thread, or nullptr; never fails.
inline PyThreadState* current_thread_state() {
#if PY_VERSION_HEX >= 0x030D0000
  return PyThreadState_GetUnchecked();
#else
  return _PyThreadState_UncheckedGet();
#endif
}

// Runs func(arg) in the given interpreter at its next eval-loop check, on whichever of its
// threads gets there; a -1 return with an exception set raises it there. Py_AddPendingCall only
// reaches the main interpreter; this internal function, exported by 3.12 and 3.13 but declared
// only in internal headers, reaches any. 3.12 calls the last argument mainthreadonly and returns
// int; 3.13 calls it flags and returns an int-sized enum; 0 means "any thread" and success in both.
extern "C" int _PyEval_AddPendingCall(PyInterpreterState* interp, int (*func)(void*), void* arg, int flags);

inline bool add_pending_call(PyInterpreterState* interp, int (*func)(void*), void* arg) {
  return _PyEval_AddPendingCall(interp, func, arg, 0) == 0;
}

// Called in the main interpreter before a pool's workers run anything; returns false with a
// Python error set.
// - gh-136421: importing _datetime concurrently in several isolated interpreters crashes
//   3.13.0; loading it once here first avoids the race.
// - gh-119213 (fixed in 3.12.4 and 3.13.0): an extension function's Argument Clinic parser
//   allocates its keyword tuple in whichever interpreter first calls it with keywords, and the
//   main interpreter frees it at exit (or another uses it after that interpreter is gone):
//   "free(): invalid pointer" when the process exits. The workers' runtime calls _pickle with
//   keywords (cloudpickle too), so those parsers are set up here, in the main interpreter.
//   Other extension functions that cells call with keywords stay exposed on 3.12.0-3.12.3.
inline bool prepare_main_interpreter() {
  PyObject* datetime = PyImport_ImportModule("_datetime");
  if (datetime == nullptr) PyErr_Clear();  // a build without it: nothing to protect
  Py_XDECREF(datetime);
#if PY_VERSION_HEX < 0x030C0400
  static bool done = false;
  if (done) return true;
  static const char* kWarmUp =
      "import io, _pickle\n"
      "_pickle.Pickler(io.BytesIO(), protocol=5, fix_imports=True, buffer_callback=None)\n"
      "_pickle.Unpickler(io.BytesIO(b'N.'), fix_imports=True, encoding='ASCII', errors='strict', buffers=None)\n"
      "_pickle.dump(None, io.BytesIO(), protocol=5, fix_imports=True, buffer_callback=None)\n"
      "_pickle.dumps(None, protocol=5, fix_imports=True, buffer_callback=None)\n"
      "_pickle.load(io.BytesIO(b'N.'), fix_imports=True, encoding='ASCII', errors='strict', buffers=None)\n"
      "_pickle.loads(b'N.', fix_imports=True, encoding='ASCII', errors='strict', buffers=None)\n";
  PyObject* globals = PyDict_New();
  if (globals == nullptr) return false;
  PyObject* done_obj = PyRun_String(kWarmUp, Py_file_input, globals, globals);
  Py_DECREF(globals);
  if (done_obj == nullptr) return false;
  Py_DECREF(done_obj);
  done = true;
#endif
  return true;
}

// Guards a few fields of an object that Python threads share. With a GIL, the GIL already
// serializes the sections it guards (none of them lets the GIL go), so it is empty. On a
// free-threaded build it is a PyMutex: one that has to wait detaches the thread state while it
// parks, so a thread waiting here never holds up a stop-the-world pause (garbage collection)
// that the holder's Python calls may start, which a std::mutex waited on attached would.
#ifdef Py_GIL_DISABLED
class StateLock {
 public:
  class Held {
   public:
    explicit Held(StateLock& lock) : mutex_(lock.mutex_) { PyMutex_Lock(&mutex_); }
    ~Held() { PyMutex_Unlock(&mutex_); }
    Held(const Held&) = delete;
    Held& operator=(const Held&) = delete;

   private:
    PyMutex& mutex_;
  };

 private:
  PyMutex mutex_{};
};
#else
class StateLock {
 public:
  class Held {
   public:
    explicit Held(StateLock&) {}
    Held(const Held&) = delete;
    Held& operator=(const Held&) = delete;
  };
};
#endif

// The status a process exits with after a worker was stopped. On 3.12 and 3.13, a PyRun_String*
// (builtin exec or eval of a string: namedtuple, dataclasses, a cell's own exec) that ends in
// KeyboardInterrupt sets a flag of the whole runtime, from any interpreter and thread, even
// when the caller catches it; Py_RunMain then ends the process by SIGINT after finalizing,
// whatever the main program did (3.14 sets it only for an exception nobody handled:
// gh-128130). The interrupt that stops a worker often lands in such code, so a script that
// stopped a cell and ended normally exited by SIGINT. An ExitStatus taken before a task (or the
// exit's stop of every worker) puts the flag back after it. The flag is internal state, which
// unhandled_interrupt.c reads: those headers compile only as C.
#if PY_VERSION_HEX < 0x030E0000
extern "C" int ipp_unhandled_keyboard_interrupt(void);
extern "C" void ipp_set_unhandled_keyboard_interrupt(int value);

class ExitStatus {
 public:
  ExitStatus() : saved_(ipp_unhandled_keyboard_interrupt()) {}
  void restore() const { ipp_set_unhandled_keyboard_interrupt(saved_); }

 private:
  int saved_;
};
#else
class ExitStatus {
 public:
  void restore() const {}
};
#endif

}  // namespace ipp::compat
