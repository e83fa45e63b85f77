// Objects of the main interpreter lent to workers for a task: bytes and str copied once, buffers shared read-only.
#pragma once

#include <memory>

#include "compat.h"

namespace ipp {

// One object of the main interpreter that a task's workers receive without pickling. Made in the
// main interpreter with its GIL held; the last reference may go on any thread (a worker's, when
// its memoryview of the object dies), so the owner is never released there: it waits for
// release_lent() in the main interpreter. Workers read its memory without any lock: the object
// is immutable (bytes, str) or an export of it is held, which keeps its buffer where it is (a
// bytearray cannot resize, an mmap cannot close).
class Lent {
 public:
  enum class Kind { bytes, str, buffer };

  // Main GIL held. A bytes or str lends its contents (each worker gets its own copy); any other
  // object must export a C-contiguous buffer, which workers see in place. Returns nullptr with a
  // Python error set if it cannot be lent.
  static std::shared_ptr<const Lent> from(PyObject* obj);
  ~Lent();
  Lent(const Lent&) = delete;
  Lent& operator=(const Lent&) = delete;

  // In a worker's interpreter, attached: a new object of that interpreter holding the contents,
  // a bytes or str copy, or for a buffer a read-only memoryview of the main interpreter's memory
  // that keeps this Lent (and so the owner) alive. `view_type` is that interpreter's
  // make_view_type(). Null with an error set on failure.
  static PyObject* receive(const std::shared_ptr<const Lent>& lent, PyObject* view_type);

  const Py_buffer& buffer() const { return view_; }

 private:
  Lent() = default;
  Kind kind_ = Kind::buffer;
  PyObject* owner_ = nullptr;  // a strong reference of the main interpreter
  Py_buffer view_{};           // bytes and buffer: the export held
  int str_kind_ = 0;           // str: PyUnicode_KIND, data and length, read with the main GIL
  const void* str_data_ = nullptr;
  Py_ssize_t str_length_ = 0;
};

// Attached to a worker's interpreter: the type of the objects whose buffers the memoryviews of
// lent buffers read (a heap type of that interpreter, as isolation requires). New reference.
PyObject* make_view_type();

// Main interpreter, GIL held: releases the owners of every Lent dropped since the last call. The
// engine calls it as a pending call of the main interpreter, and whenever a pool starts or
// collects a run.
void release_lent();

}  // namespace ipp
