"""The Python side of the engine: inputs in, one source run in every worker, results back."""

from __future__ import annotations

import functools
import marshal
import os
import pickle
import sys
import threading
import time
import warnings
import zlib
from dataclasses import dataclass
from importlib import resources
from typing import Any, Mapping, Sequence

import cloudpickle

from . import _engine

__all__ = ["Pool", "Run", "Result", "WorkerError", "ParallelInterrupted", "ParallelTimeout", "MAX_WORKERS"]

#: The most workers one pool may have; each is an OS thread and an interpreter (~2 MiB).
MAX_WORKERS = 256

_RUNTIME_SOURCE = resources.files(__package__).joinpath("_runtime.py").read_text(encoding="utf-8")
# Compiled once here, unmarshalled in each worker (cheaper there than compiling it again).
_RUNTIME_CODE = marshal.dumps(compile(_RUNTIME_SOURCE, "<ipy_parallel worker runtime>", "exec"))
_WAIT_SLICE = 0.1  # seconds the GIL stays released per wait, so Ctrl-C is seen that often

# Clears a worker's variables, keeping what the runtime gave it.
# What a reset leaves in a worker's namespace: the module's own names and what the runtime gave it.
_KEPT_NAMES = ("__name__", "__doc__", "__package__", "__loader__", "__spec__", "__builtins__",
               "worker_id", "n_workers")
_RESET_SOURCE = f"""\
for _ipp_name in list(globals()):
    if _ipp_name not in {_KEPT_NAMES!r}:
        del globals()[_ipp_name]
globals().pop("_ipp_name", None)
"""


STOP_GRACE = 1.0  # seconds interrupted workers get to stop before a run is left to finish alone


class _RunStopped:
    """A run stopped before its end. ``late``: workers still running when it was stopped;
    ``stuck``: those of them that did not stop (blocked in C code; they finish in the
    background and the pool's next run waits for them); ``results``: every worker's Result
    when all stopped (the interrupted ones with a KeyboardInterrupt error), else None."""

    def __init__(self, what: str, late: list[int], stuck: list[int], results: list[Result] | None):
        from .errors import format_workers

        message = what
        if late:
            message += f": stopped worker{'s' if len(late) > 1 else ''} {format_workers(late)}"
        if stuck:
            message += (f"; worker{'s' if len(stuck) > 1 else ''} {format_workers(stuck)} could not be stopped "
                        "(blocked in C code) and will rejoin the pool when they return")
        super().__init__(message)
        self.late, self.stuck, self.results = late, stuck, results

    def _render_traceback_(self) -> list[str]:  # IPython: the message, not our frames
        return [f"{type(self).__name__}: {self}"]


class ParallelInterrupted(_RunStopped, KeyboardInterrupt):
    """A run interrupted by KeyboardInterrupt (Ctrl-C, a notebook's stop button)."""


class ParallelTimeout(_RunStopped, TimeoutError):
    """A run stopped at its timeout."""


@dataclass(frozen=True)
class WorkerError:
    """An exception raised inside a worker.

    ``traceback`` is formatted in the worker; its line numbers are those of the source that
    was run. ``exception`` is the exception object itself when it could travel back by pickle
    (its class importable here, or defined in ``__main__``), else None.
    """

    type_name: str
    message: str
    traceback: str
    exception: BaseException | None = None

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name


@dataclass(slots=True)
class Result:
    """What one worker made of one run."""

    worker_id: int
    value: Any  # the value of the source's last expression, or None
    stdout: str
    stderr: str
    error: WorkerError | None
    wall_time: float  # seconds, from the worker picking the task up to its reply
    cpu_time: float  # CPU seconds of the worker's thread for the task (and the µs it took to wake)

    @property
    def ok(self) -> bool:
        return self.error is None


