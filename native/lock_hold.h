// One `with` of a Python lock that an interrupt at any instant cannot leave held (CPython gh-148874).
#pragma once

#include "compat.h"

namespace ipp {

// CPython 3.14 calls a with statement's __enter__ through an ordinary CALL, which runs pending
// signal handlers after the call returns and before the block and its __exit__ are set up: a
// KeyboardInterrupt there skips __exit__, and a plain lock stays acquired for good. A LockHold is
// the object of one such with statement. Its enter() acquires and notes it in C, with no
// bytecode in between; if the with statement is interrupted in that window, the exception
// unwinds the caller's stack, which drops the last reference to this object, and its destructor
// releases the lock. None of its methods is Python code, so no frame of ours (kept alive by a
// traceback) can keep it from being destroyed then.
//
// Threading contract: the calling thread is attached to the interpreter that owns `lock`; one
// thread uses a LockHold (the with statement that made it).
class LockHold {
 public:
  explicit LockHold(PyObject* lock) : lock_(Py_NewRef(lock)) {}
  ~LockHold() {
    if (held_) {
      // No exception may leave a destructor; one that replaced the exception being raised would
      // hide it, so it is reported as unraisable instead (the lock is ours: release cannot fail).
      PyObject* raised = PyErr_GetRaisedException();
      if (!release()) PyErr_WriteUnraisable(lock_);
      PyErr_SetRaisedException(raised);
    }
    Py_DECREF(lock_);
  }
  LockHold(const LockHold&) = delete;
  LockHold& operator=(const LockHold&) = delete;

  // False with a Python error set if the acquire failed (a Ctrl-C while it waited): not held.
  bool enter() {
    PyObject* got = PyObject_CallMethod(lock_, "acquire", nullptr);
    if (got == nullptr) return false;
    held_ = PyObject_IsTrue(got) == 1;
    Py_DECREF(got);
    return true;
  }

  // False with a Python error set if the release failed.
  bool exit() {
    if (!held_) return true;
    return release();
  }

 private:
  bool release() {
    held_ = false;
    PyObject* done = PyObject_CallMethod(lock_, "release", nullptr);
    Py_XDECREF(done);
    return done != nullptr;
  }

  PyObject* lock_;  // a strong reference
  bool held_ = false;
};

}  // namespace ipp
