"""Worker errors gathered into one exception: each distinct traceback once, with the workers that raised it."""

from __future__ import annotations

import traceback
from typing import Iterable, Sequence

from .pool import Result, WorkerError

__all__ = ["ParallelError", "CellSyntaxError", "format_workers", "group_errors"]


def format_workers(ids: Iterable[int]) -> str:
    """[0, 1, 2, 3, 7, 9, 10] -> "0-3, 7, 9-10"."""
    spans: list[list[int]] = []
    for i in sorted(set(ids)):
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def group_errors(results: Sequence[Result]) -> list[tuple[list[int], WorkerError]]:
    """Failed workers grouped by identical traceback text, in order of first appearance."""
    groups: dict[str, tuple[list[int], WorkerError]] = {}
    for r in results:
        if r.error is not None:
            groups.setdefault(r.error.traceback, ([], r.error))[0].append(r.worker_id)
    return list(groups.values())


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
        summary = f"{failed} of {len(self.results)} workers raised"
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

    def __init__(self, error: SyntaxError):
        super().__init__(str(error))
        self.error = error

    def _render_traceback_(self) -> list[str]:
        return "".join(traceback.format_exception_only(self.error)).rstrip("\n").splitlines()
