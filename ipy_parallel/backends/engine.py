"""The Engine a backend writes: the protocol a Pool drives, and EngineBase, the state every engine written in Python shares.

A backend's engine says only how its workers start, are reached, are interrupted and end (its
transport). Which calls are allowed when (one run at a time, nothing once closed, collect only
a finished run) is EngineBase's, with the same errors for every backend; the C++ engine keeps
the same rules itself (native/engine.cpp).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["Engine", "EngineBase"]


class Engine(Protocol):
    """Where a pool's workers are, and how to reach them. Blocking calls release the GIL.

    One run at a time: start() raises RuntimeError while the previous run has not finished (or
    the engine is closed). collect() gives the finished run's result records (the protocol's),
    the same ones every time, until the next start() or release(). Each call is atomic as far
    as the Pool is concerned: an engine written in Python defers KeyboardInterrupt in its
    critical sections (deferred_interrupts()).
    """

    size: int
    resizable: bool  # resize() works (between runs)

    @property
    def closed(self) -> bool: ...
    @property
    def busy(self) -> bool: ...  # a run has started and not finished
    @property
    def runs(self) -> int: ...  # runs started so far
    @property
    def abandoned(self) -> list[tuple[int, str]]: ...  # every worker close() gave up on, and why

    def start(
        self,
        source: str,
        filename: str,
        payloads: list[bytes],
        stream: bool = False,
        wait: float = 0.0,
        lent: list[list] = (),
    ) -> bool: ...  # then waits up to `wait`; True if already finished
    # lent: [] or, for each payload, the objects it lends; only an engine whose pool's _lendable()
    # accepts some ever gets any.
    def wait(self, timeout: float) -> bool: ...
    def collect(self) -> list[tuple]: ...
    def release(self) -> None: ...  # the run's records are kept elsewhere now: let go of them
    def interrupt(self) -> list[int]: ...  # KeyboardInterrupt into the workers of the run; their ids
    def busy_workers(self) -> list[int]: ...
    def cpu_times(self) -> list[float]: ...  # per worker, since it started
    # Per worker: (done, total or None) of its task's worker.progress(), None if it made none; the
    # latest reading, and a fresh one asked for where readings are asked for. Never blocks.
    def progress(self) -> list[tuple[int, int | None] | None]: ...
    def drain_output(self) -> list[tuple[int, int, str]]: ...  # (worker_id, 1 stdout | 2 stderr, text)
    def resize(self, n: int) -> list[tuple[int, str]]: ...  # workers abandoned as it shrank, and why
    def close(self, timeout: float) -> list[tuple[int, str]]: ...  # workers abandoned, and why


class EngineBase:
    """The run counter, the closed flag and the guards of an Engine written in Python.

    A subclass sets ``size``, implements the transport (start, wait, interrupt, ...), and calls
    ``_check_startable()`` then ``_started()`` in start(), ``_check_collectable(finished)`` in
    collect() and ``_mark_closed()`` in close(), with its own lock held where it has one.
    """

    resizable = False  # an engine that can resize says so, and overrides resize()
    _kind = "pool"  # the pool class, for its errors

    def __init__(self, size: int):
        self.size = size
        self._closed = False
        self._runs = 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def runs(self) -> int:
        return self._runs

    @property
    def abandoned(self) -> list[tuple[int, str]]:
        """Workers close() gave up on: none for an engine that can always end its workers."""
        return []

    @property
    def busy(self) -> bool:
        raise NotImplementedError

    def progress(self) -> list[tuple[int, int | None] | None]:
        """No worker's position known: for an engine whose workers cannot report one."""
        return [None] * self.size

    def resize(self, n: int) -> list[tuple[int, str]]:
        raise NotImplementedError(f"a {self._kind} cannot be resized: close it and make one of {n} workers")

    # -- the guards ------------------------------------------------------------------------

    def _check_startable(self) -> None:
        self._check_not_closed()
        if self.busy:
            raise RuntimeError("this pool is still running a task: wait for it to finish first")

    def _started(self) -> None:
        """One store: the run counter is how the Pool knows the run started."""
        self._runs += 1

    def _check_collectable(self, finished: Callable[[], bool], has_run: bool | None = None) -> None:
        """``finished()``: the run is over (asked last); ``has_run``: a run whose records are
        still here (default: a run has started)."""
        self._check_not_closed()
        if not (self._runs > 0 if has_run is None else has_run):
            raise RuntimeError("no run to collect: call start() first")
        if not finished():
            raise RuntimeError("the run is not finished: wait() until it returns True")

    def _mark_closed(self) -> bool:
        """Closes the engine; False if it already was (close() then has nothing to do)."""
        if self._closed:
            return False
        self._closed = True
        return True

    def _check_not_closed(self) -> None:
        if self._closed:
            raise RuntimeError(f"this {self._kind} is closed: create a new {self._kind} to run more work")
