"""A shell's %%parallel session: its defaults (%parallel_config), its warm pool per backend, its background runs, and the fallback to processes.

IPython-free like cell.py: the magics parse, this module picks (and keeps) the pool, and
cell.run_cell runs the cell on it, the same way on every backend.
"""

from __future__ import annotations

import ast
import os
import re
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Any
from collections.abc import Callable, MutableMapping

from ..backends import NAMES as BACKENDS
from ..backends import default_backend, open_pool, pool_class
from ..backends.inputs import cell_filename, check_workers
from ..backends.signals import interrupts_as_raised
from ..backends.threads import TAKING_TURNS, takes_turns
from ..exceptions import ClusterError, ParallelError, ParallelInterrupted
from .background import BackgroundRun, stop_all
from .cell import CellOptions, CellRun, CellUsageError, check_cell, run_cell
from .display import Monitor
from .._wire.protocol import not_isolated_package
from ..timeline import RunTimeline

__all__ = [
    "BACKENDS",
    "BACKEND_VARIABLE",
    "Config",
    "Cluster",
    "Turn",
    "Pools",
    "configured_backend",
    "run_on_backend",
    "not_isolated_modules",
    "fallback_note",
]

#: The environment variable that names the backend cells run on without --backend.
BACKEND_VARIABLE = "IPY_PARALLEL_BACKEND"


def configured_backend() -> str:
    """The backend cells run on without --backend when a session starts: $IPY_PARALLEL_BACKEND if
    it names one, else default_backend() (threads on a free-threaded CPython running without the
    GIL, subinterpreter elsewhere). A name that is no backend is said once, and ignored."""
    name = os.environ.get(BACKEND_VARIABLE, "").strip()
    if name in BACKENDS:
        return name
    default = default_backend()
    if name:
        warnings.warn(
            f"ipy_parallel: {BACKEND_VARIABLE}={name!r} names no backend (choose one of {', '.join(BACKENDS)}); "
            f"cells run on {default}",
            RuntimeWarning,
            stacklevel=2,
        )
    return default


@dataclass
class Config:
    """A shell's defaults for %%parallel, set with %parallel_config."""

    backend: str = field(default_factory=configured_backend)
    n: int | None = None  # None: os.cpu_count(), or every engine of the cluster
    monitor: bool = True
    fallback: bool = False  # re-run on the process backend a cell whose modules cannot load in sub-interpreters
    profile: str | None = None  # ipyparallel's
    cluster_id: str | None = None

    def describe(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))


@dataclass(frozen=True)
class Cluster:
    """Which ipyparallel cluster a pool connects to (None: ipyparallel's default)."""

    profile: str | None = None
    cluster_id: str | None = None


@dataclass(frozen=True)
class Turn:
    """When a cell runs: now, or in the background (``background``); and, if a background run
    holds its pool, whether it waits for it (``wait``) or is refused, offering --wait if the
    caller takes it (``can_wait``)."""

    background: bool = False
    wait: bool = False
    can_wait: bool = True


@dataclass(frozen=True)
class _Key:
    """What a warm pool was made for: a cell that asks for the same gets it again."""

    n: int | None
    cluster: Cluster


class _Start:
    """A pool being started or grown in a thread of its own: then what it made, or raised."""

    def __init__(self, key: _Key):
        self.key = key
        # Waited for by this event, not by Thread.join(): on 3.12 a Ctrl-C that interrupts
        # join() can mark a thread that is still running as stopped (bpo-45274's handling).
        self.done = threading.Event()
        self.thread: threading.Thread | None = None
        self.pool: Any = None
        self.error: BaseException | None = None

    def lost(self) -> bool:
        """Its thread will never set ``done``: a Ctrl-C landed inside Thread.start() before the
        thread was made (its registration comes first, so that a started pool is never lost)."""
        return self.thread is not None and not self.thread.is_alive() and not self.done.is_set()


KEEP_ENDED = 20  # ended background runs a session keeps listing (and keeps the values of)


