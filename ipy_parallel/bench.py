"""Benchmark runners: the seed workload and the empty-task round trip on each way to run Python in parallel.

Each runner does the same work its way and returns what it computed, so a caller can time it
and check the answers agree. native_bench() runs them side by side for %native_bench and
returns a BenchReport; benchmarks/ uses the same runners. Nothing here asserts a time: callers
print measured ratios from one run.
"""

from __future__ import annotations

import html
import inspect
import multiprocessing
import os
import pickle
import platform
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable

from . import _engine
from .backends.subinterpreter import Pool
from .exceptions import ParallelInterrupted
from .procfs import cpu_seconds, stat_fields

__all__ = [
    "seed_task",
    "SEED_SOURCE",
    "Measurement",
    "measure",
    "interleave",
    "native_bench",
    "run_native_bench",
    "BenchReport",
    "MethodResult",
    "BenchmarkError",
    "ContestantProcess",
    "process_tree_cpu",
    "DEFAULT_SIZE",
    "SEED_WORKLOAD",
    "ROUNDS",
    "OURS",
]

SEED_KERNEL_MAX_N = _engine.SEED_KERNEL_MAX_N
DEFAULT_SIZE = 3_000_000  # per task: ~0.2 s of pure Python here, so the defaults take ~10 s on 2 cores
SEED_WORKLOAD = (10, 90_000_000)  # the original experiment: 10 tasks of n ~ 9e7


def seed_task(n: int) -> int:
    """The seed article's workload: n multiplications modulo a prime, pure Python, CPU-bound."""
    k = 1
    for i in range(n, 1, -1):
        k *= i
        k %= 1000000007
    return k


SEED_SOURCE = inspect.getsource(seed_task)


@dataclass
class Measurement:
    method: str
    times: list[float] = field(default_factory=list)
    values: list | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def measure(runners: dict[str, tuple[Callable[[], list | None], str]], repeat: int) -> list[Measurement]:
    """Time each runner `repeat` times, interleaved round by round so that drift on a shared
    machine falls on all of them alike; keep the values of each one's last call."""
    rows = [Measurement(name, note=note) for name, (_, note) in runners.items()]
    for _ in range(repeat):
        for row, (run, _) in zip(rows, runners.values()):
            start = time.perf_counter()
            row.values = run()
            row.times.append(time.perf_counter() - start)
    return rows


def interleave(contestants: dict[str, Callable[[int], list[float]]], iterations: int, chunk: int = 50):
    """Run latency contestants (each takes a count and returns that many timings) in alternating
    chunks until each has `iterations` timings; returns name -> timings."""
    times: dict[str, list[float]] = {name: [] for name in contestants}
    done = 0
    while done < iterations:
        k = min(chunk, iterations - done)
        for name, run in contestants.items():
            times[name].extend(run(k))
        done += k
    return times


# -- the seed workload, one task per n, every way ---------------------------------------------


def serial(ns: list[int]) -> list[int]:
    return [seed_task(n) for n in ns]


def threads(ns: list[int]) -> list[int]:
    with ThreadPoolExecutor(len(ns)) as ex:
        return list(ex.map(seed_task, ns))


def native(ns: list[int]) -> list[int]:
    """The C++ kernel: one std::thread per task, GIL released."""
    return _engine.seed_kernel(ns)


def free_threaded() -> bool:
    """True on a free-threaded CPython running with the GIL off, where plain threads run in parallel."""
    return getattr(sys, "_is_gil_enabled", lambda: True)() is False


def process_pool_executor(ns: list[int], start_method: str = "spawn") -> list[int]:
    """End to end: start a ProcessPoolExecutor, map, shut it down."""
    with ProcessPoolExecutor(len(ns), mp_context=multiprocessing.get_context(start_method)) as ex:
        return list(ex.map(seed_task, ns))


def multiprocessing_pool(ns: list[int], start_method: str) -> list[int]:
    """End to end, as a notebook cell would do it: start the processes, map, stop them (and wait
    for them, so that their CPU time is counted)."""
    procs = multiprocessing.get_context(start_method).Pool(len(ns))
    try:
        values = procs.map(seed_task, ns)
        procs.close()
    except BaseException:
        procs.terminate()
        raise
    finally:
        procs.join()
    return values


def public_interpreters():
    """CPython 3.14's concurrent.interpreters, or None before it (only the private module then);
    imported when a benchmark first asks."""
    try:
        from concurrent import interpreters
    except ImportError:
        return None
    return interpreters


def stdlib_label() -> str:
    """How the rows of CPython's own interpreters are named: which module they drive."""
    return "stdlib concurrent.interpreters" if public_interpreters() is not None else "stdlib _interpreters"


