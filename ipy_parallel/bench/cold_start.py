"""Cold starts: seconds from nothing to the first result of every worker, each way to get workers."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable

from ..backends.subinterpreter import Pool
from .stdlib_interpreters import public_interpreters


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


def first_result_warmed(n: int, new_pools: Callable[[], object], typing: float = 0.3) -> float:
    """Seconds a first %%parallel cell takes, `typing` seconds after %load_ext started its pool
    in the background (the session's warm start), to the first result of every worker.
    ``new_pools()`` makes the session's pools (ipy_parallel.ipython.session.Pools: warm, get,
    close), passed in so that the benchmarks need not import the IPython extension."""
    Pool.reserve(clear=True)  # as in a new kernel: its pool's interpreters are created
    pools = new_pools()
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
