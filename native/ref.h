// Ref: an owned reference to a Python object, released when it goes out of scope.
#pragma once

#include <Python.h>

#include <utility>

namespace ipp {

// The engine's files other than bindings.cpp stay free of pybind11 (they run in sub-interpreters
// pybind11 knows nothing of), so this is their py::object. It is released with Py_XDECREF, so
// the thread state of the interpreter that owns the object must be attached wherever a Ref is
// reset or goes out of scope: a Ref lives in one block of code that runs attached, never in a
// member that a destructor on another thread would release.
class Ref {
 public:
  Ref() noexcept = default;
  explicit Ref(PyObject* owned) noexcept : object_(owned) {}  // steals: null stays null
  Ref(Ref&& other) noexcept : object_(std::exchange(other.object_, nullptr)) {}
  Ref& operator=(Ref&& other) noexcept {
    if (this != &other) reset(std::exchange(other.object_, nullptr));
    return *this;
  }
  Ref(const Ref&) = delete;
  Ref& operator=(const Ref&) = delete;
  ~Ref() { Py_XDECREF(object_); }

  PyObject* get() const noexcept { return object_; }
  explicit operator bool() const noexcept { return object_ != nullptr; }
  // The reference, handed over to the caller.
  [[nodiscard]] PyObject* release() noexcept { return std::exchange(object_, nullptr); }
  // Its own first, then the old one's release: a __del__ that runs then sees this Ref settled.
  void reset(PyObject* owned = nullptr) noexcept {
    PyObject* old = std::exchange(object_, owned);
    Py_XDECREF(old);
  }

 private:
  PyObject* object_ = nullptr;
};

}  // namespace ipp
