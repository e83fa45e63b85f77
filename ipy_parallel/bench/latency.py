"""Latency contestants: round trips and fine-grained calls, each a function of a count that returns that many timings."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, wait

from .. import _engine
from ..backends.subinterpreter import Pool
from .stdlib_interpreters import StdlibInterpreters


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


# -- round trips: an empty task to every worker of a warm pool, and back ------------------------


def round_trips(once: Callable[[], None], iterations: int) -> list[float]:
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return times


def noop() -> None:
    return None


def executor_round_trip(executor, n: int) -> Callable[[int], list[float]]:
    """A contestant: n empty tasks submitted to a warm executor, then waited for."""

    def once():
        wait([executor.submit(noop) for _ in range(n)])

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


class ThreadsFloor:
    """The floor of the threads backend's round trip: n bare Python threads that a
    threading.Condition wakes, and that wake the caller when the last is done; nothing else.
    round_trips(k) is a contestant; close() ends the threads."""

    def __init__(self, n: int):
        self._cond = threading.Condition()
        self._round = 0
        self._left = 0
        self._closing = False
        self._threads = [threading.Thread(target=self._serve, daemon=True) for _ in range(n)]
        for thread in self._threads:
            thread.start()

    def _serve(self) -> None:
        seen = 0
        with self._cond:
            while True:
                while self._round == seen and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                seen = self._round
                self._left -= 1
                if self._left == 0:
                    self._cond.notify_all()

    def _once(self) -> None:
        with self._cond:
            self._left = len(self._threads)
            self._round += 1
            self._cond.notify_all()
            while self._left:
                self._cond.wait()

    def round_trips(self, k: int) -> list[float]:
        return round_trips(self._once, k)

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()


def blob_of(size: int) -> bytes:
    """A call whose answer is big: what a worker process sends back costs."""
    return bytes(size)
