"""The seed workload, the runners that compute it each way, and measure(), which times them side by side.

Each runner does the same work its way and returns what it computed, so a caller can time it
and check the answers agree. Nothing here asserts a time: callers print measured ratios from one run.
"""

from __future__ import annotations

import inspect
import multiprocessing
import statistics
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

from .. import _engine
from ..backends import gil_enabled, open_pool
from ..backends.base import BasePool

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


def numpy_task(seed: int, count: int) -> float:
    """Many small numpy calls in a Python loop: the GIL is held between them, so threads with a
    GIL cannot overlap this work; free threads and processes can. Needs numpy."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a = rng.standard_normal((32, 32)) + 32 * np.eye(32)
    total = 0.0
    for _ in range(count):
        total += float(np.linalg.solve(a, rng.standard_normal(32))[0])
    return total


NUMPY_SOURCE = inspect.getsource(numpy_task)


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
    return not gil_enabled()


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


def pool_seed(pool: BasePool, ns: list[int]) -> list[int]:
    """Our pool, warm: one task per worker (the pool has len(ns) workers, seed_task defined)."""
    results = pool.run("seed_task(n)", worker_inputs=[{"n": n} for n in ns])
    for r in results:
        if r.error:
            raise RuntimeError(f"worker {r.worker_id}: {r.error}")
    return [r.value for r in results]


def warm_pool(n_workers: int, backend: str = "subinterpreter") -> BasePool:
    """A pool of ``backend`` with seed_task defined and its result path used once (as the stdlib's is)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # threads on a GIL build: the report's note says it
        pool = open_pool(backend, n_workers)
    pool.run(SEED_SOURCE + "seed_task(10)")
    return pool