class StdlibInterpreters:
    """CPython's own interpreters, driven from one Python thread per interpreter (what a user can
    do without us). Warm: created and given seed_task beforehand. 3.14 has the public
    concurrent.interpreters, with its queues. Before it there is only the private module: 3.13
    calls it _interpreters and passes results through _interpqueues; 3.12 calls it
    _xxsubinterpreters, has no queues, and shares only bytes, so results travel marshalled through
    an _xxinterpchannels channel. `label` names what was used."""

    def __init__(self, n_interpreters: int):
        self.label = stdlib_label()
        self._queues = self._channels = None
        self._public = public_interpreters()
        if self._public is not None:
            self.queue = self._public.create_queue()
            self.ids = [self._public.create() for _ in range(n_interpreters)]
            for interp in self.ids:
                interp.prepare_main(queue=self.queue)
                interp.exec(SEED_SOURCE)
            return
        try:
            import _interpqueues
            import _interpreters
        except ImportError:  # 3.12
            import _xxinterpchannels
            import _xxsubinterpreters as _interpreters

            self._channels = _xxinterpchannels
            self._channel = _xxinterpchannels.create()  # the channel lives as long as this id object
            self.queue = int(self._channel)
            self.ids = [_interpreters.create(isolated=True) for _ in range(n_interpreters)]
            prelude = "import _xxinterpchannels, marshal\n"
        else:
            self._queues = _interpqueues
            self.queue = _interpqueues.create(0, 0, 1)  # unbounded, shareable data, unbound items removed
            self.ids = [_interpreters.create("isolated") for _ in range(n_interpreters)]
            prelude = "import _interpqueues\n"
        self._interpreters = _interpreters
        for iid in self.ids:
            self.exec(iid, SEED_SOURCE + prelude)

    def exec(self, iid, code: str) -> str | None:
        """Run code in one interpreter; None, or the formatted error."""
        if self._public is not None:
            try:
                iid.exec(code)
            except self._public.ExecutionFailed as exc:
                return str(exc)
            return None
        if self._queues is not None:
            err = self._interpreters.exec(iid, code)
            return None if err is None else err.formatted
        try:
            self._interpreters.run_string(iid, code)
        except Exception as exc:  # 3.12 raises RunFailedError
            return f"{type(exc).__name__}: {exc}"
        return None

    def seed(self, ns: list[int]) -> list[int]:
        errors = []

        def one(index: int, iid, n: int):
            if self._public is not None:
                code = f"queue.put(({index}, seed_task({n})))"
            elif self._queues is not None:
                # put(qid, obj, fmt, unboundop): 3.13.0's signature.
                code = f"_interpqueues.put({self.queue}, ({index}, seed_task({n})), 0, 1)"
            else:
                code = f"_xxinterpchannels.send({self.queue}, marshal.dumps(({index}, seed_task({n}))))"
            err = self.exec(iid, code)
            if err is not None:
                errors.append(err)

        workers = [threading.Thread(target=one, args=(i, iid, n)) for i, (iid, n) in enumerate(zip(self.ids, ns))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if errors:
            raise RuntimeError(f"the stdlib interpreters failed: {errors[0]}")
        if self._public is not None:
            pairs = sorted(self.queue.get() for _ in ns)
        elif self._queues is not None:
            pairs = sorted(self._queues.get(self.queue)[0] for _ in ns)
        else:
            import marshal

            pairs = sorted(marshal.loads(self._channels.recv(self._channel)) for _ in ns)
        return [value for _, value in pairs]

    def close(self) -> None:
        if self._public is not None:
            for interp in self.ids:
                interp.close()
            return
        if self._queues is not None:
            self._queues.destroy(self.queue)
        else:
            self._channels.destroy(self._channel)
        for iid in self.ids:
            self._interpreters.destroy(iid)


def pool_seed(pool: Pool, ns: list[int]) -> list[int]:
    """Our pool, warm: one task per worker (the pool has len(ns) workers, seed_task defined)."""
    results = pool.run("seed_task(n)", worker_inputs=[{"n": n} for n in ns])
    for r in results:
        if r.error:
            raise RuntimeError(f"worker {r.worker_id}: {r.error}")
    return [r.value for r in results]


def warm_pool(n_workers: int) -> Pool:
    """A pool with seed_task defined and its result path used once (as the stdlib's is)."""
    pool = Pool(n_workers)
    pool.run(SEED_SOURCE + "seed_task(10)")
    return pool


# -- round trips: an empty task to every worker of a warm pool, and back ------------------------


def round_trips(once: Callable[[], None], iterations: int) -> list[float]:
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return times


def _noop() -> None:
    return None


def executor_round_trip(executor, n: int) -> Callable[[int], list[float]]:
    """A contestant: n empty tasks submitted to a warm executor, then waited for."""

    def once():
        wait([executor.submit(_noop) for _ in range(n)])

    once()  # start the executor's workers outside the timing
    return lambda k: round_trips(once, k)


def executor_calls(executor) -> dict[str, Callable[[int], list[float]]]:
    """Contestants for fine-grained calls on a warm executor: seconds per call of map() over
    trivial calls (1,000 per timing), and of submit(...).result() one after another."""

    def per_map_call(k: int) -> list[float]:
        items = range(1000)
        return [t / len(items) for t in round_trips(lambda: list(executor.map(abs, items)), k)]

    def per_submit(k: int) -> list[float]:
        return round_trips(lambda: executor.submit(abs, -1).result(), k)

    list(executor.map(abs, range(10)))  # start its workers outside the timing
    return {"map": per_map_call, "submit().result()": per_submit}


def length_plus(data, i: int) -> int:
    """A call of a function that needs a big object (by closure, or as a partial's argument)."""
    return len(data) + i


def big_function_calls(executor, fn, calls: int, workers: int) -> float:
    """Seconds for ``calls`` submit(fn, i).result() one after another, once each of the
    executor's ``workers`` has had a call of ``fn``."""
    for future in [executor.submit(fn, 0) for _ in range(4 * workers)]:
        future.result()
    begin = time.perf_counter()
    for i in range(calls):
        executor.submit(fn, i).result()
    return time.perf_counter() - begin


def process_pool_round_trips(n: int, iterations: int, start_method: str = "fork") -> list[float]:
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context(start_method)) as ex:
        return executor_round_trip(ex, n)(iterations)


