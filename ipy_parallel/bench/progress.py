"""What worker.progress() costs: loops of trivial items with and without it, read as a cell's live display reads it."""

from __future__ import annotations

import statistics

__all__ = ["PROGRESS_LOOPS", "progress_overhead"]

# The items of each loop (n of them, in every worker) and the loop's body: nothing.
PROGRESS_LOOPS = {
    "range": "range({n})",  # knows its length: the loop runs the range's own iterator
    "generator": "(x for x in range({n}))",  # cannot say what is left: counted beside it
}
_PLAIN = "for _ in {items}:\n    pass"
_TRACKED = "from ipy_parallel import worker\nfor _ in worker.progress({items}):\n    pass"


def progress_overhead(pool, n: int, rounds: int) -> dict[str, tuple[float, float]]:
    """For each loop of PROGRESS_LOOPS: (seconds without progress, with it), each the best of
    ``rounds`` (as timeit reports: what the loop costs, without the machine's noise, which here
    is several percent from run to run) of the workers' own time for their task (their mean),
    the pair run back to back in alternating order, round by round. The run with progress is read 10 times a second (Run.progress(), what a %%parallel
    cell's display does) and must end with every item counted."""
    times: dict[str, tuple[list[float], list[float]]] = {kind: ([], []) for kind in PROGRESS_LOOPS}
    for k in range(rounds):
        for kind, items in PROGRESS_LOOPS.items():
            order = (False, True) if k % 2 == 0 else (True, False)
            for tracked in order:
                source = (_TRACKED if tracked else _PLAIN).format(items=items.format(n=n))
                run = pool.submit(source)
                results = run.results(on_tick=lambda r: r.progress())
                failed = [r.error for r in results if r.error is not None]
                if failed:
                    raise RuntimeError(f"the {kind} loop failed: {failed[0]}")
                if tracked and run.progress() != [(n, None if kind == "generator" else n)] * len(results):
                    raise RuntimeError(f"the {kind} loop's progress ended at {run.progress()}, not at {n}")
                times[kind][tracked].append(statistics.fmean(r.wall_time for r in results))
    return {kind: (min(plain), min(tracked)) for kind, (plain, tracked) in times.items()}