class Pools:
    """The warm pools of one shell, one per backend: reused while a cell asks for the same
    size (and cluster), replaced when it does not. Pools of other backends stay warm."""

    def __init__(self):
        self._pools: dict[str, Any] = {}
        self._keys: dict[str, _Key] = {}
        self._warming: dict[str, _Start] = {}  # by backend
        self.background: list[BackgroundRun] = []  # the runs going on and the latest ended ones, in order
        self._numbered = 0  # background runs so far
        self._numbered_before_cell = 0
        self.last_cell: tuple[str, RunTimeline | None] | None = None  # (backend, timeline) of the last cell that ended

    def add_background(self, make: Callable[[int], BackgroundRun]) -> BackgroundRun:
        """Number, keep and return a new background run (``make(number)`` builds it). Ended runs
        beyond the latest KEEP_ENDED are let go, and their values with them."""
        self._numbered += 1
        job = make(self._numbered)
        ended = [j for j in self.background if j.done()]
        for old in ended[: max(0, len(ended) - KEEP_ENDED)]:
            self.background.remove(old)
        self.background.append(job)
        return job

    def cell_starts(self, info=None) -> None:
        """IPython's pre_run_cell event."""
        self._numbered_before_cell = self._numbered

    def cell_ended(self, result) -> None:
        """IPython's post_run_cell event: a cell that failed after it started a background run
        (a Ctrl-C that landed as the kernel showed its handle, say) leaves no run going unseen."""
        if result.error_in_exec is None and result.error_before_exec is None:
            return
        for job in self.running():
            if job.number > self._numbered_before_cell:
                print(
                    f"ipy_parallel: this cell failed after it started background run [{job.number}], which goes "
                    f"on: %parallel_wait {job.number} waits for it, %parallel_stop {job.number} stops it",
                    file=sys.stderr,
                    flush=True,
                )

    def running(self, backend: str | None = None) -> list[BackgroundRun]:
        """The background runs not yet ended (on ``backend``, or on any)."""
        return [job for job in self.background if not job.done() and backend in (None, job.backend)]

    def check_free(self, backend: str, wait: bool = False, what: str = "this cell", can_wait: bool = True) -> None:
        """A background run keeps its pool until it ends: CellUsageError saying so (or, with
        ``wait``, wait for it; a Ctrl-C then stops the waiting, not the run). ``can_wait``: the
        caller takes --wait, so the message offers it."""
        for job in self.running(backend):
            if not wait:
                raise CellUsageError(
                    f"the {backend} pool is busy with background run [{job.number}] ({job.label}), so {what} "
                    f"cannot run on it now: %parallel_wait waits for it, %parallel_stop {job.number} stops it"
                    + (", or add --wait to wait for it first" if can_wait else "")
                )
            try:
                job.wait()
            except KeyboardInterrupt:
                raise ParallelInterrupted(
                    f"stopped waiting for background run [{job.number}]; it goes on "
                    f"(%parallel_stop {job.number} stops it)"
                ) from None

    def warm(self, backend: str, n: int | None) -> None:
        """Start the pool a first cell would get in a background thread, so that the cell finds
        it ready (%load_ext does this: the kernel is not kept waiting). Returns at once; a pool
        that fails to start is left for that cell to start, and meet the error, itself."""
        if backend in self._pools or backend in self._warming:
            return

        key = _Key(n, Cluster())

        def start():
            pool = _open(backend, n, key.cluster)
            # An empty run, so that what every worker's first cell loads (the compiler's _ast,
            # the main interpreter's sys.path) is loaded now too.
            pool.run("", filename="<ipy_parallel warm-up>", what="the warm-up")
            return pool

        self._prepare(backend, key, start, "warm")

    def _prepare(self, backend: str, key: _Key, make: Callable[[], Any], why: str) -> _Start:
        """Start or grow the backend's pool (``make()`` returns it) in a thread of its own, so
        that whoever waits for it can stop waiting at once: creating interpreters cannot be
        interrupted, and making 64 of them takes a second or more. _take_warm() adopts the pool
        under ``key``."""
        # Here, not in that thread: it must add nothing to sys.modules while this one may iterate
        # over it (without the GIL that fails: IPython's kernel does as it starts, while
        # %load_ext warms the default pool; CI run 19).
        try:
            pool_class(backend).prepare()
        except Exception:  # an unknown backend, a failed import: the start meets it and says so
            pass
        started = _Start(key)

        def start():
            try:
                started.pool = make()
            except BaseException as exc:  # nothing adopted: the next cell that needs the pool tries again
                started.error = exc
            finally:
                started.done.set()

        # Not a daemon: the interpreter's exit waits for it (a bounded start) before it ends the pools.
        started.thread = threading.Thread(target=start, name=f"ipy_parallel-{why}-{backend}")
        self._warming[backend] = started
        started.thread.start()
        return started

    def _take_warm(self, backend: str | None = None) -> None:
        """Adopt the pools warmed in the background (of ``backend``, or all), waiting for them."""
        for name in [backend] if backend is not None else list(self._warming):
            started = self._warming.get(name)
            if started is None:
                continue
            while True:  # a Ctrl-C here leaves it to finish; a later call adopts it
                with interrupts_as_raised():
                    if started.done.wait(0.05):
                        break
                if started.lost():  # nothing to adopt: the caller starts the pool itself
                    break
            # Adopted before it is forgotten, the key first (a pool is looked up, then its key):
            # a Ctrl-C between two of these stores leaves the next call to adopt it again.
            if started.pool is not None:
                self._keys[name] = started.key
                self._pools[name] = started.pool
            del self._warming[name]

    def get(self, backend: str, n: int | None, cluster: Cluster | None = None):
        """The pool for a cell; starts (blocking) or connects one when needed."""
        self._take_warm(backend)
        key = _Key(n, cluster or Cluster())
        pool = self._pools.get(backend)
        if pool is not None and not pool.closed and self._keys[backend] == key:
            return pool
        # Resized when idle; with workers still busy (stuck in C code, say) it is replaced at once,
        # closing abandoning what cannot stop, rather than waiting for them first.
        resize = pool is not None and pool.state == "idle" and self._keys[backend].cluster == key.cluster

        def make():
            if resize:
                try:
                    pool.resize(n)  # the workers that stay keep their interpreters: only new ones start
                    return pool
                except (NotImplementedError, RuntimeError):  # a backend that cannot, or workers still busy
                    pass  # then a new pool (closing abandons workers that cannot be stopped)
            if pool is not None:
                pool.close()
            return _open(backend, n, key.cluster)

        try:  # a Ctrl-C as the thread starts (Thread.start() waits for it) lands here too
            with interrupts_as_raised():
                started = self._prepare(backend, key, make, "start")
            self._take_warm(backend)
        except KeyboardInterrupt:
            raise ParallelInterrupted(
                f"interrupted while the {backend} pool was being {'resized' if resize else 'started'}"
                "; that goes on in the background, and the next cell gets the pool"
            ) from None
        if started.error is not None:
            raise started.error
        return started.pool

    def size_for(self, backend: str, n: int | None, cluster: Cluster | None = None) -> int | None:
        """The workers get() would give a cell: n, else the backend's default (os.cpu_count());
        a cluster's default is its engines, known once connected (else None)."""
        if n is not None or backend != "ipyparallel":
            return check_workers(n, "n")
        self._take_warm(backend)
        pool = self._pools.get(backend)
        same = pool is not None and not pool.closed and self._keys[backend] == _Key(n, cluster or Cluster())
        return pool.size if same else None

    def of(self, backend: str):
        """The backend's pool (maybe closed), or None."""
        self._take_warm(backend)
        return self._pools.get(backend)

    def open(self) -> dict[str, Any]:
        """The pools not closed, by backend."""
        self._take_warm()
        return {backend: pool for backend, pool in self._pools.items() if not pool.closed}

    def renew(self) -> str:
        """Close the sub-interpreter and process pools and end the interpreters the reserve
        keeps, so that the next cell gets new workers (see Pool.reserve); says what it ended."""
        ended = []
        for backend in ("subinterpreter", "process"):
            pool = self.of(backend)
            if pool is not None and not pool.closed:
                ended.append(f"closed the {pool.size} workers of the {backend} pool")
                pool.close()
        reserve = pool_class("subinterpreter").reserve  # after the closes, which park their workers there
        kept = reserve()["kept"]
        reserve(clear=True)
        return ", ".join(ended + [f"ended the {kept} interpreters kept in reserve"])

    def wait_background(self, timeout: float | None = None) -> list[BackgroundRun]:
        """Wait for the background runs going on to end (at most ``timeout`` seconds in all);
        returns them. A Ctrl-C stops the waiting (ParallelInterrupted), never the runs."""
        jobs = self.running()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for job in jobs:
                job.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except KeyboardInterrupt:
            raise ParallelInterrupted(
                "stopped waiting; the background runs go on (%parallel_stop stops them)"
            ) from None
        return jobs

    def stop_background(self) -> None:
        """Stop every background run going on, all at once (a few seconds at most)."""
        stop_all(self.running())

    def close(self) -> None:
        """Stop the background runs, then close every pool (a cluster's connection only: the
        cluster itself keeps running)."""
        self._take_warm()
        self.stop_background()
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._keys.clear()