def stdlib_round_trip(stdlib: StdlibInterpreters, executor: ThreadPoolExecutor) -> Callable[[int], list[float]]:
    """A contestant: exec("pass") in each stdlib interpreter, each from a pooled Python thread."""

    def once():
        wait([executor.submit(stdlib.exec, iid, "pass") for iid in stdlib.ids])

    once()
    return lambda k: round_trips(once, k)


def pool_round_trip(pool: Pool) -> Callable[[int], list[float]]:
    """A contestant: Pool.run("") on a warm pool, through the whole public API."""
    pool.run("")
    return lambda k: round_trips(lambda: pool.run(""), k)


def floor_round_trip(floor: _engine.CondvarFloor) -> Callable[[int], list[float]]:
    """A contestant: a bare C++ condition-variable round trip to sleeping threads, the floor."""
    return floor.round_trips


# -- CPU of this process and its children, read while they run ---------------------------------


def process_tree_cpu() -> float:
    """CPU seconds used by this process (all its threads) and its children, reaped or still
    running (read from /proc on Linux; elsewhere only reaped children count)."""
    t = os.times()  # children's times: only clock-tick resolution, but only whole processes
    total = time.process_time() + t.children_user + t.children_system
    return total + sum(_proc_cpu(pid) for pid in _live_descendants(os.getpid()))


def _proc_cpu(pid: int) -> float:
    # Its own children that it has reaped count too (the benchmark's helper's pools); gone since
    # it was listed: its time is in children_* once reaped.
    return cpu_seconds(pid, reaped_children=True) or 0.0


def _live_descendants(root: int) -> list[int]:
    if not os.path.isdir("/proc"):
        return []
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields and fields[0] != "Z":  # a zombie's time is in children_* once reaped
                parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


# -- %native_bench: every way, side by side, in one run ----------------------------------------

ROUNDS = 5  # %native_bench's default: a median and a spread need several rounds
NOISY = 0.25  # a method whose rounds differ by more than this fraction of their median is flagged
SLACK = 1.05  # a speedup above the core ceiling by more than this factor cannot be real
BUSY = 0.85  # serial below this fraction of one core: something else had the CPU
NOISE_FLOOR = 0.005  # seconds: rounds closer than this are not called noisy, whatever their ratio
OURS = "sub-interpreters (ipy_parallel)"  # the method this project is: its row is highlighted

# The report's look. The colours read on light and dark themes alike (mid tones; the tint is
# translucent); the ceiling tick takes the text's own colour.
BAR_WIDTH = 20  # characters of a text bar from 0x to the ceiling
HTML_BAR_EM = 10  # the same in an HTML bar, in em
HTML_BEYOND = 0.2  # an HTML bar shows up to this fraction past the ceiling, then » (cut)
BAR_COLOUR, OURS_COLOUR = "#4c72b0", "#dd8452"
OURS_TINT = "rgba(221,132,82,0.18)"
FLAG_COLOUR, NOISE_COLOUR = "#d62728", "#e08a00"


class BenchmarkError(RuntimeError):
    """The methods of a benchmark did not compute the same values."""


@dataclass
class MethodResult:
    method: str
    note: str
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # process-tree CPU seconds, per round
    values: list | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """(slowest - fastest) / median over the rounds."""
        return (max(self.times) - min(self.times)) / self.median if self.median > 0 else 0.0

    @property
    def cpu_percent(self) -> float:
        """CPU used while it ran, in percent of one core (200 = two cores busy)."""
        return 100 * statistics.median(c / t for c, t in zip(self.cpu, self.times) if t > 0)