class Pool:
    """A warm pool of isolated sub-interpreters, one OS thread each, each with its own GIL.

    ``Pool(n)`` starts n workers in parallel and blocks until all are ready (a few ms each);
    they live until ``close()``, the end of a ``with`` block, or interpreter exit. Every
    ``run()`` executes in all of them at once. Each worker keeps its namespace (its own
    ``__main__``) between runs and sees ``worker_id`` (0..n-1) and ``n_workers``.

    Blocking and the GIL: the constructor, ``run()``, ``Run.wait()``, ``Run.results()`` and
    ``close()`` block the calling thread and release the GIL while they wait, so other Python
    threads run meanwhile. One run at a time per pool: a ``submit()`` from another thread waits
    until the run in progress has been collected.
    """

    def __init__(self, n: int | None = None):
        n = _check_workers(n, "Pool(n): n")
        self._lock = threading.Condition()
        self._current: Run | None = None  # the run started and not yet collected
        self._sent_path: list[str] | None = None
        self._closed_by_user = False
        self._engine = _engine.Pool(n, _RUNTIME_CODE)

    @property
    def size(self) -> int:
        """Number of workers."""
        return self._engine.size

    @property
    def closed(self) -> bool:
        return self._closed_by_user

    @property
    def state(self) -> str:
        """"idle", "busy" (a run in progress) or "closed"."""
        return "closed" if self._closed_by_user else ("busy" if self._engine.busy else "idle")

    @property
    def runs(self) -> int:
        """Runs started on the current workers."""
        return self._engine.runs

    def cpu_times(self) -> list[float]:
        """CPU seconds each worker's thread has used since it started (read without stopping it)."""
        return self._engine.cpu_times()

    def run(
        self,
        source: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        worker_inputs: Sequence[Mapping[str, Any]] | None = None,
        filename: str | None = None,
        timeout: float | None = None,
    ) -> list[Result]:
        """Execute ``source`` in every worker at once; return one Result per worker, by worker_id.

        ``inputs`` are bound by name in every worker first; ``worker_inputs``, one mapping per
        worker, add or override names per worker. Values travel by pickle (cloudpickle, so
        functions and classes defined in ``__main__`` go too); one that cannot raises TypeError
        naming it, before anything runs. An exception in a worker is reported in its Result
        and does not stop the others. ``filename`` is what tracebacks call the source.

        Blocks until every worker is done, with the GIL released. With ``timeout`` (seconds)
        the workers still running then are interrupted and ParallelTimeout (a TimeoutError) is
        raised; on KeyboardInterrupt they are interrupted and ParallelInterrupted (a
        KeyboardInterrupt) is raised. Python code stops within milliseconds, time.sleep at once;
        a worker blocked in other C code stops when that returns (the next run waits for it).
        """
        run = self._start(source, inputs, worker_inputs, filename, False, _WAIT_SLICE)
        return run.results(timeout)

    def submit(
        self,
        source: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        worker_inputs: Sequence[Mapping[str, Any]] | None = None,
        filename: str | None = None,
        stream: bool = False,
    ) -> Run:
        """Start ``source`` in every worker as run() does, and return its Run at once.

        With ``stream=True`` the workers' output can be read while they run (``Run.output()``).
        Call ``Run.results()`` (or ``Run.abandon()``) before the next submit from this thread.
        """
        return self._start(source, inputs, worker_inputs, filename, stream, 0.0)

    def interrupt(self) -> list[int]:
        """Raise KeyboardInterrupt in every worker running the current run (from any thread);
        returns their ids. The run then ends with those errors in its Results."""
        return self._engine.interrupt()

    def reset(self) -> None:
        """Clear every worker's variables (worker_id and n_workers stay). Imported modules stay
        imported. Blocks like run()."""
        for r in self.run(_RESET_SOURCE, filename="<reset>"):
            if r.error is not None:
                raise RuntimeError(f"worker {r.worker_id} could not be reset: {r.error}")

    def close(self) -> None:
        """End every worker's interpreter and thread, interrupting a run in progress (a worker
        blocked in C code other than time.sleep is waited for). Harmless twice."""
        self._closed_by_user = True
        self._engine.close()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ipy_parallel.Pool {self.size} workers, {self.state}, {self.runs} runs>"

    # -- internals ------------------------------------------------------------------------

    def _start(self, source, inputs, worker_inputs, filename, stream, first_wait) -> Run:
        if not isinstance(source, str):
            raise TypeError(f"source must be str, not {type(source).__name__}")
        if filename is None:
            filename = _cell_filename(source)
        me = threading.get_ident()
        with self._lock:
            current = _await_turn(self, me, self._restart_after_fork)
            payloads, path = self._payloads(inputs, worker_inputs)
            if current is not None:  # abandoned: nobody wants its results, but its workers must finish
                current.wait()
                current._collect()
                self._current = None
            engine = self._engine
            engine.set_streaming(stream)
            cpu_base = engine.cpu_times()
            done = engine.start(source, filename, payloads, first_wait)
            if path is not None:
                self._sent_path = path
            self._current = run = Run(self, engine, cpu_base, done, me)
        return run

    def _release(self, run: Run) -> None:
        """Called when a run is collected or abandoned; an abandoned run stays current until the
        next _start() has waited for its workers."""
        with self._lock:
            if self._current is run and not run._abandoned:
                self._current = None
            self._lock.notify_all()

    def _check_open(self) -> None:
        if self._closed_by_user:
            raise RuntimeError("this Pool is closed: create a new Pool to run more work")

    def _restart_after_fork(self) -> None:
        """The engine ends every pool before os.fork() (a child forked with live sub-interpreters
        crashes); start this one again, and say that its workers' state is gone."""
        if not self._engine.closed:
            return
        self._engine = _engine.Pool(self._engine.size, _RUNTIME_CODE)
        self._current = None
        self._sent_path = None
        warnings.warn(
            "ipy_parallel: this process forked (os.fork or multiprocessing's 'fork' start method), so "
            "the pool's workers were restarted and their variables cleared: CPython crashes a child "
            "forked while sub-interpreters are alive (gh-139759). Use multiprocessing's 'spawn' or "
            "'forkserver' start method to keep the workers' state.",
            RuntimeWarning,
            stacklevel=5,
        )

    def _payloads(self, inputs, worker_inputs) -> tuple[list[bytes], list[str] | None]:
        """The payloads of a run (see _build_payloads) and the sys.path they carry, if any.

        Workers follow the main interpreter's sys.path, so the modules a notebook can import
        are importable in its workers; it is sent only when it has changed.
        """
        path = list(sys.path)
        path_to_send = None if path == self._sent_path else path
        return _build_payloads(inputs, worker_inputs, self.size, path_to_send), path_to_send


