"""The live display of an executor's map(..., progress=True): calls done of all, rate and ETA, and the workers' CPU."""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from ..results import Outcome
from .display import REFRESH, make_monitor

__all__ = ["show_map"]


def show_map(calls: Sequence[tuple[Future, int]], label: str, cpu_times: Callable[[], Sequence[float]]) -> None:
    """Show a map whose calls are ``calls`` (each Future with the number of items it holds) until
    every one is done, then leave its summary; returns at once (a thread of its own draws it, 5
    times a second). In a notebook the display is the calling cell's, even when the map
    outlives the cell; in terminal IPython it is redrawn in place; elsewhere only the summary of
    a map that lasted 0.3 s or more is printed. ``cpu_times()``: each worker's CPU seconds."""
    if not calls:
        return
    total = sum(k for _, k in calls)
    base = list(cpu_times())
    lock = threading.Lock()
    counts = {"items": 0, "calls": 0}
    finished = threading.Event()

    def on_done(future: Future, items: int) -> None:
        with lock:  # on whichever thread resolves the Future: the executor's collector, or a cancel
            if not future.cancelled():
                counts["items"] += items
            counts["calls"] += 1
            if counts["calls"] == len(calls):
                finished.set()

    def cpu() -> list[float]:
        try:
            now = list(cpu_times())
        except Exception:  # the executor shut down meanwhile: its workers' clocks are gone
            now = []
        return [max(a - b, 0.0) for a, b in zip(now, base)] if len(now) == len(base) else [0.0] * len(base)

    shell = None
    if "IPython" in sys.modules:
        shell = sys.modules["IPython"].get_ipython()
    monitor = make_monitor(len(base), shell=shell, label=label)

    def show() -> None:
        try:
            while not finished.wait(REFRESH / 2):
                monitor.update(cpu(), overall=(counts["items"], total))
        finally:
            futures = [f for f, _ in calls]
            if any(f.cancelled() or isinstance(f.exception(0), KeyboardInterrupt) for f in futures):
                outcome = Outcome.STOPPED
            elif any(f.exception(0) is not None for f in futures):
                outcome = Outcome.FAILED
            else:
                outcome = Outcome.OK
            monitor.close(cpu(), outcome=outcome, overall=(counts["items"], total))

    for future, items in calls:
        future.add_done_callback(lambda f, k=items: on_done(f, k))
    # In a copy of the caller's context: ipykernel keeps the cell's parent header in a context
    # variable, and the display must go to the cell that called map().
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(show,), name="ipy_parallel map display", daemon=True).start()