@dataclass
class BenchReport:
    """The results of one %native_bench run; its repr is the text table, _repr_html_ the same as
    a notebook's HTML table, plot() and save_plot() the chart."""

    tasks: int
    size: int
    repeat: int  # rounds, every method once per round
    cores: int
    rows: list[MethodResult]
    skipped: dict[str, str] = field(default_factory=dict)  # method -> why it did not run
    python: str = field(default_factory=lambda: f"CPython {platform.python_version()}")
    load: float | None = None  # the 1-minute load average as the run began

    def row(self, method: str) -> MethodResult:
        return next(r for r in self.rows if r.method == method)

    def speedup(self, method: str) -> float:
        return self.row("serial").median / self.row(method).median

    @property
    def ceiling(self) -> int:
        """The most speedup this machine allows for these tasks: min(tasks, cores)."""
        return min(self.tasks, self.cores)

    def efficiency(self, method: str) -> float:
        """Speedup over the ceiling, min(tasks, cores)."""
        return self.speedup(method) / self.ceiling

    @property
    def agree(self) -> bool:
        return all(r.values == self.rows[0].values for r in self.rows)

    def above_ceiling(self, method: str) -> bool:
        return method not in COMPILED and self.speedup(method) > self.ceiling * SLACK

    def noisy(self, method: str) -> bool:
        times = self.row(method).times
        return len(times) > 1 and self.row(method).spread > NOISY and max(times) - min(times) > NOISE_FLOOR

    @property
    def busy(self) -> bool:
        """Serial did not get a whole core: the other figures are not what this machine can do."""
        return self.row("serial").cpu_percent < 100 * BUSY

    @property
    def warnings(self) -> list[str]:
        """Why some figures must not be taken as fact; [] for a clean run."""
        said = []
        above = [r.method for r in self.rows if self.above_ceiling(r.method)]
        if above:
            said.append(
                f"! above the ceiling of {self.ceiling}x (min(tasks, cores)): {', '.join(above)}. No method "
                "can be that much faster than serial; serial's rounds were slowed by other load. Rerun."
            )
        noisy = [r.method for r in self.rows if self.noisy(r.method)]
        if noisy:
            said.append(
                f"~ noisy: the rounds of {', '.join(noisy)} differ by more than {NOISY:.0%} of their "
                "median; the machine was shared meanwhile."
            )
        if self.busy:
            said.append(
                f"the machine was busy: serial got only {self.row('serial').cpu_percent:.0f}% of one core, "
                "so every figure is low. Rerun when it is quieter."
            )
        return said

    def table(self) -> str:
        """The report as text (the terminal's, and text/plain): a row per method, our row marked
        ▶, a speedup bar per row with a | at the ceiling, flags on the figures, then the warnings."""
        scale = f"{'0':<{BAR_WIDTH - len(str(self.ceiling)) - 1}}{self.ceiling}x|"  # its | over the bars' |
        columns = (
            f"  {'method':<31}{'time':>9}{'spread':>7}{'speedup':>9}  {scale:<{BAR_WIDTH + 2}}{'CPU':>5}"
            f"{'eff.':>6}  note"
        )
        lines = [self.headline + ",", f"  {self.machine}", columns]
        for r in self.rows:
            mark = "▶ " if r.method == OURS else "  "
            flag = "!" if self.above_ceiling(r.method) else " "
            noise = "~" if self.noisy(r.method) else " "
            efficiency = "-" if r.method in COMPILED else f"{self.efficiency(r.method):.0%}"
            lines.append(
                f"{mark}{r.method:<31}{r.median:>8.3f}s{r.spread:>6.0%}{noise}{self.speedup(r.method):>8.2f}x"
                f"{flag} {_text_bar(self.speedup(r.method) / self.ceiling)}{r.cpu_percent:>4.0f}%"
                f"{efficiency:>5}{flag} {r.note}"
            )
        lines.append("every method computed the same values" if self.agree else "VALUES DIFFER between methods")
        said = [f"{method}: not run ({why})" for method, why in self.skipped.items()]
        said.append(
            f"▶ marks ipy_parallel's row. spread: (slowest - fastest round) / median. Bars: speedup, longer is "
            f"better, | at the ceiling min(tasks, cores) = {self.ceiling}x. eff.: speedup / ceiling."
        )
        return "\n".join(lines + [line for text in said + self.warnings for line in _wrap(text)])

    @property
    def headline(self) -> str:
        """What ran: the report's first line."""
        return (
            f"native_bench: {self.tasks} tasks of n={self.size:,} (k = k*i % 1000000007), median of "
            f"{self.repeat} rounds, methods interleaved"
        )

    @property
    def machine(self) -> str:
        """Where it ran."""
        load = "" if self.load is None else f", load {self.load:.1f}"
        return f"{self.python}, {self.cores} cores{load}"

    def __repr__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        """The report as HTML for a notebook (inline CSS only, so that it survives saving and
        nbconvert, in colours readable on light and dark themes): the table of table(), our row
        tinted and bold, a bar per method up to a tick at the ceiling, each flag on its figure
        with a tooltip saying why, then the warnings."""
        esc = html.escape
        cell = "padding:1px 8px;text-align:right;white-space:nowrap"
        # The bars' heading is a scale: "ceiling 2x" ends at the tick.
        scale = (
            f'<span style="display:inline-block;width:{HTML_BAR_EM}em;text-align:right">ceiling '
            f'{self.ceiling}x</span><span style="display:inline-block;width:{HTML_BEYOND * HTML_BAR_EM + 1}em">'
            "</span>"
        )
        heads = [
            ("method", "left"),
            ("time", "right"),
            ("spread", "right"),
            ("speedup", "right"),
            (scale, "left"),
            ("CPU", "right"),
            ("efficiency", "right"),
            ("note", "left"),
        ]
        out = [
            '<div class="ipy-parallel-bench" style="line-height:1.4">',
            f'<div style="font-weight:bold;margin-bottom:4px">{esc(self.headline)}, {esc(self.machine)}</div>',
            '<table style="border-collapse:collapse;line-height:1.4;color:inherit">',
            "<thead><tr>"
            + "".join(
                f'<th style="{cell};text-align:{align};border-bottom:1px solid '
                f'rgba(128,128,128,0.5)">{h if h is scale else esc(h)}</th>'
                for h, align in heads
            )
            + "</tr></thead><tbody>",
        ]
        for r in self.rows:
            speedup, ours = self.speedup(r.method), r.method == OURS
            above = _html_flag("!", FLAG_COLOUR, self._above_why()) if self.above_ceiling(r.method) else ""
            noise = _html_flag("~", NOISE_COLOUR, self._noisy_why(r)) if self.noisy(r.method) else ""
            efficiency = "-" if r.method in COMPILED else f"{self.efficiency(r.method):.0%}"
            style = f' style="background-color:{OURS_TINT};font-weight:bold"' if ours else ""
            marker = f' <span style="color:{OURS_COLOUR}">◀ ipy_parallel</span>' if ours else ""
            figures = [
                f"{r.median:.3f} s",
                f"{r.spread:.0%}{noise}",
                f"{speedup:.2f}x{above}",
                self._html_bar(r),
                f"{r.cpu_percent:.0f}%",
                f"{efficiency}{above}",
            ]
            out.append(
                f"<tr{style}>"
                + f'<td style="{cell};text-align:left">{esc(r.method)}</td>'
                + "".join(f'<td style="{cell}">{f}</td>' for f in figures)
                + f'<td style="{cell};text-align:left">{esc(r.note)}{marker}</td></tr>'
            )
        out.append("</tbody></table>")
        if self.agree:
            out.append("<div>✓ every method computed the same values</div>")
        else:
            out.append(f'<div style="color:{FLAG_COLOUR};font-weight:bold">✗ VALUES DIFFER between methods</div>')
        out += [f"<div>{esc(method)}: not run ({esc(why)})</div>" for method, why in self.skipped.items()]
        if self.warnings:
            out.append(
                f'<ul style="margin:4px 0;padding-left:1.5em;border-left:3px solid {NOISE_COLOUR}">'
                + "".join(f"<li>{esc(w)}</li>" for w in self.warnings)
                + "</ul>"
            )
        out.append(
            f'<div style="opacity:0.75">bars: speedup over serial, longer is better, the tick at the ceiling '
            f"min(tasks, cores) = {self.ceiling}x; spread: (slowest - fastest round) / median; efficiency: "
            "speedup / ceiling; hover a ~ or ! for why it is flagged</div></div>"
        )
        return "".join(out)

    def _html_bar(self, r: MethodResult) -> str:
        """A speedup bar: a track from 0x to a tick at the ceiling, then room for 20% more (a red
        fill there when the figure cannot be real), and » where the bar is cut."""
        speedup, compiled = self.speedup(r.method), r.method in COMPILED
        fraction = speedup / self.ceiling
        colour = OURS_COLOUR if r.method == OURS else BAR_COLOUR
        fade = ";opacity:0.55" if self.noisy(r.method) else ""  # a noisy figure is a paler bar
        why = (
            f"{speedup:.2f}x serial; compiled code, so no ceiling applies"
            if compiled
            else f"{speedup:.2f}x serial, {fraction:.0%} of the ceiling ({self.ceiling}x)"
        )
        inside = min(fraction, 1.0) * HTML_BAR_EM
        beyond = min(max(fraction - 1.0, 0.0), HTML_BEYOND) * HTML_BAR_EM
        beyond_colour = FLAG_COLOUR if self.above_ceiling(r.method) else colour
        return (
            f'<span title="{html.escape(why)}" style="display:inline-block;white-space:nowrap;text-align:left">'
            f'<span style="display:inline-block;vertical-align:middle;width:{HTML_BAR_EM}em;height:0.9em;'
            f'background-color:rgba(128,128,128,0.15);border-right:2px solid currentColor">'
            f'<span style="display:block;width:{inside:.2f}em;height:100%;background-color:{colour}{fade}"></span>'
            f'</span><span style="display:inline-block;vertical-align:middle;width:{HTML_BEYOND * HTML_BAR_EM}em;'
            f'height:0.9em"><span style="display:block;width:{beyond:.2f}em;height:100%;'
            f'background-color:{beyond_colour}{fade}"></span></span>'
            f'<span style="display:inline-block;width:1em">{"»" if fraction > 1 + HTML_BEYOND else ""}</span>'
            "</span>"
        )

    def _above_why(self) -> str:
        return (
            f"above the ceiling of {self.ceiling}x (min(tasks, cores)): no method can be that much faster "
            "than serial; serial's rounds were slowed by other load. Rerun."
        )

    def _noisy_why(self, r: MethodResult) -> str:
        return (
            f"noisy: its rounds differ by {r.spread:.0%} of their median (more than {NOISY:.0%}); "
            "the machine was shared meanwhile."
        )

    def _figsize(self) -> tuple[float, float]:
        return 8, 0.45 * len(self.rows) + 1.4

    def plot(self, ax=None):
        """A bar chart of the speedup over serial per method (matplotlib; longer is better): our
        row in its own colour, the ceiling min(tasks, cores) as a vertical line, the range of the
        rounds as error bars; noisy bars hatched //, bars above the ceiling hatched xx and marked
        !, and compiled code (no ceiling) cut at the right edge with its figure written on it."""
        from matplotlib.patches import Patch

        if ax is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=self._figsize())
        rows = self.rows[::-1]  # barh draws bottom up: the table's first row on top
        names = [r.method for r in rows]
        speedups = [self.speedup(n) for n in names]
        # Compiled code's 40x would squash every other bar: the axis ends past the rest.
        right = 1.3 * max([self.ceiling, *(s for n, s in zip(names, speedups) if n not in COMPILED)])
        serial = self.row("serial").median
        colours = [OURS_COLOUR if n == OURS else BAR_COLOUR for n in names]
        bars = ax.barh(names, [min(s, right) for s in speedups], color=colours)
        for bar, r, speedup in zip(bars, rows, speedups):
            above, noisy = self.above_ceiling(r.method), self.noisy(r.method)
            if above or noisy:
                bar.set_hatch("xx" if above else "//")
                bar.set_edgecolor(FLAG_COLOUR if above else "0.2")
            label = f"{speedup:.2f}x" + (" !" if above else "") + (" ~" if noisy else "")
            y = bar.get_y() + bar.get_height() / 2
            if speedup > right:  # cut: no range to draw, its figure on the bar
                ax.text(right, y, f"{label} » ", va="center", ha="right", color="white", fontweight="bold")
                continue
            fastest = serial / min(r.times) if min(r.times) > 0 else speedup
            ax.errorbar(
                speedup,
                y,
                xerr=[[speedup - serial / max(r.times)], [fastest - speedup]],
                color="black",
                capsize=3,
                linewidth=1,
            )
            ax.text(max(speedup, fastest), y, f" {label}", va="center")
        ax.axvline(self.ceiling, color="0.35", linestyle="--", linewidth=1)
        ax.text(
            self.ceiling,
            1.0,
            f"ceiling {self.ceiling}x",
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize="small",
            color="0.35",
        )
        ax.set_xlim(0, right)
        for label in ax.get_yticklabels():
            if label.get_text() == OURS:
                label.set_fontweight("bold")
                label.set_color(OURS_COLOUR)
        flags = (
            [Patch(facecolor="none", edgecolor="0.2", hatch="//", label="~ noisy rounds")]
            if any(self.noisy(n) and not self.above_ceiling(n) for n in names)
            else []
        )
        if any(self.above_ceiling(n) for n in names):
            flags.append(Patch(facecolor="none", edgecolor=FLAG_COLOUR, hatch="xx", label="! above the ceiling"))
        if flags:
            ax.legend(
                handles=flags, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False, fontsize="small"
            )  # below the axes: inside, it would hide a bar
        ax.set_xlabel("speedup over serial (longer is better): median of the rounds, their range as error bars")
        ax.set_title(f"{self.tasks} tasks of n={self.size:,} on {self.cores} cores ({self.python})", pad=16)
        return ax

    def save_plot(self, path: str | os.PathLike | None = None, dpi: int = 120) -> Path:
        """Draw plot() into an image file (PNG unless the name says otherwise) and return its
        absolute path; by default native_bench-YYYYmmdd-HHMMSS.png in the current directory.
        Needs matplotlib but not pyplot: no window opens and no figure is left open."""
        from matplotlib.figure import Figure

        target = Path(path if path is not None else time.strftime("native_bench-%Y%m%d-%H%M%S.png"))
        target = target.expanduser().resolve()
        if not target.suffix:
            target = target.with_suffix(".png")
        figure = Figure(figsize=self._figsize())
        self.plot(figure.subplots())
        figure.savefig(target, dpi=dpi, bbox_inches="tight")
        return target

    def show(self, notebook: bool, plot: bool = False, plot_file: str | os.PathLike | None = None) -> None:
        """Present the report where it ran: a notebook gets a display (its text and HTML both, so
        a saved notebook and nbconvert keep the table), anything else the printed table. The chart
        (``plot``, or a ``plot_file`` to save it in) goes inline in a notebook or to a window after
        %matplotlib, and to a file, whose path is printed, from a terminal or when named."""
        if notebook:
            from IPython.display import display

            display(self)
        else:
            print(self.table())
        if not (plot or plot_file is not None):
            return
        import matplotlib

        # A terminal has no inline images, and pyplot there (Agg, or a GUI backend with no event
        # loop) would draw a figure nobody sees: the chart goes to a file.
        if plot_file is not None or not notebook:
            print(f"native_bench: chart saved to {self.save_plot(plot_file)}")
        if notebook or matplotlib.is_interactive():
            self.plot()


