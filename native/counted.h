// Counted: an iterator that counts the items it passes on, for worker.progress() over items that cannot say how many are left.
#pragma once

#include "compat.h"

namespace ipp {

// A new heap type of the calling interpreter (attached), or null with an error set. Counted(iterable)
// iterates iter(iterable) and counts each item it passes on: a few ns an item, where a Python
// generator that counts costs tens. Its `count` may be read from any thread at any time (the
// display's reader on the threads backend): the one thread that iterates stores it, relaxed.
PyObject* make_counted_type();

}  // namespace ipp