class Run:
    """One run in progress on a Pool: wait for it, read its output as it comes, take its results."""

    def __init__(self, pool: Pool, engine, cpu_base: list[float], done: bool, thread: int):
        self._pool = pool
        self._engine = engine
        self._cpu_base = cpu_base
        self._done = done
        self._thread = thread
        self._abandoned = False
        self._results: list[Result] | None = None

    @property
    def done(self) -> bool:
        return self._done or self.wait(0)

    def wait(self, timeout: float | None = None) -> bool:
        """Block up to ``timeout`` seconds (None: until done), GIL released; True once every
        worker has finished. Wakes every 0.1 s so that Ctrl-C is seen."""
        if self._done:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _WAIT_SLICE if deadline is None else min(_WAIT_SLICE, deadline - time.monotonic())
            if self._engine.wait(max(left, 0.0)):
                self._done = True
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def output(self) -> list[tuple[int, str, str]]:
        """What the workers wrote since the last call, as (worker_id, "stdout" | "stderr", text),
        in order for each worker. Only for runs submitted with stream=True."""
        return [(w, "stderr" if s == 2 else "stdout", t) for w, s, t in self._engine.drain_output()]

    def cpu_times(self) -> list[float]:
        """CPU seconds each worker's thread has used since this run started."""
        now = self._engine.cpu_times()
        return [a - b for a, b in zip(now, self._cpu_base)]

    def busy_workers(self) -> list[int]:
        """The ids of the workers still running this run."""
        return [] if self._done else self._engine.busy_workers()

    def results(self, timeout: float | None = None) -> list[Result]:
        """Wait for every worker, then return one Result per worker, by worker_id.

        With ``timeout`` (seconds), workers still running then are interrupted and
        ParallelTimeout is raised. On KeyboardInterrupt (Ctrl-C, a notebook's stop button) every
        worker is interrupted and ParallelInterrupted (a KeyboardInterrupt) is raised. Either
        way the pool is usable after, and the exception carries the results of a run whose
        workers all stopped."""
        if self._results is not None:
            return self._results
        try:
            finished = self.wait(timeout)
        except KeyboardInterrupt:
            late = self.busy_workers()
            raise ParallelInterrupted("interrupted", late, *self.stop()) from None
        if not finished:
            late = self.busy_workers()
            raise ParallelTimeout(f"the run did not finish within {timeout:g} s", late, *self.stop())
        return self._finish()

    def stop(self, grace: float = STOP_GRACE) -> tuple[list[int], list[Result] | None]:
        """Interrupt the workers still running and wait up to ``grace`` seconds for them.
        Returns (workers that did not stop, the run's results if all stopped). Workers stuck
        in C code finish in the background; the pool's next run waits for them."""
        if self._results is not None:
            return [], self._results
        deadline = time.monotonic() + grace
        stopped = False
        try:
            # Again every 0.1 s: a KeyboardInterrupt can be swallowed by C code that clears
            # errors, or caught by the cell itself.
            while not stopped and time.monotonic() < deadline:
                self._interrupt()
                stopped = self.wait(min(_WAIT_SLICE, max(0.0, deadline - time.monotonic())))
        except KeyboardInterrupt:  # pressed again: give up waiting
            stopped = False
        if not stopped:
            stuck = self.busy_workers()
            self.abandon()
            return stuck, None
        return [], self._finish()

    def _interrupt(self) -> None:
        self._engine.interrupt()

    def abandon(self) -> None:
        """Give up on this run's results: the workers finish it, and the pool's next run first
        waits for them."""
        if self._results is None:
            self._abandoned = True
            self._pool._release(self)

    def _finish(self) -> list[Result]:
        """Take the results of a run whose workers are all done, and free the pool for the next."""
        self._results = self._collect()
        self._pool._release(self)
        return self._results

    def _collect(self) -> list[Result]:
        return [_result(*raw) for raw in self._engine.collect()]