_EIGHTHS = "▏▎▍▌▋▊▉"  # a bar's last, partial character


def _text_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A fraction of the ceiling as block characters, dotted up to a | at the ceiling; » after
    it for a bar that goes past."""
    eighths = round(max(fraction, 0.0) * width * 8)
    full, part = divmod(min(eighths, width * 8), 8)
    bar = "█" * full + (_EIGHTHS[part - 1] if part else "")
    return bar.ljust(width, "·") + "|" + ("»" if eighths > width * 8 else " ")


def _wrap(text: str) -> list[str]:
    """A line of the text report kept near 110 characters, what follows indented."""
    return textwrap.wrap(text, 110, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)


def _html_flag(mark: str, colour: str, why: str) -> str:
    return f'<span style="color:{colour};font-weight:bold;cursor:help" title="{html.escape(why)}">{mark}</span>'


IN_HELPER = "in a helper process"  # a runner that ContestantProcess runs
COMPILED = frozenset({"C++ kernel, GIL released"})  # not the same code as serial: no ceiling applies


def bench_methods(tasks: int) -> tuple[dict[str, tuple[Callable[[list[int]], list] | str | None, str]], dict[str, str]]:
    """name -> (runner, note), in the order of each round, and name -> why not, for methods this
    interpreter cannot run. A runner None is our pool (warm when timed); IN_HELPER, a method
    that runs in a helper process (see ContestantProcess)."""
    methods: dict[str, tuple[Callable[[list[int]], list] | str | None, str]] = {
        # Notes short enough for the text table's lines to stay near 110 characters.
        "serial": (serial, "one after another"),
        "threads": (threads, "free-threaded: no GIL" if free_threaded() else "one GIL"),
        "multiprocessing fork": (IN_HELPER, "starts its processes"),  # from the helper, see ContestantProcess
        "multiprocessing spawn": (IN_HELPER, "starts its processes"),
        OURS: (None, "warm pool, a GIL each"),
        "C++ kernel, GIL released": (native, "compiled: no ceiling"),
    }
    skipped = {}
    if not free_threaded():
        skipped["free threads"] = "this CPython has a GIL; on a free-threaded build the threads row is it"
    return methods, skipped


class ContestantProcess:
    """A small helper process that runs the multiprocessing contestants, their pools started
    from it: os.fork() in this process would end every sub-interpreter here (a child forked
    beside them crashes), the user's %%parallel workers included, and spawned children would
    re-run this process's __main__ (a script, an .ipy file). It is a process group of its own
    that ignores SIGINT: a Ctrl-C stops the benchmark here, and close() kills the helper and
    every process it started. Blocking; the GIL is released while it waits for an answer."""

    def __init__(self):
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ipy_parallel.bench", "--contestants"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            self._answer()  # ready
        except BaseException:
            self.close()
            raise

    def run(self, method: str, ns: list[int]) -> list[int]:
        pickle.dump((method, ns), self._proc.stdin)
        self._proc.stdin.flush()
        return self._answer()

    def _answer(self):
        try:
            ok, value = pickle.load(self._proc.stdout)
        except EOFError:
            raise RuntimeError(f"the benchmark's helper process ended (status {self._proc.wait()})") from None
        if not ok:
            raise RuntimeError(f"in the benchmark's helper process: {value}")
        return value

    def close(self) -> None:
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)  # it and the pools it started
        except ProcessLookupError:
            pass
        self._proc.wait()
        for pipe in (self._proc.stdin, self._proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def _serve_contestants() -> None:
    """The helper process's loop (python -m ipy_parallel.bench --contestants): (method, ns) in,
    (ok, values or why) out, pickled on stdin and stdout, until end of file. "first result fork"
    takes a pool size and answers first_result_processes(n, "fork") from this small process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the pools' processes too
    requests, answers = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # what the contestants print must not mix with the answers
    from ipy_parallel import bench  # by its own name, not __main__: what the spawned children import

    runners = {
        "multiprocessing fork": lambda ns: bench.multiprocessing_pool(ns, "fork"),
        "multiprocessing spawn": lambda ns: bench.multiprocessing_pool(ns, "spawn"),
        "first result fork": lambda n: bench.first_result_processes(n, "fork"),
    }
    pickle.dump((True, os.getpid()), answers)
    answers.flush()
    while True:
        try:
            method, ns = pickle.load(requests)
        except EOFError:
            return
        try:
            answer = (True, runners[method](ns))
        except Exception as exc:
            answer = (False, f"{method}: {type(exc).__name__}: {exc}")
        pickle.dump(answer, answers)
        answers.flush()


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
    pool = helper = None
    try:
        runners = []
        for name, (runner, _) in methods.items():
            if runner is None:
                pool = warm_pool(tasks)
                runner = lambda ns, pool=pool: pool_seed(pool, ns)  # noqa: E731
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
        if pool is not None:
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
    text, outcome = None, "ok"
    try:
        with monitor.live(lambda: [process_tree_cpu() - base]):
            return native_bench(tasks, size, repeat, monitor)
    except KeyboardInterrupt:
        text, outcome = f"native_bench: interrupted after {time.perf_counter() - start:.1f} s", "stopped"
        raise ParallelInterrupted("%native_bench was interrupted: nothing measured is shown") from None
    except BaseException:
        outcome = "failed"
        raise
    finally:
        if text is None:
            text = f"native_bench: {time.perf_counter() - start:.1f} s in all"
        monitor.close([process_tree_cpu() - base], text=text, outcome=outcome)


