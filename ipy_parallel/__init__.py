"""ipy_parallel: true parallelism for pure-Python code in one CPython process.

A warm pool of isolated sub-interpreters, each with its own GIL (PEP 684), driven by a C++
engine. Usable on its own (``Pool``, ``parallel``, ``SubinterpreterExecutor``) or from IPython
(``%load_ext ipy_parallel``, then ``%%parallel N`` on a cell). IPython is imported only when the
extension is loaded.

The names below load on first use: a worker that runs ``from ipy_parallel import worker``
imports only that module (the pool and its runtime exist in the main interpreter alone).
"""

import importlib

__all__ = ["Pool", "Run", "Result", "WorkerError", "parallel", "SubinterpreterExecutor", "Queue", "MAX_WORKERS",
           "load_ipython_extension", "unload_ipython_extension"]
__version__ = "0.1.0"

_HOMES = {"Pool": "pool", "Run": "pool", "Result": "pool", "WorkerError": "pool", "MAX_WORKERS": "pool",
          "parallel": "tasks", "SubinterpreterExecutor": "executor", "Queue": "worker"}


def __getattr__(name):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'ipy_parallel' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


def load_ipython_extension(ipython) -> None:
    """%load_ext ipy_parallel: register %%parallel, %parallel_config, %parallel_status and %parallel_reset."""
    from .magics import load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    """%unload_ext ipy_parallel: close the extension's pools and remove its magics."""
    from .magics import unload

    unload(ipython)
