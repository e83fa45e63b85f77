"""Where the workers run: one BasePool subclass per backend, all over the one lifecycle in base.py.

subinterpreter  threads of this process, each with its own interpreter and GIL (the default)
process         a warm pool of worker processes, for modules that cannot load in a sub-interpreter
ipyparallel     the engines of a running ipyparallel cluster, possibly on other machines
threads         threads of this interpreter, sharing its memory (in parallel on a free-threaded CPython)
"""

from __future__ import annotations

import importlib

__all__ = ["NAMES", "pool_class", "open_pool"]

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