# -- for benchmarks/suite.py: ipyparallel, cold starts, transfers, memory ----------------------


class IPyParallelCluster:
    """A local ipyparallel cluster (a controller and `engines` engine processes, on loopback):
    the established way to run notebook code in parallel, for comparison."""

    def __init__(self, engines: int = 2):
        import ipyparallel

        self.cluster = ipyparallel.Cluster(n=engines, log_level=40)
        self.client = self.cluster.start_and_connect_sync()
        self.all = self.client[:]
        self.balanced = self.client.load_balanced_view()

    def seed(self, ns: list[int]) -> list[int]:
        return self.balanced.map_sync(seed_task, ns)

    def round_trip(self) -> Callable[[int], list[float]]:
        """A contestant: an empty task on every engine and back."""
        once = lambda: self.all.apply_sync(_noop)  # noqa: E731
        once()
        return lambda k: round_trips(once, k)

    def close(self) -> None:
        self.client.close()
        self.cluster.stop_cluster_sync()


def first_result_pool(n: int, fresh: bool = True) -> float:
    """Seconds from nothing to the first result of every worker of a Pool(n): of new
    interpreters (fresh), or of those a closed pool of n left in the reserve."""
    if not fresh:
        with Pool(n, fresh=True) as closed:  # n workers that ran a cell, parked in the reserve as it closes
            closed.run("worker_id")
    start = time.perf_counter()
    pool = Pool(n, fresh=fresh)
    pool.run("worker_id")
    elapsed = time.perf_counter() - start
    pool.close()
    return elapsed


