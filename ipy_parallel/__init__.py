"""ipy_parallel: true parallelism for pure-Python code in one CPython process.

A warm pool of isolated sub-interpreters, each with its own GIL (PEP 684), driven by a C++
engine. Usable on its own (``Pool``, ``parallel``, ``SubinterpreterExecutor``; ``ProcessPool``
and ``ClusterPool`` run the same code on worker processes and on an ipyparallel cluster,
``ThreadPool`` and ``ThreadsExecutor`` on threads, in parallel on a free-threaded CPython) or
from IPython (``%load_ext ipy_parallel``, then ``%%parallel N`` on a cell). IPython is imported
only when the extension is loaded.

The names below load on first use: a worker that runs ``from ipy_parallel import worker``
imports only that module (the pools exist in the main interpreter alone).
"""

import importlib

__version__ = "0.1.0"

_HOMES = {
    "Pool": "backends.subinterpreter",
    "ProcessPool": "backends.process",
    "ClusterPool": "backends.ipyparallel",
    "ThreadPool": "backends.threads",
    "Run": "backends.run",
    "MAX_WORKERS": "backends.inputs",
    "Result": "results",
    "WorkerError": "results",
    "parallel": "legacy",
    "SubinterpreterExecutor": "executor",
    "ThreadsExecutor": "threads_executor",
    "Queue": "worker",
    "ParallelError": "exceptions",
    "CellSyntaxError": "exceptions",
    "RunStopped": "exceptions",
    "ParallelInterrupted": "exceptions",
    "ParallelTimeout": "exceptions",
    "WorkerDied": "exceptions",
    "ClusterError": "exceptions",
    "BrokenSubinterpreterPool": "exceptions",
    "load_ipython_extension": "ipython",
    "unload_ipython_extension": "ipython",
}
__all__ = list(_HOMES)


def __getattr__(name):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'ipy_parallel' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