def _open(backend: str, n: int | None, cluster: Cluster):
    if backend not in BACKENDS:
        raise CellUsageError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "threads":
        with warnings.catch_warnings():  # a GIL build's ThreadPool warns: the cells' display says it instead
            warnings.filterwarnings("ignore", "ipy_parallel: this CPython runs with a GIL", RuntimeWarning)
            return open_pool(backend, n)
    if backend != "ipyparallel":
        return open_pool(backend, n)
    try:
        return open_pool(backend, n, profile=cluster.profile, cluster_id=cluster.cluster_id)
    except (ClusterError, ValueError) as exc:  # no ipyparallel, no cluster, too few engines
        raise CellUsageError(str(exc)) from None


def not_isolated_modules(error: ParallelError) -> list[str] | None:
    """The modules that could not load, when every failure of the cell is one of them; else None."""
    modules = []
    for _, worker_error in error.groups:
        package = not_isolated_package(worker_error.message) if worker_error.type_name == "ImportError" else None
        if package is None:
            return None
        modules.append(package)
    return sorted(set(modules)) or None


def run_on_backend(
    pools: Pools,
    config: Config,
    backend: str,
    source: str,
    options: CellOptions,
    user_ns: MutableMapping[str, Any],
    make_monitor: Callable[..., Monitor],
    filename: str | None = None,
    note: Callable[[str], None] = print,
    cluster: Cluster | None = None,
    turn: Turn | None = None,
):
    """Run a cell on ``backend`` (its pool from ``pools``) as cell.run_cell does. With
    ``config.fallback``, a cell that failed on sub-interpreters only because modules cannot be
    imported there runs again on the process backend, after ``note`` says so.

    make_monitor(n_workers, label, background=False, ids=None) builds the cell's display. A pool busy
    with a background run is refused (CellUsageError), or waited for with ``wait``. Blocks
    until the cell is done; with ``turn.background``, returns its BackgroundRun at once instead.
    ``cluster``: which one, for the ipyparallel backend.
    """
    turn = turn or Turn()
    pools.check_free(backend, turn.wait, can_wait=turn.can_wait)
    # Before the pool is started or resized: a refused cell changes nothing.
    check_cell(source, options, user_ns, filename, pools.size_for(backend, options.n, cluster))
    pool = pools.get(backend, options.n, cluster)
    label = "%%parallel" if backend == "subinterpreter" else f"%%parallel [{backend}]"
    if backend == "threads" and takes_turns():  # say so, rather than show one core busy as if that were all
        label = f"%%parallel [threads · {TAKING_TURNS}]"
    options = replace(options, n=pool.size)
    shown = pool.size if options.targets is None else len(options.targets)

    def ended(on: str) -> Callable[[CellRun], None]:
        def keep(cell: CellRun) -> None:
            pools.last_cell = (on, cell.timeline)

        return keep

    if turn.background:
        if pool.state == "busy":  # not a background run's: workers an earlier, stopped run left busy
            raise CellUsageError(
                f"the {backend} pool's workers are still busy with an earlier run that was stopped "
                "but has not ended (blocked in C code, say), so a --bg cell cannot start now: run "
                "the cell without --bg to wait for them (interruptibly), or try again later"
            )

        def make(number: int) -> BackgroundRun:
            title = f"{label} --bg [{number}]"
            monitor = make_monitor(shown, title, background=True, ids=options.targets)
            cell = CellRun(pool, source, options, user_ns, monitor, filename, ended(backend))
            return BackgroundRun(number, backend, cell, title)

        job = pools.add_background(make)  # first: a Ctrl-C in start() leaves a run %parallel_stop can see
        job.start()
        return job
    try:
        monitor = make_monitor(shown, label, ids=options.targets)
        return run_cell(pool, source, options, user_ns, monitor, filename, ended(backend))
    except ParallelError as exc:
        modules = not_isolated_modules(exc) if backend == "subinterpreter" and config.fallback else None
        if modules is None:
            raise
        failure = exc
    pools.check_free("process", turn.wait, what="the fallback to processes", can_wait=turn.can_wait)
    note(fallback_note(modules, pool.size, source, filename, failure))
    process_pool = pools.get("process", pool.size)
    return run_cell(
        process_pool,
        source,
        options,
        user_ns,
        make_monitor(shown, "%%parallel [process]", ids=options.targets),
        filename,
        ended("process"),
    )


def fallback_note(modules: list[str], size: int, source: str, filename: str | None, error: ParallelError) -> str:
    """What the fallback to processes says; it warns that statements before the import ran in
    the sub-interpreters too only when some did."""
    note = (
        f"ipy_parallel: {', '.join(modules)} cannot be imported in a sub-interpreter; running the cell again "
        f"on the process backend ({size} worker processes), as %parallel_config --fallback on asks."
    )
    if _ran_before_failing(source, filename or cell_filename(source), error):
        note += " Statements before the import ran in the sub-interpreters too."
    return note


def _ran_before_failing(source: str, filename: str, error: ParallelError) -> bool:
    """Whether a top-level statement before the one that failed ran: the failing statement is
    the cell's outermost frame in each worker's traceback (True when that cannot be told)."""
    frame = re.compile(rf'File "{re.escape(filename)}", line (\d+)')
    try:
        starts = [node.lineno for node in ast.parse(source).body]
    except SyntaxError:
        return True
    for _, worker_error in error.groups:
        match = frame.search(worker_error.traceback)
        if match is None:
            return True
        line = int(match.group(1))
        if sum(start <= line for start in starts) > 1:
            return True
    return False
