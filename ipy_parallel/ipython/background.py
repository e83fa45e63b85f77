"""A background cell (%%parallel --bg): its run goes on in the workers while the notebook runs other cells; this is its handle.

IPython-free like cell.py. The cell returns at once; a thread of the main interpreter (not the
workers: they need no help) feeds the cell's live display and output, and at the end stores
the values (-o, --pull) and shows the outcome, all in the cell's own output area: the thread
runs in a copy of the cell's context, where ipykernel keeps which cell it belongs to.

Only the main thread gets KeyboardInterrupt, so the stop button interrupts the cell running
now, never this thread: a background run is stopped by its handle's stop() (%parallel_stop).
"""

from __future__ import annotations

import contextvars
import sys
import threading
import time

from ..backends.run import STOP_GRACE, TICK
from ..backends.signals import deferred_interrupts
from ..exceptions import ParallelInterrupted, RunStopped
from ..results import Outcome
from .cell import CellRun

__all__ = ["BackgroundRun", "stop_all"]

STOP_WAIT = STOP_GRACE + 2.0  # seconds stop() waits: the workers' grace, then the thread's last words


def stop_all(jobs: list[BackgroundRun]) -> None:
    """Stop these background runs at once (not one after another) and wait for them, a few
    seconds at most in all."""
    for job in jobs:
        job.stop(wait=False)
    deadline = time.monotonic() + STOP_WAIT
    for job in jobs:
        job.wait(max(0.0, deadline - time.monotonic()))


class _StopAsked(Exception):
    """Raised out of the run's wait, in the background thread, when stop() was called."""


