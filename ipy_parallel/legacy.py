"""parallel(): the [module, function, args] API of subinterpreter_parallelism, kept for its users."""

from __future__ import annotations

import threading

from .backends.signals import deferred_interrupts
from .backends.subinterpreter import Pool

__all__ = ["parallel"]

_CALL_SOURCE = """\
def _ipp_call_task(module_name, function_name, args):
    import importlib
    return getattr(importlib.import_module(module_name), function_name)(*args)
_ipp_call_task(*_ipp_task)
"""

_pool_lock = threading.Lock()
_pool: Pool | None = None


def parallel(*items):
    """Run ``module.function(*args)`` for each ``[module_name, function_name, args]`` item, all at
    once, each in its own sub-interpreter; return their results in order.

    Blocks until every task is done; the GIL is released meanwhile. The modules are imported in
    the workers through the caller's ``sys.path``. Arguments and results travel by pickle.

    Unlike the original: a malformed item raises TypeError or ValueError; unpicklable arguments
    raise TypeError before anything runs; an unpicklable result raises; an exception raised by a
    task is re-raised here with its own type (the first failing task's; the worker's traceback
    is attached as a note), after every task has finished.
    """
    tasks = [_check(i, item) for i, item in enumerate(items)]
    if not tasks:
        return []
    # Held for the whole run (other threads' calls wait their turn), so not a `with` block: since
    # CPython 3.14 a Ctrl-C right after a with statement's __enter__ returns would leave it held
    # (see InterruptSafeLock). The acquire is made with SIGINT deferred; once it is ours, the
    # finally releases it whatever comes. Waited for in slices, so that a Ctrl-C while another
    # thread's call runs is raised within one.
    held = False
    try:
        while not held:
            with deferred_interrupts():
                held = _pool_lock.acquire(timeout=0.05)
        pool = _pool_of(len(tasks))
        results = pool.run(_CALL_SOURCE, worker_inputs=[{"_ipp_task": task} for task in tasks])
    finally:
        if held:
            _pool_lock.release()
    for i, result in enumerate(results):
        if result.error is not None:
            raise _reraisable(i, items[i], result.error)
    return [result.value for result in results]


def _check(index: int, item) -> tuple[str, str, tuple]:
    where = f"parallel(): item {index}"
    if not isinstance(item, (list, tuple)):
        raise TypeError(f"{where} must be a list [module_name, function_name, args], not {type(item).__name__}")
    if len(item) != 3:
        raise ValueError(f"{where} must have 3 elements [module_name, function_name, args], it has {len(item)}")
    module_name, function_name, args = item
    for what, name in (("module_name", module_name), ("function_name", function_name)):
        if not isinstance(name, str):
            raise TypeError(f"{where}: {what} must be str, not {type(name).__name__} ({name!r})")
        if not name:
            raise ValueError(f"{where}: {what} is empty")
    if not isinstance(args, (tuple, list)):
        raise TypeError(f"{where}: args must be a tuple of arguments, not {type(args).__name__}")
    return module_name, function_name, tuple(args)


def _pool_of(n: int) -> Pool:
    """The shared pool, resized to n workers when the number of tasks changes (requires _pool_lock)."""
    global _pool
    if _pool is not None and (_pool.closed or _pool.size != n):
        _pool.close()
        _pool = None
    if _pool is None:
        _pool = Pool(n)
    return _pool


def _reraisable(index: int, item, error) -> BaseException:
    where = f"parallel(): task {index} ({item[0]}.{item[1]})"
    exc = error.exception
    if exc is None and error.type_name == "KeyboardInterrupt":  # a Ctrl-C here, as its result was rebuilt
        exc = KeyboardInterrupt(error.message)
    elif exc is None:
        exc = RuntimeError(f"{where} raised {error}")
    exc.add_note(f"{where} raised it in a sub-interpreter:\n{error.traceback.rstrip()}")
    return exc
