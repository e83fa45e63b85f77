// One isolated sub-interpreter: creation, attach/detach and destruction through the C API.
#include "interpreter.h"

#include <stdexcept>
#include <string>

namespace ipp {

Interpreter::Interpreter() {
  // Py_NewInterpreterFromConfig must be called with a main-interpreter thread state attached;
  // this thread has none, so it makes its own and keeps it until the end, where the
  // interpreter is destroyed from the same place.
  main_tstate_ = PyThreadState_New(PyInterpreterState_Main());
  if (main_tstate_ == nullptr) throw std::runtime_error("cannot create a thread state for the main interpreter");
  PyEval_RestoreThread(main_tstate_);

  const PyInterpreterConfig config = compat::isolated_config();
  PyThreadState* sub = nullptr;
  PyStatus status = Py_NewInterpreterFromConfig(&sub, &config);
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
}

Interpreter::~Interpreter() {
  if (tstate_ == nullptr) return;
  if (!attached_) PyEval_RestoreThread(tstate_);
  Py_EndInterpreter(tstate_);  // leaves no thread state current
  tstate_ = nullptr;
  attached_ = false;

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

}  // namespace ipp
