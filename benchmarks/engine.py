"""The engine beside every alternative, in one run: seed-workload speedups, then empty-task round trips.

Prints measured times and ratios; asserts nothing about time. Methods are interleaved round by
round, so drift on a shared machine falls on all alike. The fork-based methods run first, before
any sub-interpreter exists: os.fork() ends every pool (CPython crashes a child forked with live
sub-interpreters), which would charge a restart to ours.

    python benchmarks/engine.py [--n 6000000] [--tasks 2] [--repeat 7] [--iterations 4000]
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor

from ipy_parallel import _engine, bench


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6_000_000, help="loop length of one task (default 6e6)")
    parser.add_argument("--tasks", type=int, default=2, help="tasks run at once = workers (default 2)")
    parser.add_argument("--repeat", type=int, default=7, help="timings per method; the median is shown")
    parser.add_argument("--iterations", type=int, default=4000, help="round trips per method")
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    ns = [args.n] * args.tasks
    ceiling = min(args.tasks, cores)
    print(f"ipy_parallel engine benchmark: CPython {platform.python_version()}, {cores} cores, "
          f"{platform.machine()}, {datetime.date.today()}")

    # Phase 1: fork-based methods, while no sub-interpreter is alive.
    forked = bench.measure({"multiprocessing fork": (lambda: bench.multiprocessing_pool(ns, "fork"),
                                                     "end to end: starts its processes")}, args.repeat)
    ppe_rt = bench.process_pool_round_trips(args.tasks, args.iterations // 4)

    # Phase 2: everything else, interleaved.
    stdlib = bench.StdlibInterpreters(args.tasks)
    try:
        with bench.warm_pool(args.tasks) as pool, ThreadPoolExecutor(args.tasks) as threads:
            rows = bench.measure({
                "serial": (lambda: bench.serial(ns), ""),
                "threads (one GIL)": (lambda: bench.threads(ns), ""),
                "multiprocessing spawn": (lambda: bench.multiprocessing_pool(ns, "spawn"),
                                          "end to end: starts its processes"),
                "stdlib _interpreters": (lambda: stdlib.seed(ns), "warm; a Python thread per interpreter"),
                "ipy_parallel Pool.run": (lambda: bench.pool_seed(pool, ns), "warm"),
            }, args.repeat)
            rows[3:3] = forked
            floor = _engine.CondvarFloor(args.tasks)
            floor_spin = _engine.CondvarFloor(args.tasks, _engine.POOL_SPIN_MICROS)
            latency = bench.interleave({
                "C++ condvar, bare threads (floor)": bench.floor_round_trip(floor),
                f"  same, waiter yields {_engine.POOL_SPIN_MICROS} us first": bench.floor_round_trip(floor_spin),
                "ipy_parallel Pool.run('')": bench.pool_round_trip(pool),
                "stdlib _interpreters + threads": bench.stdlib_round_trip(stdlib, threads),
                "ThreadPoolExecutor (one GIL)": bench.executor_round_trip(threads, args.tasks),
            }, args.iterations)
            del floor, floor_spin
    finally:
        stdlib.close()
    latency["ProcessPoolExecutor fork"] = ppe_rt

    by_name = {m.method: m for m in rows}
    serial, ours = by_name["serial"], by_name["ipy_parallel Pool.run"]
    print(f"\nSeed workload: {args.tasks} tasks of n={args.n:,}, median of {args.repeat}; "
          f"ceiling on this machine {ceiling:.2f}x")
    print(f"{'method':<24}{'time':>9}{'speedup':>10}{'of ceiling':>12}  answers  note")
    for m in rows:
        speedup = serial.median / m.median
        agree = "agree" if m.values == serial.values else "DIFFER"
        print(f"{m.method:<24}{m.median:>8.3f}s{speedup:>9.2f}x{speedup / ceiling:>11.0%}  {agree:<7}  {m.note}")
    print(f"ipy_parallel is {by_name['stdlib _interpreters'].median / ours.median:.2f}x as fast as stdlib "
          f"_interpreters and {by_name['multiprocessing spawn'].median / ours.median:.2f}x as fast as "
          f"multiprocessing spawn")

    floor_median = statistics.median(latency["C++ condvar, bare threads (floor)"])
    print(f"\nRound trip: an empty task to each of {args.tasks} warm workers and back; median of "
          f"{args.iterations}, interleaved in chunks of 50 (process pool: {args.iterations // 4}, before)")
    print(f"{'method':<36}{'median':>10}{'p90':>10}{'x floor':>9}")
    # The pool's first wait of a run yields for POOL_SPIN_MICROS before it blocks (a VM's idle
    # vCPU halts, and the wake-up is most of a round trip); the second floor waits the same way.
    for name, times in latency.items():
        med = statistics.median(times)
        p90 = statistics.quantiles(times, n=10)[-1]
        print(f"{name:<36}{med * 1e6:>8.1f}us{p90 * 1e6:>8.1f}us{med / floor_median:>8.2f}x")
    return 0 if all(m.values == serial.values for m in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
