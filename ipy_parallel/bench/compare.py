"""%native_bench: the seed workload run every way, rounds interleaved, checked to agree, into a BenchReport."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from ..backends.signals import interrupts_as_raised
from ..exceptions import ParallelInterrupted
from ..results import Outcome
from ..procfs import process_tree_cpu
from .helper import ContestantProcess
from .report import OURS, OURS_THREADS, BenchmarkError, BenchReport, MethodResult
from .runners import free_threaded, native, pool_seed, serial, threads, warm_pool

ROUNDS = 5  # %native_bench's default: a median and a spread need several rounds
OUR_POOLS = {OURS: "subinterpreter", OURS_THREADS: "threads"}  # the backend of each row of ours
IN_HELPER = "in a helper process"  # a runner that ContestantProcess runs


def bench_methods(tasks: int) -> tuple[dict[str, tuple[Callable[[list[int]], list] | str | None, str]], dict[str, str]]:
    """name -> (runner, note), in the order of each round, and name -> why not, for methods this
    interpreter cannot run. A runner None is a pool of ours (warm when timed), of the backend
    OUR_POOLS names; IN_HELPER, a method that runs in a helper process (see ContestantProcess)."""
    methods: dict[str, tuple[Callable[[list[int]], list] | str | None, str]] = {
        # Notes short enough for the text table's lines to stay near 110 characters.
        "serial": (serial, "one after another"),
        "threads": (threads, "free-threaded: no GIL" if free_threaded() else "one GIL"),
        "multiprocessing fork": (IN_HELPER, "starts its processes"),  # from the helper, see ContestantProcess
        "multiprocessing spawn": (IN_HELPER, "starts its processes"),
        OURS: (None, "warm pool, a GIL each"),
        OURS_THREADS: (None, "warm pool, no GIL" if free_threaded() else "warm pool, one GIL: turns"),
        "C++ kernel, GIL released": (native, "compiled: no ceiling"),
    }
    skipped = {}
    if not free_threaded():
        skipped["free threads"] = "this CPython has a GIL; on a free-threaded build the threads row is it"
    return methods, skipped


def native_bench(tasks: int, size: int, repeat: int = ROUNDS, monitor=None) -> BenchReport:
    """Run the seed workload as ``tasks`` tasks of ``size`` in every way, ``repeat`` rounds, each
    round every method once (so that a noisy moment falls on all of them); raise BenchmarkError
    if the methods disagree. The report flags figures that cannot be taken as fact. No pool of
    this process is touched: what forks runs in a helper process. ``monitor`` (a
    display.Monitor for a process tree) is kept live meanwhile. Blocks for the whole benchmark."""
    ns = [size] * tasks
    methods, skipped = bench_methods(tasks)
    rows = [MethodResult(name, note) for name, (_, note) in methods.items()]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    pools, helper = [], None
    try:
        runners = []
        for name, (runner, _) in methods.items():
            if runner is None:
                pools.append(warm_pool(tasks, OUR_POOLS[name]))
                runner = lambda ns, pool=pools[-1]: pool_seed(pool, ns)  # noqa: E731
            elif runner == IN_HELPER:
                helper = helper or ContestantProcess()
                runner = lambda ns, name=name, helper=helper: helper.run(name, ns)  # noqa: E731
            runners.append(runner)
        for i in range(repeat):
            for row, runner in zip(rows, runners):
                if monitor is not None:
                    monitor.tracker.label = f"native_bench · round {i + 1}/{repeat} · {row.method}"
                cpu0, t0 = process_tree_cpu(), time.perf_counter()
                row.values = runner(ns)
                row.times.append(time.perf_counter() - t0)
                row.cpu.append(process_tree_cpu() - cpu0)
    finally:
        for pool in pools:
            pool.close()
        if helper is not None:
            helper.close()
    report = BenchReport(tasks, size, repeat, os.cpu_count() or 1, rows, skipped, load=load)
    if not report.agree:
        differ = [r.method for r in rows if r.values != rows[0].values]
        raise BenchmarkError(f"these methods computed other values than serial: {', '.join(differ)}\n" + report.table())
    return report


def run_native_bench(tasks: int, size: int, repeat: int, monitor) -> BenchReport:
    """native_bench() with ``monitor`` showing the CPU of this process tree live, ending as one
    line; what %native_bench runs. Blocks; the caller prints the report. A Ctrl-C stops it, cleans
    up (pools closed, the helper process killed) and raises ParallelInterrupted, whose message is
    all IPython shows."""
    base = process_tree_cpu()
    start = time.perf_counter()
    text, outcome = None, Outcome.OK
    try:
        # interrupts_as_raised: a Ctrl-C inside a Condition.wait of the pools' start can surface as
        # RuntimeError ("release unlocked lock"); it is the interrupt (CI run 11, sanitizer build).
        with monitor.live(lambda: [process_tree_cpu() - base]), interrupts_as_raised():
            return native_bench(tasks, size, repeat, monitor)
    except KeyboardInterrupt:
        text, outcome = f"native_bench: interrupted after {time.perf_counter() - start:.1f} s", Outcome.STOPPED
        raise ParallelInterrupted("%native_bench was interrupted: nothing measured is shown") from None
    except BaseException:
        outcome = Outcome.FAILED
        raise
    finally:
        if text is None:
            text = f"native_bench: {time.perf_counter() - start:.1f} s in all"
        monitor.close([process_tree_cpu() - base], text=text, outcome=outcome)
