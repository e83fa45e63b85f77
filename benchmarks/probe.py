"""One CPython's share of `make bench`'s side-by-side of the Pythons: a few figures, as one JSON line.

Run by each Python's own venv (suite.py's `pythons` section starts it, round by round, one
Python after another, so that drift on a shared machine falls on all of them alike):

    python benchmarks/probe.py ITERATIONS SIZE

Round trips of an empty task to warm pools of 2 and of 20 workers (every timing, in seconds),
and the seed workload with 2 tasks of SIZE: serial, threads and a warm pool of 2 (seconds); the
same for CPython's own interpreters (concurrent.interpreters on 3.14, the private module before),
a pool of 20 from nothing to its first result, ours and theirs, and on 3.14 the executors' calls
beside InterpreterPoolExecutor (seconds per call).
"""

import json
import statistics
import sys
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor

from ipy_parallel import Pool, SubinterpreterExecutor, bench

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
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
