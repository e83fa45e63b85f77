// Lending main-interpreter objects to workers: the read-only exporter workers see, and the owners' deferred release.
#include "lent.h"

#include <mutex>
#include <new>
#include <vector>

namespace ipp {
namespace {

// What a dropped Lent leaves to release in the main interpreter.
struct Owned {
  PyObject* owner;
  Py_buffer view;
  bool has_view;
};

std::mutex g_released_mutex;
std::vector<Owned>& released() {  // never destroyed: a Lent may go after static destruction began
  static auto* const list = new std::vector<Owned>();
  return *list;
}
bool g_release_scheduled = false;  // a pending call of the main interpreter will drain the list (g_released_mutex)

int release_pending(void*) {
  release_lent();
  return 0;
}

// The exporter behind a worker's memoryview of a lent buffer; its reference keeps the Lent.
struct LentView {
  PyObject_HEAD
  std::shared_ptr<const Lent>* lent;
};

int view_getbuffer(PyObject* self, Py_buffer* view, int flags) {
  if ((flags & PyBUF_WRITABLE) == PyBUF_WRITABLE) {
    view->obj = nullptr;
    PyErr_SetString(PyExc_BufferError,
                    "this buffer is the main interpreter's memory, shared read-only with the workers: copy it "
                    "(bytearray(view)) to change it here, or return the new data as the cell's value");
    return -1;
  }
  const Py_buffer& src = (*reinterpret_cast<LentView*>(self)->lent)->buffer();
  view->buf = src.buf;
  view->obj = Py_NewRef(self);
  view->len = src.len;
  view->itemsize = src.itemsize;
  view->readonly = 1;
  view->ndim = (flags & PyBUF_ND) == PyBUF_ND ? src.ndim : 1;
  view->format = (flags & PyBUF_FORMAT) == PyBUF_FORMAT ? src.format : nullptr;
  view->shape = (flags & PyBUF_ND) == PyBUF_ND ? src.shape : nullptr;
  view->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? src.strides : nullptr;
  view->suboffsets = nullptr;
  view->internal = nullptr;
  return 0;
}

void view_dealloc(PyObject* self) {
  PyTypeObject* type = Py_TYPE(self);
  delete reinterpret_cast<LentView*>(self)->lent;  // perhaps the last reference: released later, in the main interpreter
  type->tp_free(self);
  Py_DECREF(type);  // instances of a heap type hold a reference to it
}

PyType_Slot view_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void*>(&view_dealloc)},
    {Py_bf_getbuffer, reinterpret_cast<void*>(&view_getbuffer)},
    {Py_tp_doc, const_cast<char*>("Read-only memory of the main interpreter, lent to this worker for a task.")},
    {0, nullptr},
};

PyType_Spec view_spec = {"_ipy_parallel.LentBuffer", sizeof(LentView), 0,
                         Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, view_slots};

}  // namespace

std::shared_ptr<const Lent> Lent::from(PyObject* obj) {
  std::shared_ptr<Lent> lent(new Lent());
  if (PyUnicode_CheckExact(obj)) {
    lent->kind_ = Kind::str;
    lent->str_kind_ = PyUnicode_KIND(obj);
    lent->str_data_ = PyUnicode_DATA(obj);
    lent->str_length_ = PyUnicode_GET_LENGTH(obj);
  } else {
    lent->kind_ = PyBytes_CheckExact(obj) ? Kind::bytes : Kind::buffer;
    if (PyObject_GetBuffer(obj, &lent->view_, PyBUF_FULL_RO) != 0) return nullptr;
    if (!PyBuffer_IsContiguous(&lent->view_, 'C')) {
      PyBuffer_Release(&lent->view_);
      PyErr_Format(PyExc_BufferError,
                   "a %s whose buffer is not C-contiguous cannot be shared with the workers: pass a contiguous "
                   "copy (bytes(memoryview(x)) or x.copy())",
                   Py_TYPE(obj)->tp_name);
      return nullptr;
    }
  }
  lent->owner_ = Py_NewRef(obj);
  return lent;
}

Lent::~Lent() {
  if (owner_ == nullptr) return;  // never lent: from() failed before it took the object
  std::lock_guard<std::mutex> lock(g_released_mutex);
  released().push_back(Owned{owner_, view_, kind_ != Kind::str});
  // Any thread, no thread state needed: CPython runs it in the main interpreter's main thread.
  if (!g_release_scheduled && Py_IsInitialized()) g_release_scheduled = Py_AddPendingCall(&release_pending, nullptr) == 0;
}

PyObject* Lent::receive(const std::shared_ptr<const Lent>& lent, PyObject* view_type) {
  switch (lent->kind_) {
    case Kind::bytes:
      return PyBytes_FromStringAndSize(static_cast<const char*>(lent->view_.buf), lent->view_.len);
    case Kind::str:
      return PyUnicode_FromKindAndData(lent->str_kind_, lent->str_data_, lent->str_length_);
    case Kind::buffer:
      break;
  }
  auto* exporter = reinterpret_cast<LentView*>(PyType_GenericAlloc(reinterpret_cast<PyTypeObject*>(view_type), 0));
  if (exporter == nullptr) return nullptr;
  exporter->lent = new (std::nothrow) std::shared_ptr<const Lent>(lent);
  if (exporter->lent == nullptr) {
    Py_DECREF(exporter);
    return PyErr_NoMemory();
  }
  PyObject* view = PyMemoryView_FromObject(reinterpret_cast<PyObject*>(exporter));
  Py_DECREF(exporter);  // the memoryview holds it now
  return view;
}

PyObject* make_view_type() { return PyType_FromSpec(&view_spec); }

void release_lent() {
  std::vector<Owned> batch;
  {
    std::lock_guard<std::mutex> lock(g_released_mutex);
    batch.swap(released());
    g_release_scheduled = false;
  }
  for (Owned& owned : batch) {
    if (owned.has_view) PyBuffer_Release(&owned.view);
    Py_DECREF(owned.owner);
  }
}

}  // namespace ipp
