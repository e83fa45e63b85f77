"""One CPython's share of `make bench`'s side-by-side of the Pythons: a few figures, as one JSON line.

Run by each Python's own venv (suite.py's `pythons` section starts it, round by round, one
Python after another, so that drift on a shared machine falls on all of them alike):

    python benchmarks/probe.py ITERATIONS SIZE

Round trips of an empty task to warm pools of 2 and of 20 workers (every timing, in seconds),
and the seed workload with 2 tasks of SIZE: serial, threads and a warm pool of 2 (seconds).
"""

import json
import sys
import sysconfig
import time

from ipy_parallel import Pool, bench


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    iterations, size = int(sys.argv[1]), int(sys.argv[2])
    out = {"version": sys.version.split()[0], "free_threaded": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
           "gil_enabled": getattr(sys, "_is_gil_enabled", lambda: True)()}
    for n in (2, 20):
        with Pool(n) as pool:
            out[f"round_trip_{n}"] = bench.pool_round_trip(pool)(iterations if n == 2 else max(50, iterations // 4))
    ns = [size, size]
    with bench.warm_pool(2) as pool:
        out["serial"] = timed(lambda: bench.serial(ns))
        out["threads"] = timed(lambda: bench.threads(ns))
        out["pool"] = timed(lambda: bench.pool_seed(pool, ns))
    out["gil_enabled_after"] = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
