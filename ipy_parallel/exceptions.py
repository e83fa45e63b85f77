"""Every public exception of ipy_parallel, in one place (all importable from ipy_parallel)."""

from __future__ import annotations

import traceback
from concurrent.futures.process import BrokenProcessPool
from collections.abc import Sequence

from .results import Result, format_workers, group_errors

__all__ = [
    "ParallelError",
    "CellSyntaxError",
    "RunStopped",
    "ParallelInterrupted",
    "ParallelTimeout",
    "WorkerDied",
    "ClusterError",
    "BrokenSubinterpreterPool",
]


class ParallelError(Exception):
    """Raised when workers of a run raised. ``groups`` pairs each distinct error with the workers
    that raised it; ``results`` holds every worker's Result, the successful ones included.

    In IPython the traceback shown is the workers' (``_render_traceback_``), each distinct one
    once, not the frames of the code that gathered them.
    """

    def __init__(self, results: Sequence[Result]):
        self.results = list(results)
        self.groups = group_errors(self.results)
        failed = sum(len(ids) for ids, _ in self.groups)
        first = self.groups[0][1] if self.groups else None
        summary = f"{failed} of {len(self.results)} worker{'s' if len(self.results) != 1 else ''} raised"
        if first is not None:
            summary += f"; first: {first}"
            if len(self.groups) > 1:
                summary += f" (and {len(self.groups) - 1} other distinct errors)"
        super().__init__(summary)

    def render(self) -> str:
        """The text users see: per distinct error, the workers that raised it and its traceback."""
        parts = []
        for ids, error in self.groups:
            who = f"worker {ids[0]}" if len(ids) == 1 else f"workers {format_workers(ids)}"
            parts.append(f"[{who}] {error.traceback.rstrip()}")
        return "\n\n".join(parts)

    def _render_traceback_(self) -> list[str]:  # IPython's hook for custom traceback display
        return self.render().splitlines()


class CellSyntaxError(Exception):
    """A cell's SyntaxError, found in the main interpreter before any worker runs; ``error`` is
    the SyntaxError itself. Not a SyntaxError subclass: IPython shows those with the frames of
    the code that raised them, and here only the error means anything."""

    def __init__(self, error: SyntaxError, hint: str | None = None):
        super().__init__(str(error))
        self.error = error
        self.hint = hint  # one line: why, when the cell is IPython syntax rather than Python

    def _render_traceback_(self) -> list[str]:
        lines = "".join(traceback.format_exception_only(self.error)).rstrip("\n").splitlines()
        return lines + ([self.hint] if self.hint else [])


def _plural(ids: Sequence[int]) -> str:
    return f"worker{'s' if len(ids) > 1 else ''} {format_workers(ids)}"


class RunStopped(Exception):
    """A run stopped before its end. ``late``: workers still running when it was stopped;
    ``stuck``: those of them that did not stop (blocked in C code, or catching KeyboardInterrupt:
    they finish in the background and the pool's next run waits for them); ``results``: every
    worker's Result when all stopped (the interrupted ones with a KeyboardInterrupt error), else None."""

    def __init__(
        self, what: str, late: Sequence[int] = (), stuck: Sequence[int] = (), results: Sequence[Result] | None = None
    ):
        stopped = [w for w in late if w not in stuck]
        parts = [f"stopped {_plural(stopped)}"] if stopped else []
        if stuck:
            parts.append(
                f"{_plural(stuck)} could not be stopped (blocked in C code, or catching "
                "KeyboardInterrupt): the next run waits for them"
            )
        super().__init__(f"{what}: {'; '.join(parts)}" if parts else what)
        self.late, self.stuck = list(late), list(stuck)
        self.results = None if results is None else list(results)

    def _render_traceback_(self) -> list[str]:  # IPython: the message, not our frames
        return [f"{type(self).__name__}: {self}"]


class ParallelInterrupted(RunStopped, KeyboardInterrupt):
    """A run interrupted by KeyboardInterrupt (Ctrl-C, a notebook's stop button)."""


class ParallelTimeout(RunStopped, TimeoutError):
    """A run stopped at its timeout."""


class WorkerDied(RuntimeError):
    """A worker process ended while it ran a cell (os._exit, a crash, a kill signal)."""


class ClusterError(RuntimeError):
    """The ipyparallel cluster cannot be used (ipyparallel missing, no cluster running, engines
    gone); the message says what to do. The magic shows it as a UsageError."""


class BrokenSubinterpreterPool(BrokenProcessPool):
    """The executor's workers stopped (interrupted, or their pool closed) with work unfinished.
    A BrokenProcessPool, so code written for ProcessPoolExecutor catches it."""
