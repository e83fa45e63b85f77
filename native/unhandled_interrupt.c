// The process-wide flag through which CPython 3.12 and 3.13 exit by SIGINT (see compat.h).
// C, not C++: it reads a field of the runtime's internal state, whose headers compile only as C.
#define Py_BUILD_CORE 1
#include <Python.h>

#if PY_VERSION_HEX < 0x030E0000
#include "internal/pycore_runtime.h"

int ipp_unhandled_keyboard_interrupt(void) { return _PyRuntime.signals.unhandled_keyboard_interrupt; }

void ipp_set_unhandled_keyboard_interrupt(int value) { _PyRuntime.signals.unhandled_keyboard_interrupt = value; }
#endif
