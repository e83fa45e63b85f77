"""Benchmark runners: the seed workload and the empty-task round trip on each way to run Python in parallel.

Each runner does the same work its way and returns what it computed, so a caller can time it
and check the answers agree. Used by benchmarks/ (and, later, %native_bench). Nothing here
asserts a time: the callers print measured ratios from one run.
"""

from __future__ import annotations

import inspect
import multiprocessing
import statistics
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable

from . import _engine
from .pool import Pool

__all__ = ["seed_task", "SEED_SOURCE", "Measurement", "measure", "interleave"]

MODULUS = 1000000007


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


def multiprocessing_pool(ns: list[int], start_method: str) -> list[int]:
    """End to end, as a notebook cell would do it: start the processes, map, stop them."""
    with multiprocessing.get_context(start_method).Pool(len(ns)) as procs:
        return procs.map(seed_task, ns)


class StdlibInterpreters:
    """CPython's private _interpreters module, driven from one Python thread per interpreter
    (what a user of 3.13 can do without us). Warm: created and given seed_task beforehand."""

    def __init__(self, n_interpreters: int):
        import _interpqueues
        import _interpreters

        self._interpreters = _interpreters
        self._queues = _interpqueues
        self.ids = [_interpreters.create("isolated") for _ in range(n_interpreters)]
        self.queue = _interpqueues.create(0, 0, 1)  # unbounded, shareable data, unbound items removed
        for iid in self.ids:
            _interpreters.exec(iid, SEED_SOURCE + "import _interpqueues\n")

    def seed(self, ns: list[int]) -> list[int]:
        errors = []

        def one(index: int, iid, n: int):
            # put(qid, obj, fmt, unboundop): 3.13.0's signature, private and liable to change.
            code = f"_interpqueues.put({self.queue}, ({index}, seed_task({n})), 0, 1)"
            err = self._interpreters.exec(iid, code)
            if err is not None:
                errors.append(err.formatted)

        workers = [threading.Thread(target=one, args=(i, iid, n)) for i, (iid, n) in enumerate(zip(self.ids, ns))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if errors:
            raise RuntimeError(f"_interpreters.exec failed: {errors[0]}")
        pairs = sorted(self._queues.get(self.queue)[0] for _ in ns)
        return [value for _, value in pairs]

    def close(self) -> None:
        self._queues.destroy(self.queue)
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


def process_pool_round_trips(n: int, iterations: int, start_method: str = "fork") -> list[float]:
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context(start_method)) as ex:
        return executor_round_trip(ex, n)(iterations)


def stdlib_round_trip(stdlib: StdlibInterpreters, executor: ThreadPoolExecutor) -> Callable[[int], list[float]]:
    """A contestant: exec("pass") in each stdlib interpreter, each from a pooled Python thread."""

    def once():
        wait([executor.submit(stdlib._interpreters.exec, iid, "pass") for iid in stdlib.ids])

    once()
    return lambda k: round_trips(once, k)


def pool_round_trip(pool: Pool) -> Callable[[int], list[float]]:
    """A contestant: Pool.run("") on a warm pool, through the whole public API."""
    pool.run("")
    return lambda k: round_trips(lambda: pool.run(""), k)


def floor_round_trip(floor: _engine.CondvarFloor) -> Callable[[int], list[float]]:
    """A contestant: a bare C++ condition-variable round trip to sleeping threads, the floor."""
    return floor.round_trips