def first_result_resized(n: int) -> float:
    """Seconds from resize(n) of a warm Pool(n // 2) to the first result of every worker: only
    the new half starts, as new interpreters."""
    pool = Pool(max(1, n // 2), fresh=True)
    pool.run("worker_id")
    try:
        start = time.perf_counter()
        pool.resize(n)
        pool.run("worker_id")
        return time.perf_counter() - start
    finally:
        pool.close()


def first_result_warmed(n: int, typing: float = 0.3) -> float:
    """Seconds a first %%parallel cell takes, `typing` seconds after %load_ext started its pool
    in the background (the session's warm start), to the first result of every worker."""
    from .ipython.session import Pools

    Pool.reserve(clear=True)  # as in a new kernel: its pool's interpreters are created
    pools = Pools()
    pools.warm("subinterpreter", n)
    time.sleep(typing)
    try:
        start = time.perf_counter()
        pools.get("subinterpreter", n).run("worker_id")
        return time.perf_counter() - start
    finally:
        pools.close()


def first_result_processes(n: int, start_method: str) -> float:
    """The same for a fresh multiprocessing.Pool(n), which starts all n processes at once."""
    start = time.perf_counter()
    procs = multiprocessing.get_context(start_method).Pool(n)
    procs.map(abs, range(n), chunksize=1)
    elapsed = time.perf_counter() - start
    procs.terminate()
    procs.join()
    return elapsed


def first_result_stdlib(n: int) -> float:
    """The same for n fresh stdlib interpreters, each running an empty script (3.14:
    concurrent.interpreters, before it the private module)."""
    interpreters = public_interpreters()
    if interpreters is not None:
        create, run, destroy = interpreters.create, (lambda interp, code: interp.exec(code)), (lambda i: i.close())
    else:
        try:
            import _interpreters

            create, run = (lambda: _interpreters.create("isolated")), _interpreters.exec
        except ImportError:  # 3.12
            import _xxsubinterpreters as _interpreters

            create, run = (lambda: _interpreters.create(isolated=True)), _interpreters.run_string
        destroy = _interpreters.destroy
    start = time.perf_counter()
    ids = [create() for _ in range(n)]
    for iid in ids:
        run(iid, "pass")
    elapsed = time.perf_counter() - start
    for iid in ids:
        destroy(iid)
    return elapsed


def _blob_of(size: int) -> bytes:
    return bytes(size)


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def pss_bytes(pid: int | str = "self") -> int:
    """Proportional set size: a process's own pages plus its share of pages shared with others
    (what a forked worker really adds; its RSS counts the parent's shared pages in full)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss_bytes(pid)


if __name__ == "__main__":
    if sys.argv[1:] != ["--contestants"]:
        sys.exit("usage: python -m ipy_parallel.bench --contestants (the helper process of %native_bench)")
    _serve_contestants()
