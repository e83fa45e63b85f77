// One isolated sub-interpreter: creation (with one retry), attach/detach, and destruction through the C API.
#include "interpreter.h"

#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

namespace ipp {

namespace testing {
std::atomic<int> failing_creations{0};
}  // namespace testing

namespace {
std::atomic<int> g_alive{0};
}  // namespace

int Interpreter::alive() { return g_alive.load(); }

Interpreter::Interpreter() {
  // Creating several interpreters at once can fail now and then while one imports the
  // encodings module (CPython gh-128381, gh-131485; ~1 in 450 pool starts here). A second
  // attempt, a moment later, succeeds.
  try {
    create();
  } catch (const std::runtime_error&) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    create();
  }
}

void Interpreter::create() {
  // Py_NewInterpreterFromConfig must be called with a main-interpreter thread state attached;
  // this thread has none, so it makes its own and keeps it until the end, where the
  // interpreter is destroyed from the same place.
  main_tstate_ = PyThreadState_New(PyInterpreterState_Main());
  if (main_tstate_ == nullptr) throw std::runtime_error("cannot create a thread state for the main interpreter");
  PyEval_RestoreThread(main_tstate_);

  const PyInterpreterConfig config = compat::isolated_config();
  PyThreadState* sub = nullptr;
  PyStatus status{};
  int failing = testing::failing_creations.load();
  while (failing > 0 && !testing::failing_creations.compare_exchange_weak(failing, failing - 1)) {
  }
  if (failing > 0) {
    status = PyStatus_Error("Failed to import encodings module (injected by a test)");
  } else {
    status = Py_NewInterpreterFromConfig(&sub, &config);
  }
  if (PyStatus_Exception(status) || sub == nullptr) {
    // On failure the main thread state is still the current one.
    std::string why = status.err_msg ? status.err_msg : "unknown error";
    PyThreadState_Clear(main_tstate_);
    PyThreadState_DeleteCurrent();
    main_tstate_ = nullptr;
    throw std::runtime_error("cannot create an isolated sub-interpreter: " + why);
  }
  // On success the new thread state is current and holds the new interpreter's own GIL;
  // the main interpreter's GIL has been released.
  tstate_ = sub;
  attached_ = true;
  g_alive.fetch_add(1);
}

Interpreter::~Interpreter() {
  if (tstate_ != nullptr) {
    if (!attached_) PyEval_RestoreThread(tstate_);
    Py_EndInterpreter(tstate_);  // leaves no thread state current
    tstate_ = nullptr;
    attached_ = false;
    g_alive.fetch_sub(1);
  }
  if (main_tstate_ == nullptr) return;
  PyEval_RestoreThread(main_tstate_);
  PyThreadState_Clear(main_tstate_);
  PyThreadState_DeleteCurrent();  // also releases the main GIL
  main_tstate_ = nullptr;
}

void Interpreter::attach() {
  if (attached_) return;
  PyEval_RestoreThread(tstate_);
  attached_ = true;
}

void Interpreter::detach() {
  if (!attached_) return;
  PyEval_SaveThread();
  attached_ = false;
}

bool Interpreter::alone(int millis) {
  // With this interpreter's GIL held its thread list only shrinks (a new thread's state is made
  // by the thread that starts it, which needs the GIL), so reading it here is stable enough; a
  // thread that is ending may still need the GIL to delete its state, hence the waits.
  PyInterpreterState* interp = state();
  for (int waited = 0;; ++waited) {
    PyThreadState* head = PyInterpreterState_ThreadHead(interp);
    if (head == tstate_ && PyThreadState_Next(head) == nullptr) return true;
    if (waited >= millis) return false;
    Py_BEGIN_ALLOW_THREADS
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    Py_END_ALLOW_THREADS
  }
}

void Interpreter::leave() {
  detach();
  tstate_ = nullptr;  // stays with the interpreter, which now belongs to its own threads
  // The main-interpreter thread state is ours alone and can go, as in the destructor.
}

}  // namespace ipp