class BackgroundRun:
    """The handle of a background cell, numbered per session ([1], [2], ...).

    ``done()`` never blocks; ``wait()``, ``result()`` and ``stop()`` block the calling thread
    (interruptibly: a Ctrl-C there stops the waiting, not the run) and hold the GIL only in
    between their short waits."""

    def __init__(self, number: int, backend: str, cell: CellRun, label: str):
        self.number = number
        self.backend = backend
        self.label = label
        self.started = time.monotonic()
        self.ended: float | None = None
        self._cell = cell
        self._values = None
        self._error: BaseException | None = None
        self._stop_asked = threading.Event()
        self._finished = threading.Event()
        self._run = None
        context = contextvars.copy_context()
        # A daemon: a run that never ends must not keep the interpreter from exiting (the
        # engine's exit hook then ends the pools, and this thread with them).
        self._thread = threading.Thread(
            target=context.run, args=(self._drive,), daemon=True, name=f"ipy_parallel-background-{number}"
        )

    def start(self) -> None:
        """Start the run and the thread that follows it, all or nothing: a Ctrl-C meanwhile is
        held until both have started, and then stops the run (the user pressed stop as the
        cell began: it does not go on). A bad input (CellUsageError) or a Ctrl-C before the
        thread runs leaves no run behind that nothing follows. Blocks only as long as sending
        the inputs takes: the caller has seen that the pool is free."""
        try:
            with deferred_interrupts():
                self._run = self._cell.submit()
                self._cell.monitor.begin()
                self._thread.start()
        except BaseException as exc:
            if self._thread.ident is None:  # nothing follows the run: it ends here
                if self._run is not None:
                    self._run.stop(0)
                if not isinstance(exc, KeyboardInterrupt):
                    self._error = exc
            elif isinstance(exc, KeyboardInterrupt):
                self.stop()
            raise

    @property
    def pool(self):
        return self._cell.pool

    def done(self) -> bool:
        """True once the run has ended and its values are stored (or its error kept); also for
        a cell interrupted before its run could start."""
        return self._finished.is_set() or self._thread.ident is None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run has ended, at most ``timeout`` seconds (None: no limit); True
        if it has. A Ctrl-C ends the wait (KeyboardInterrupt) and leaves the run going."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while not self.done():
            left = TICK if deadline is None else min(TICK, deadline - time.monotonic())
            if left <= 0:
                return False
            self._finished.wait(left)
        return True

    def result(self, timeout: float | None = None):
        """The cell's value (the list of per-worker values, or None), once the run has ended;
        raises what the cell would have raised (ParallelError, ParallelTimeout, and
        ParallelInterrupted for a run that was stopped). TimeoutError if not ended in time."""
        if not self.wait(timeout):
            raise TimeoutError(f"{self.label} has not ended within {timeout:g} s")
        error = self._failure()
        if error is not None:
            raise error
        return self._values

    def stop(self, wait: bool = True) -> None:
        """Interrupt the workers and (with ``wait``) wait for the run to end: a second or so,
        a few at most. Workers that cannot be stopped (blocked in C code) finish alone, and
        the pool's next run waits for them. Harmless on a run that has ended."""
        if self.done():
            return
        self._stop_asked.set()
        if self._run is not None:
            self._run.interrupt()  # at once, not at the thread's next tick (and only this run)
        if wait:
            self.wait(STOP_WAIT)

    @property
    def state(self) -> str:
        """ "running", "stopping", "done", "failed" or "stopped"."""
        if not self.done():
            return "stopping" if self._stop_asked.is_set() else "running"
        error = self._failure()
        return "done" if error is None else Outcome.of(error).value

    def describe(self) -> str:
        """One line: which run, on what, and how it stands."""
        end = self.ended if self.ended is not None else time.monotonic()
        n = len(self._cell.options.targets or ()) or self.pool.size
        what = f"{self.label} on {n} worker{'s' if n > 1 else ''}"
        state = self.state
        if state in ("failed", "stopped"):
            state += f" ({self._failure()})"
        return f"background run [{self.number}], {what}: {state} after {end - self.started:.1f} s"

    def _failure(self) -> BaseException | None:
        if self._error is None and self._thread.ident is None:
            self._error = ParallelInterrupted(f"{self.label} was interrupted before it started")
            self.ended = self.started
        return self._error

    def __repr__(self) -> str:
        hint = "" if self.done() else "; .wait(), .result(), .stop() (or %parallel_wait, %parallel_stop)"
        return f"<{self.describe()}{hint}>"

    # -- the background thread ----------------------------------------------------------------

    def _tick(self, run) -> None:
        self._cell.tick(run)
        if self._stop_asked.is_set():
            raise _StopAsked

    def _drive(self) -> None:
        results = error = None
        try:
            try:
                results = self._run.results(self._cell.options.timeout, on_tick=self._tick, what=self.label)
            except _StopAsked:
                late = self._run.busy_workers()
                stuck, stopped = self._run.stop()  # not shown as failures: the display says "stopped"
                raise ParallelInterrupted(f"{self.label} was stopped", late, stuck, stopped) from None
            if self._stop_asked.is_set() and any(r.error for r in results):
                # stop()'s interrupt ended the run before a tick saw that it was asked for
                stopped, results = results, None
                raise ParallelInterrupted(f"{self.label} was stopped", results=stopped)
            self._values = self._cell.values(results)
        except BaseException as exc:  # kept for result(): nothing may escape a thread unseen
            error = self._error = exc
        finally:
            try:
                self._cell.end(results, error)
                if error is not None:
                    _show_error(self.label, error)
            except BaseException:  # the display's own trouble (a closed stdout): the outcome is kept
                pass
            self.ended = time.monotonic()
            self._finished.set()


def _show_error(label: str, error: BaseException) -> None:
    """What the cell would have shown had it waited, in its own output area: a stopped run's
    one line, a failure's tracebacks."""
    render = getattr(error, "_render_traceback_", None)
    text = "\n".join(render()) if render is not None else f"{type(error).__name__}: {error}"
    said = f"{label}: {text}" if isinstance(error, RunStopped) else f"{label} failed:\n{text}"
    print(said, file=sys.stderr, flush=True)
