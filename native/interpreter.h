// One isolated sub-interpreter with its own GIL, owned by the thread that created it.
#pragma once

#include <atomic>

#include "compat.h"

namespace ipp {

// Lifetime rules (all enforced by the owner, a Worker):
// - construct and destroy on the same OS thread (3.12 requires it), with no thread state
//   attached, while some other thread lets the main interpreter's GIL go (creation and
//   destruction briefly take it);
// - the interpreter has exactly one thread state of ours, kept for its whole life: a second one
//   alive at Py_EndInterpreter aborts, and concurrent attaches abort on 3.13.0 (gh-126914).
// After construction the interpreter's thread state is attached; detach() it before idling.
class Interpreter {
 public:
  Interpreter();  // throws std::runtime_error with CPython's message; retries a transient failure once
  ~Interpreter();
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  PyInterpreterState* state() const { return PyThreadState_GetInterpreter(tstate_); }
  bool attached() const { return attached_; }
  void attach();  // takes this interpreter's GIL; blocks only if one of its own threads holds it
  void detach();  // lets it go, so threads the user started in this interpreter can run

  // Attached: true once ours is the interpreter's only thread state (waiting up to `millis` for
  // threads that are ending to delete theirs). Py_EndInterpreter aborts the process otherwise.
  bool alone(int millis);

  // Leave the interpreter alive, detached, for threads of it that still run: the destructor
  // then neither ends it nor touches it (its thread states, ours included, stay with it).
  void leave();

  // Interpreters created and not ended, in the whole process: those left alive (see leave()) and
  // those of abandoned workers stay counted. CPython cannot finalize while any exist.
  static int alive();

 private:
  void create();  // one attempt of the constructor
  PyThreadState* main_tstate_ = nullptr;  // the creating thread's state in the main interpreter
  PyThreadState* tstate_ = nullptr;       // our thread state in the sub-interpreter
  bool attached_ = false;
};

// Holds an interpreter attached for one scope.
class Attached {
 public:
  explicit Attached(Interpreter& interp) : interp_(interp) { interp_.attach(); }
  ~Attached() { interp_.detach(); }
  Attached(const Attached&) = delete;
  Attached& operator=(const Attached&) = delete;

 private:
  Interpreter& interp_;
};

namespace testing {
// Makes the next `count` interpreter creations fail as CPython's transient concurrent-creation
// failure does ("Failed to import encodings module"), so that tests can show the retry. Test only.
extern std::atomic<int> failing_creations;
}  // namespace testing

}  // namespace ipp
