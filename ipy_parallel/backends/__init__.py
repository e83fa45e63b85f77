"""Where the workers run: one BasePool subclass per backend, all over the one lifecycle in base.py.

subinterpreter  threads of this process, each with its own interpreter and GIL (the default with a GIL)
process         a warm pool of worker processes, for modules that cannot load in a sub-interpreter
ipyparallel     the engines of a running ipyparallel cluster, possibly on other machines
threads         threads of this interpreter, sharing its memory (the default on a free-threaded
                CPython running without the GIL, where they run in parallel)
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["NAMES", "pool_class", "open_pool", "default_backend", "gil_enabled"]

NAMES = ("subinterpreter", "process", "ipyparallel", "threads")
_CLASSES = {
    "subinterpreter": (".subinterpreter", "Pool"),
    "process": (".process", "ProcessPool"),
    "ipyparallel": (".ipyparallel", "ClusterPool"),
    "threads": (".threads", "ThreadPool"),
}


def pool_class(name: str) -> type:
    """The pool class of a backend, imported on first use (ipyparallel only when asked for)."""
    try:
        module, cls = _CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(NAMES)}") from None
    return getattr(importlib.import_module(module, __name__), cls)


def open_pool(name: str, n: int | None = None, **options):
    """A new pool of the backend ``name`` with n workers (None: the backend's default)."""
    return pool_class(name)(n, **options)


def gil_enabled() -> bool:
    """Whether this CPython runs with the GIL now (a build with one; 3.14t once an extension turned it on)."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else check()


def default_backend() -> str:
    """The backend a cell runs on unless told: threads on a free-threaded CPython running without
    the GIL (they run in parallel there, share every module, numpy included, and copy nothing;
    sub-interpreters would add only cost), else subinterpreter. Asked when a session starts: an
    extension module that turns the GIL on later leaves it as it was."""
    return "subinterpreter" if gil_enabled() else "threads"
