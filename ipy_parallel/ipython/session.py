"""A shell's %%parallel session: its defaults (%parallel_config), its warm pool per backend, and the fallback to processes.

IPython-free like cell.py: the magics parse, this module picks (and keeps) the pool, and
cell.run_cell runs the cell on it, the same way on every backend.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, MutableMapping

from ..backends import NAMES as BACKENDS
from ..backends import open_pool
from ..exceptions import ClusterError, ParallelError
from .cell import CellOptions, CellUsageError, run_cell
from .display import Monitor

__all__ = ["BACKENDS", "Config", "Pools", "run_on_backend", "not_isolated_modules"]


@dataclass
class Config:
    """A shell's defaults for %%parallel, set with %parallel_config."""

    backend: str = "subinterpreter"
    n: int | None = None  # None: os.cpu_count(), or every engine of the cluster
    monitor: bool = True
    fallback: bool = False  # re-run on the process backend a cell whose modules cannot load in sub-interpreters
    profile: str | None = None  # ipyparallel's
    cluster_id: str | None = None

    def describe(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))


class Pools:
    """The warm pools of one shell, one per backend: reused while a cell asks for the same
    size (and cluster), replaced when it does not. Pools of other backends stay warm."""

    def __init__(self):
        self._pools: dict[str, Any] = {}
        self._keys: dict[str, tuple] = {}
        self._warming: dict[str, tuple[threading.Thread, dict, tuple]] = {}  # backend -> (thread, its outcome, key)

    def warm(self, backend: str, n: int | None) -> None:
        """Start the pool a first cell would get in a background thread, so that the cell finds
        it ready (%load_ext does this: the kernel is not kept waiting). Returns at once; a pool
        that fails to start is left for that cell to start, and meet the error, itself."""
        if backend in self._pools or backend in self._warming:
            return
        outcome: dict[str, Any] = {}

        def start():
            try:
                pool = _open(backend, n, None, None)
                # An empty run, so that what every worker's first cell loads (the compiler's
                # _ast, the main interpreter's sys.path) is loaded now too.
                pool.run("", filename="<ipy_parallel warm-up>", what="the warm-up")
                outcome["pool"] = pool
            except BaseException:  # nothing kept: the cell that needs the pool starts one and meets the error
                pass

        # Not a daemon: the interpreter's exit waits for it (tens of ms) before it ends the pools.
        thread = threading.Thread(target=start, name=f"ipy_parallel-warm-{backend}")
        self._warming[backend] = (thread, outcome, (n, None, None))
        thread.start()

    def _take_warm(self, backend: str | None = None) -> None:
        """Adopt the pools warmed in the background (of ``backend``, or all), waiting for them."""
        for name in [backend] if backend is not None else list(self._warming):
            warming = self._warming.get(name)
            if warming is None:
                continue
            thread, outcome, key = warming
            thread.join()  # a Ctrl-C here leaves it to finish, and a later call adopts its pool
            del self._warming[name]
            if "pool" in outcome:
                self._pools[name], self._keys[name] = outcome["pool"], key

    def get(self, backend: str, n: int | None, profile: str | None = None, cluster_id: str | None = None):
        """The pool for a cell; starts (blocking) or connects one when needed."""
        self._take_warm(backend)
        key = (n, profile, cluster_id)
        pool = self._pools.get(backend)
        # Resized when idle; with workers still busy (stuck in C code, say) it is replaced at once,
        # closing abandoning what cannot stop, rather than waiting for them first.
        if pool is not None and pool.state == "idle" and self._keys[backend] != key and self._keys[backend][1:] == key[1:]:
            try:
                pool.resize(n)  # the workers that stay keep their interpreters: only new ones start
                self._keys[backend] = key
            except (NotImplementedError, RuntimeError):  # a backend that cannot, or workers still busy
                pass  # then a new pool, as before (closing abandons workers that cannot be stopped)
        if pool is not None and (pool.closed or self._keys[backend] != key):
            pool.close()
            pool = None
        if pool is None:
            pool = _open(backend, n, profile, cluster_id)
            self._pools[backend], self._keys[backend] = pool, key
        return pool

    def of(self, backend: str):
        """The backend's pool (maybe closed), or None."""
        self._take_warm(backend)
        return self._pools.get(backend)

    def open(self) -> dict[str, Any]:
        """The pools not closed, by backend."""
        self._take_warm()
        return {backend: pool for backend, pool in self._pools.items() if not pool.closed}

    def close(self) -> None:
        """Close every pool (a cluster's connection only: the cluster itself keeps running)."""
        self._take_warm()
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._keys.clear()


def _open(backend: str, n: int | None, profile: str | None, cluster_id: str | None):
    if backend not in BACKENDS:
        raise CellUsageError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend != "ipyparallel":
        return open_pool(backend, n)
    try:
        return open_pool(backend, n, profile=profile, cluster_id=cluster_id)
    except (ClusterError, ValueError) as exc:  # no ipyparallel, no cluster, too few engines
        raise CellUsageError(str(exc)) from None


# The message the worker runtime (_wire/runtime.py) gives an ImportError of a module that cannot load
# in a sub-interpreter (single-phase initialization).
_NOT_ISOLATED = re.compile(r"^([\w.]+) cannot be imported in a sub-interpreter: ")


def not_isolated_modules(error: ParallelError) -> list[str] | None:
    """The modules that could not load, when every failure of the cell is one of them; else None."""
    modules = []
    for _, worker_error in error.groups:
        match = _NOT_ISOLATED.match(worker_error.message) if worker_error.type_name == "ImportError" else None
        if match is None:
            return None
        modules.append(match.group(1))
    return sorted(set(modules)) or None


def run_on_backend(pools: Pools, config: Config, backend: str, source: str, options: CellOptions,
                   user_ns: MutableMapping[str, Any], make_monitor: Callable[[int, str], Monitor],
                   filename: str | None = None, note: Callable[[str], None] = print,
                   profile: str | None = None, cluster_id: str | None = None):
    """Run a cell on ``backend`` (its pool from ``pools``) as cell.run_cell does. With
    ``config.fallback``, a cell that failed on sub-interpreters only because modules cannot be
    imported there runs again on the process backend, after ``note`` says so.

    make_monitor(n_workers, label) builds the cell's display. Blocks until the cell is done.
    """
    pool = pools.get(backend, options.n, profile, cluster_id)
    label = "%%parallel" if backend == "subinterpreter" else f"%%parallel [{backend}]"
    options = replace(options, n=pool.size)
    try:
        return run_cell(pool, source, options, user_ns, make_monitor(pool.size, label), filename)
    except ParallelError as exc:
        modules = not_isolated_modules(exc) if backend == "subinterpreter" and config.fallback else None
        if modules is None:
            raise
    note(f"ipy_parallel: {', '.join(modules)} cannot be imported in a sub-interpreter; running the cell again "
         f"on the process backend ({pool.size} worker processes), as %parallel_config --fallback on asks. "
         "Statements before the import ran in the sub-interpreters too.")
    process_pool = pools.get("process", pool.size)
    return run_cell(process_pool, source, options, user_ns, make_monitor(process_pool.size, "%%parallel [process]"),
                    filename)
