"""What worker.progress() costs: loops of trivial items with and without it, read as a cell's live display reads it."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import NamedTuple

__all__ = ["PROGRESS_LOOPS", "ProgressOverhead", "median_interval", "progress_overhead"]

# The items of each loop (n of them, in every worker); the loop's body is nothing.
PROGRESS_LOOPS = {
    "range": "range({n})",  # knows its length: the loop runs the range's own iterator
    "generator": "(x for x in range({n}))",  # cannot say what is left: counted beside it
}
# One task, its loop compiled once per worker, for both runs: they differ by the flag alone. Two
# cells of their own differ by a steady 1-2% either way, whichever is faster depending on the
# pool (measured on fresh pools: -1.1% to -2.5% one day, +2.2% another; our guess is where their
# frames lie, and so what the loop writes at each item), which is not what progress costs and
# hides a 1% one. With one task, four fresh pools gave -0.2% to +0.1%.
_LOOP = "_ipp_progress_loop"
_DEFINE = f"""from ipy_parallel import worker

def {_LOOP}(items, tracked):
    if tracked:
        items = worker.progress(items)
    for _ in items:
        pass
"""
_RUN = _LOOP + "({items}, {tracked})"


class ProgressOverhead(NamedTuple):
    """One loop's figures: the workers' seconds without and with progress (medians over the
    rounds) and each round's with/without."""

    plain: float
    tracked: float
    ratios: tuple[float, ...]

    @property
    def overhead(self) -> float:
        """The median of the rounds' with/without, minus 1 (0.01 is 1%)."""
        return statistics.median(self.ratios) - 1

    @property
    def interval(self) -> tuple[float, float]:
        """Where the overhead lies, 19 times in 20 (median_interval of the ratios, minus 1)."""
        low, high = median_interval(self.ratios)
        return low - 1, high - 1


def median_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """The interval between two of ``values`` that holds their true median with ``confidence``
    (from the binomial distribution, so assuming nothing of the values' own: one round slowed
    by the machine moves it by one place, not by its size). (-inf, inf) if there are too few."""
    ordered = sorted(values)
    n = len(ordered)
    # The interval runs from the below-th smallest value to the below-th largest. It misses the
    # median when `below` or more values lie above the median, or as many under it: each has the
    # chance P(Binomial(n, 1/2) < below); the largest `below` whose two together stay within
    # 1 - confidence.
    below = 0
    while below < n // 2 and 2 * sum(math.comb(n, i) for i in range(below + 1)) / 2**n <= 1 - confidence:
        below += 1
    if below == 0:
        return -math.inf, math.inf
    return ordered[below - 1], ordered[n - below]


def progress_overhead(pool, n: int, rounds: int | Mapping[str, int]) -> dict[str, ProgressOverhead]:
    """For each loop of PROGRESS_LOOPS: ``rounds`` rounds (or ``rounds[kind]``: a figure near zero
    needs more than one far from it) of the loop over n items in every worker of ``pool``,
    without and with progress around the items, back to back, the order alternating. Both run
    the same function, defined once per worker, from the same task but for a flag, so that what
    differs is progress alone. The time is the workers' own for their task (their mean), in
    wall seconds (a process's CPU time is read in 10 ms ticks, too coarse here); the run with
    progress is read 10 times a second (Run.progress(), what a %%parallel cell's display does)
    and must end with every item counted. Blocks for the whole measurement."""
    defined = pool.submit(_DEFINE).results()
    failed = [r.error for r in defined if r.error is not None]
    if failed:
        raise RuntimeError(f"the loop could not be defined: {failed[0]}")
    times: dict[str, tuple[list[float], list[float]]] = {kind: ([], []) for kind in PROGRESS_LOOPS}
    for kind, items in PROGRESS_LOOPS.items():
        for k in range(rounds if isinstance(rounds, int) else rounds[kind]):
            for tracked in (False, True) if k % 2 == 0 else (True, False):
                run = pool.submit(_RUN.format(items=items.format(n=n), tracked=tracked))
                results = run.results(on_tick=lambda r: r.progress())
                failed = [r.error for r in results if r.error is not None]
                if failed:
                    raise RuntimeError(f"the {kind} loop failed: {failed[0]}")
                if tracked and run.progress() != [(n, None if kind == "generator" else n)] * len(results):
                    raise RuntimeError(f"the {kind} loop's progress ended at {run.progress()}, not at {n}")
                times[kind][tracked].append(statistics.fmean(r.wall_time for r in results))
    return {
        kind: ProgressOverhead(
            statistics.median(plain), statistics.median(tracked), tuple(t / p for p, t in zip(plain, tracked))
        )
        for kind, (plain, tracked) in times.items()
    }
