"""One CPython's share of `make bench`'s side-by-side of the Pythons: a few figures, as one JSON line.

Run by each Python's own venv (suite.py's `pythons` section starts it, round by round, one
Python after another, so that drift on a shared machine falls on all of them alike):

    python benchmarks/probe.py ITERATIONS SIZE

Round trips of an empty task to warm pools of 2 and of 20 workers (every timing, in seconds),
and the seed workload with 2 tasks of SIZE: serial, threads and a warm pool of 2 (seconds); the
same for CPython's own interpreters (concurrent.interpreters on 3.14, the private module before),
a pool of 20 from nothing to its first result, ours and theirs, and on 3.14 the executors' calls
beside InterpreterPoolExecutor (seconds per call); then the threads backend beside its
alternatives (threads_backend()).
"""

import json
import statistics
import sys
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor

from ipy_parallel import Pool, SubinterpreterExecutor, _engine, bench

try:
    from concurrent.futures import InterpreterPoolExecutor
except ImportError:  # before 3.14
    InterpreterPoolExecutor = None


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    iterations, size = int(sys.argv[1]), int(sys.argv[2])
    out = {
        "version": sys.version.split()[0],
        "free_threaded": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
        "gil_enabled": getattr(sys, "_is_gil_enabled", lambda: True)(),
    }
    for n in (2, 20):
        with Pool(n) as pool:
            out[f"round_trip_{n}"] = bench.pool_round_trip(pool)(iterations if n == 2 else max(50, iterations // 4))
    ns = [size, size]
    with bench.warm_pool(2) as pool:
        out["serial"] = timed(lambda: bench.serial(ns))
        out["threads"] = timed(lambda: bench.threads(ns))
        out["pool"] = timed(lambda: bench.pool_seed(pool, ns))
    out["gil_enabled_after"] = getattr(sys, "_is_gil_enabled", lambda: True)()  # after ours, before theirs
    out["stdlib_label"] = bench.stdlib_label()
    for n in (2, 20):
        stdlib = bench.StdlibInterpreters(n)
        try:
            with ThreadPoolExecutor(n) as threads:
                out[f"stdlib_round_trip_{n}"] = bench.stdlib_round_trip(stdlib, threads)(
                    iterations if n == 2 else max(50, iterations // 4)
                )
            if n == 2:
                out["stdlib"] = timed(lambda: stdlib.seed(ns))
        finally:
            stdlib.close()
    out["cold_20"] = bench.first_result_pool(20)
    out["stdlib_cold_20"] = bench.first_result_stdlib(20)
    executors = {"ours": SubinterpreterExecutor}
    if InterpreterPoolExecutor is not None:
        executors["InterpreterPoolExecutor"] = InterpreterPoolExecutor
    for name, make in executors.items():
        with make(2) as executor:
            calls = bench.executor_calls(executor)
            out[f"{name}_map"] = statistics.median(calls["map"](3))
            out[f"{name}_submit"] = statistics.median(calls["submit().result()"](max(50, iterations // 8)))
    out.update(threads_backend(iterations, size))
    print(json.dumps(out))
    return 0


def threads_backend(iterations: int, size: int) -> dict:
    """The threads backend (ThreadPool) beside what a user would use instead, on this Python: the
    seed workload with 2 tasks (serial, ThreadPool, the process backend, ThreadPoolExecutor); an
    empty run's round trip to 2 workers beside two floors, 2 bare C++ threads on condition
    variables and 2 bare Python threads on a threading.Condition (interleaved, every timing);
    and with numpy, a loop of small numpy calls as 2 tasks (serial, ThreadPool, processes,
    ThreadPoolExecutor) and a 100 MiB array pushed to 2 workers (ThreadPool: whether each worker
    got the array itself, at its address; processes: pickled to each)."""
    out: dict = {}
    ns = [size, size]
    with bench.warm_pool(2, "threads") as threads_pool, bench.warm_pool(2, "process") as processes:
        out["seed_threads_backend"] = timed(lambda: bench.pool_seed(threads_pool, ns))
        out["seed_process"] = timed(lambda: bench.pool_seed(processes, ns))
        out["seed_executor"] = timed(lambda: bench.threads(ns))
        floor, python_floor = _engine.CondvarFloor(2), bench.ThreadsFloor(2)
        try:
            times = bench.interleave(
                {
                    "threads_round_trip": bench.pool_round_trip(threads_pool),
                    "cxx_floor": bench.floor_round_trip(floor),
                    "python_floor": python_floor.round_trips,
                },
                iterations,
            )
        finally:
            python_floor.close()
        out.update(times)
        try:
            import numpy as np
        except ImportError:
            return out
        count = max(200, size // 400)
        for pool in (threads_pool, processes):  # numpy imported in every worker before the timing
            pool.run(bench.NUMPY_SOURCE + "numpy_task(worker_id, 1)")
        out["numpy_serial"] = timed(lambda: [bench.numpy_task(seed, count) for seed in (0, 1)])
        out["numpy_threads_backend"] = timed(lambda: threads_pool.run("numpy_task(worker_id, count)", {"count": count}))
        out["numpy_process"] = timed(lambda: processes.run("numpy_task(worker_id, count)", {"count": count}))
        with ThreadPoolExecutor(2) as executor:
            out["numpy_executor"] = timed(lambda: list(executor.map(bench.numpy_task, (0, 1), (count, count))))
        array = np.ones(100 * 1024 * 1024 // 8)
        seen = []
        out["push_threads_backend"] = timed(lambda: seen.extend(threads_pool.run("a.ctypes.data", {"a": array})))
        out["push_threads_same_array"] = [r.value for r in seen] == [array.ctypes.data] * 2
        out["push_process"] = timed(lambda: processes.run("float(a[-1])", {"a": array}))
    return out


if __name__ == "__main__":
    sys.exit(main())