def _check_workers(n, what: str) -> int:
    """A number of workers, validated (None: os.cpu_count())."""
    n = (os.cpu_count() or 1) if n is None else n
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{what} must be an int number of workers, not {type(n).__name__}")
    if not 1 <= n <= MAX_WORKERS:
        raise ValueError(f"{what} must be between 1 and {MAX_WORKERS}, got {n}")
    return n


def _await_turn(pool, me: int, before=None):
    """One run at a time per pool (any backend; requires pool._lock): wait until the run of
    another thread is collected, and return the current run if it was abandoned, else None.
    A thread that left its own run uncollected gets an error rather than a deadlock."""
    while True:
        pool._check_open()
        if before is not None:
            before()
        current = pool._current
        if current is None or current._abandoned:
            return current
        if current._thread == me:
            raise RuntimeError("the previous run on this pool was not collected: call its results() first")
        pool._lock.wait()  # another thread's run; its results() notifies


@functools.lru_cache(maxsize=64)
def _cell_filename(source: str) -> str:
    """A name for tracebacks and linecache that differs between sources and not between runs."""
    return f"<cell-{zlib.crc32(source.encode('utf-8', 'surrogatepass')):08x}>"


def _build_payloads(inputs, worker_inputs, size: int, path: list[str] | None) -> list[bytes]:
    """What each of ``size`` workers must receive: [] for nothing, [b] for all, or one per
    worker. Each is marshal((path or None, [pickled inputs, ...])), as _runtime._receive reads
    it: marshal, a builtin, costs a worker no import, so a run without inputs never loads
    pickle there. ``path``, when not None, becomes the workers' sys.path. Shared by every
    backend, which decides for itself what path to send."""
    common = _pickle_inputs(inputs, "inputs") if inputs else None
    if worker_inputs is None:
        if path is None and common is None:
            return []
        return [marshal.dumps((path, [common] if common else []))]
    if isinstance(worker_inputs, (str, bytes)) or not isinstance(worker_inputs, Sequence):
        raise TypeError("worker_inputs must be a sequence of mappings, one per worker")
    if len(worker_inputs) != size:
        raise ValueError(f"worker_inputs has {len(worker_inputs)} entries; this pool has {size} workers")
    blobs = [_pickle_inputs(m, f"worker_inputs[{i}]") for i, m in enumerate(worker_inputs)]
    parts = [[b for b in (common, blob) if b] for blob in blobs]
    return [marshal.dumps((path, p)) for p in parts]


def _pickle_inputs(mapping, what: str) -> bytes:
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{what} must be a mapping of names to values, not {type(mapping).__name__}")
    for name in mapping:
        if not isinstance(name, str) or not name.isidentifier():
            raise TypeError(f"{what}: {name!r} is not a valid variable name")
    try:
        return cloudpickle.dumps(dict(mapping), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass
    for name, value in mapping.items():  # find the culprit, to name it
        try:
            cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(
                f"{what}: {name!r} (a {type(value).__name__}) cannot be sent to the workers, "
                f"because it cannot be pickled: {exc}. Send data it can be rebuilt from instead."
            ) from exc
    raise TypeError(f"{what} cannot be pickled as a whole (each value alone can)")


def _result(worker_id, value_blob, stdout, stderr, error, wall, cpu, value_format) -> Result:
    value = None
    err = None
    if error is not None:
        type_name, message, text, exc_blob = error
        exception = None
        if exc_blob is not None:
            try:
                exception = pickle.loads(exc_blob)
            except Exception:
                exception = None
        err = WorkerError(type_name, message, text, exception)
    elif value_blob is not None:
        try:
            value = (marshal.loads if value_format == 1 else pickle.loads)(value_blob)
        except Exception as exc:
            message = f"the result of worker {worker_id} cannot be rebuilt in the main interpreter: {exc!r}"
            err = WorkerError(type(exc).__name__, message, f"{type(exc).__name__}: {message}\n", None)
    return Result(worker_id, value, stdout, stderr, err, wall, cpu)
