#include "counted.h"

#include <atomic>
#include <new>

namespace ipp {
namespace {

struct Counted {
  PyObject_HEAD
  PyObject* items;  // the iterator it draws from (owned)
  std::atomic<Py_ssize_t> count;
};

Counted* as_counted(PyObject* self) { return reinterpret_cast<Counted*>(self); }

PyObject* counted_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
  PyObject* iterable = nullptr;
  if (!PyArg_ParseTuple(args, "O:Counted", &iterable)) return nullptr;
  if (kwargs != nullptr && PyDict_GET_SIZE(kwargs) != 0) {
    PyErr_SetString(PyExc_TypeError, "Counted() takes no keyword arguments");
    return nullptr;
  }
  PyObject* items = PyObject_GetIter(iterable);
  if (items == nullptr) return nullptr;
  PyObject* self = type->tp_alloc(type, 0);
  if (self == nullptr) {
    Py_DECREF(items);
    return nullptr;
  }
  new (&as_counted(self)->count) std::atomic<Py_ssize_t>(0);
  as_counted(self)->items = items;
  return self;
}

PyObject* counted_next(PyObject* self) {
  Counted* counted = as_counted(self);
  PyObject* item = Py_TYPE(counted->items)->tp_iternext(counted->items);
  if (item != nullptr) {
    // One iterating thread stores; readers only load. Not a read-modify-write: on x86 a locked
    // add costs several times the rest of this function.
    counted->count.store(counted->count.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  return item;  // null: the end (a StopIteration, if set, is the caller's to clear) or an error
}

int counted_traverse(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(Py_TYPE(self));
  Py_VISIT(as_counted(self)->items);
  return 0;
}

int counted_clear(PyObject* self) {
  Py_CLEAR(as_counted(self)->items);
  return 0;
}

void counted_dealloc(PyObject* self) {
  PyTypeObject* type = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  counted_clear(self);
  type->tp_free(self);
  Py_DECREF(type);
}

PyObject* counted_count(PyObject* self, void*) {
  return PyLong_FromSsize_t(as_counted(self)->count.load(std::memory_order_relaxed));
}

PyGetSetDef counted_getset[] = {
    {"count", counted_count, nullptr, "Items passed on so far.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyType_Slot counted_slots[] = {
    {Py_tp_doc, const_cast<char*>("Counted(iterable): iterates iterable, counting the items it passes on (count).")},
    {Py_tp_new, reinterpret_cast<void*>(counted_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(counted_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(counted_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(counted_clear)},
    {Py_tp_iter, reinterpret_cast<void*>(PyObject_SelfIter)},
    {Py_tp_iternext, reinterpret_cast<void*>(counted_next)},
    {Py_tp_getset, counted_getset},
    {0, nullptr},
};

PyType_Spec counted_spec = {
    "ipy_parallel._engine.Counted",
    sizeof(Counted),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    counted_slots,
};

}  // namespace

PyObject* make_counted_type() { return PyType_FromSpec(&counted_spec); }

}  // namespace ipp
