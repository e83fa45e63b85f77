"""The benchmark suite behind `make bench`: ipy_parallel beside every alternative, each figure from the same run.

Sections: throughput (seed workload, 1/2/4/20 tasks), latency (empty task, warm pools of 2 and
20, with the C++ floor), calls (executors: map and submit of trivial calls), cold start,
transfer (100 MiB in and out), memory (per idle worker), progress (what worker.progress() costs
a loop of trivial items, on each local backend), joblib (its Parallel on our backend beside loky:
a trivial function over 100,000 items, and the seed workload), pythons (round trips, the seed
workload, cold start and executor calls on every CPython given with --pythons, side by side,
each beside that Python's own interpreters). On 3.14, CPython's own concurrent.interpreters and
InterpreterPoolExecutor stand beside ours; before it, the private _interpreters module.
Prints measured times and ratios; asserts nothing about time. Methods are interleaved round by
round. Fork-based methods run while no sub-interpreter is alive: os.fork() ends every pool
(CPython crashes a child forked with live sub-interpreters).

    python benchmarks/suite.py [--sections throughput,latency,...] [--quick] [--pythons PY,PY]
"""

import argparse
import array
import contextlib
import datetime
import functools
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from ipy_parallel import Pool, SubinterpreterExecutor, _engine, bench

try:  # 3.14's executor of interpreters, beside ours in the calls section
    from concurrent.futures import InterpreterPoolExecutor
except ImportError:
    InterpreterPoolExecutor = None

SECTIONS = ["throughput", "latency", "calls", "cold", "transfer", "memory", "progress", "joblib", "pythons"]
MiB = 1024 * 1024


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    for row in rows:
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


def throughput(args, cluster) -> None:
    cores = os.cpu_count() or 1
    for tasks in args.task_counts:
        ns = [args.size] * tasks
        forked = bench.measure(
            {
                "multiprocessing fork": (lambda: bench.multiprocessing_pool(ns, "fork"), "end to end"),
                "ProcessPoolExecutor fork": (lambda: bench.process_pool_executor(ns, "fork"), "end to end"),
            },
            args.repeat,
        )
        stdlib = bench.StdlibInterpreters(tasks)
        try:
            with bench.warm_pool(tasks) as pool:
                runners = {
                    "serial": (lambda: bench.serial(ns), ""),
                    "threads (one GIL)": (lambda: bench.threads(ns), ""),
                    "multiprocessing spawn": (lambda: bench.multiprocessing_pool(ns, "spawn"), "end to end"),
                    "ProcessPoolExecutor spawn": (lambda: bench.process_pool_executor(ns, "spawn"), "end to end"),
                    stdlib.label: (lambda: stdlib.seed(ns), "warm, a thread each"),
                    "ipy_parallel Pool": (lambda: bench.pool_seed(pool, ns), "warm"),
                }
                if cluster is not None:
                    runners[f"ipyparallel ({len(cluster.client.ids)} engines)"] = (lambda: cluster.seed(ns), "warm")
                rows = bench.measure(runners, args.repeat)
        finally:
            stdlib.close()
        rows[2:2] = forked
        by = {m.method: m for m in rows}
        serial, ours = by["serial"], by["ipy_parallel Pool"]
        ceiling = min(tasks, cores)
        table(
            f"Throughput: {tasks} task(s) of n={args.size:,}, median of {args.repeat} (ceiling {ceiling}x)",
            ["method", "time", "speedup", "of ceiling", "ours is", "answers", "note"],
            [
                [
                    m.method,
                    f"{m.median:.3f}s",
                    f"{serial.median / m.median:.2f}x",
                    f"{serial.median / m.median / ceiling:.0%}",
                    f"{m.median / ours.median:.2f}x as fast",
                    "agree" if m.values == serial.values else "DIFFER",
                    m.note,
                ]
                for m in rows
            ],
        )


def latency(args, cluster) -> None:
    for n in (2, 20):
        iterations = args.iterations if n == 2 else args.iterations // 4
        ppe = bench.process_pool_round_trips(n, max(50, iterations // 4))
        stdlib = bench.StdlibInterpreters(n)
        try:
            with Pool(n) as pool, ThreadPoolExecutor(n) as threads:
                contestants = {
                    f"C++ condvar, {n} bare threads (floor)": bench.floor_round_trip(_engine.CondvarFloor(n)),
                    f"  same, waiter yields {_engine.POOL_SPIN_MICROS} us first": bench.floor_round_trip(
                        _engine.CondvarFloor(n, _engine.POOL_SPIN_MICROS)
                    ),
                    "ipy_parallel Pool.run('')": bench.pool_round_trip(pool),
                    f"{stdlib.label} + threads": bench.stdlib_round_trip(stdlib, threads),
                    "ThreadPoolExecutor (one GIL)": bench.executor_round_trip(threads, n),
                }
                times = bench.interleave(contestants, iterations)
        finally:
            stdlib.close()
        times["ProcessPoolExecutor fork (before)"] = ppe
        # Alone, afterwards: interleaved, its processes' activity kept the vCPUs awake and made
        # the bare floor look 2-3x faster than on a quiet machine.
        if cluster is not None and n == len(cluster.client.ids):
            times[f"ipyparallel, {n} engines (after)"] = cluster.round_trip()(max(50, iterations // 20))
        floor = statistics.median(next(iter(times.values())))
        ours = statistics.median(times["ipy_parallel Pool.run('')"])
        table(
            f"Latency: an empty task to each of {n} warm workers and back, median of {iterations} "
            f"(the first five interleaved in chunks of 50)",
            ["method", "median", "p90", "x floor", "x ours"],
            [
                [
                    name,
                    f"{statistics.median(t) * 1e6:.1f}us",
                    f"{statistics.quantiles(t, n=10)[-1] * 1e6:.1f}us",
                    f"{statistics.median(t) / floor:.2f}x",
                    f"{statistics.median(t) / ours:.2f}x",
                ]
                for name, t in times.items()
            ],
        )


def calls(args, cluster) -> None:
    """Fine-grained calls: the executors side by side, each warm; the fork-based one first,
    while no sub-interpreter is alive."""
    n, rounds = 2, max(3, args.repeat)
    submits = max(50, args.iterations // 8)
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork")) as procs:
        forked = {
            f"ProcessPoolExecutor fork {what}": run(rounds if what == "map" else submits)
            for what, run in bench.executor_calls(procs).items()
        }
    with contextlib.ExitStack() as stack:
        executors = {
            "ipy_parallel SubinterpreterExecutor": stack.enter_context(SubinterpreterExecutor(n)),
            "ThreadPoolExecutor": stack.enter_context(ThreadPoolExecutor(n)),
        }
        if InterpreterPoolExecutor is not None:  # 3.14's own
            executors["InterpreterPoolExecutor"] = stack.enter_context(InterpreterPoolExecutor(n))
        contestants = {}
        for label, executor in executors.items():
            for what, run in bench.executor_calls(executor).items():
                contestants[f"{label} {what}"] = run
        maps = bench.interleave({k: v for k, v in contestants.items() if k.endswith("map")}, rounds, chunk=1)
        singles = bench.interleave({k: v for k, v in contestants.items() if not k.endswith("map")}, submits)
    times = {**maps, **singles, **forked}
    rows = []
    for what in ("map", "submit().result()"):
        threads_median = statistics.median(times[f"ThreadPoolExecutor {what}"])
        for label in (*executors, "ProcessPoolExecutor fork"):
            t = times[f"{label} {what}"]
            rows.append(
                [
                    f"{label}: {what}",
                    f"{statistics.median(t) * 1e6:.2f}us",
                    f"{min(t) * 1e6:.2f}-{max(t) * 1e6:.2f}us",
                    f"{statistics.median(t) / threads_median:.2f}x",
                ]
            )
    table(
        f"Fine-grained calls: abs() on {n} warm workers, per call; map of 1,000 items ({rounds} rounds), "
        f"submit().result() one after another ({submits} calls), interleaved",
        ["method", "median", "range", "x threads"],
        rows,
    )
    big_functions(n)


def big_functions(n: int, calls: int = 20) -> None:
    """A function that needs 100 MiB: ours closes over it, and sends it once per worker; a
    ProcessPoolExecutor cannot pickle a closure, so it gets the object as a partial's argument,
    which it pickles with every call. Forked first, while no sub-interpreter is alive."""
    data = b"x" * (100 * MiB)
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork")) as procs:
        theirs = bench.big_function_calls(procs, functools.partial(bench.length_plus, data), calls, n)
    with SubinterpreterExecutor(n) as ex:
        ours = bench.big_function_calls(ex, lambda i: len(data) + i, calls, n)
    table(
        f"A function that needs 100 MiB: {calls} submit().result() one after another on {n} warm workers",
        ["executor", "per call", "x ours"],
        [
            [
                "ipy_parallel SubinterpreterExecutor (a closure, sent once per worker)",
                f"{ours / calls * 1e3:.2f} ms",
                "1.00x",
            ],
            [
                "ProcessPoolExecutor fork (a partial, pickled every call)",
                f"{theirs / calls * 1e3:.2f} ms",
                f"{theirs / ours:.0f}x",
            ],
        ],
    )


def cold(args, cluster) -> None:
    from ipy_parallel.ipython.session import Pools  # the extension's pools need IPython: only this section uses them

    for n in (2, 20):
        # Each runner measures itself, from nothing to the first result of every worker, and
        # leaves shutdown out; the fork-based one goes first, while no interpreter is alive.
        runners = {
            "multiprocessing.Pool fork": lambda: bench.first_result_processes(n, "fork"),
            "ipy_parallel Pool": lambda: bench.first_result_pool(n),
            "ipy_parallel Pool, from the reserve (a closed pool's workers)": lambda: bench.first_result_pool(n, False),
            "ipy_parallel Pool, grown from half as many (resize)": lambda: bench.first_result_resized(n),
            "ipy_parallel, first cell 0.3 s after %load_ext (warm start)": lambda: bench.first_result_warmed(n, Pools),
            bench.stdlib_label(): lambda: bench.first_result_stdlib(n),
            "multiprocessing.Pool spawn": lambda: bench.first_result_processes(n, "spawn"),
        }
        samples = {name: [] for name in runners}
        for name in ("multiprocessing.Pool fork",):
            samples[name] = [runners[name]() for _ in range(args.repeat)]
        # What the users compare with: forking from a small process is cheaper than
        # from this one (the cost grows with the parent's memory).
        helper = bench.ContestantProcess()
        try:
            samples["multiprocessing.Pool fork, from a small process"] = [
                helper.run("first result fork", n) for _ in range(args.repeat)
            ]
        finally:
            helper.close()
        for _ in range(args.repeat):
            for name, run in list(runners.items())[1:]:
                samples[name].append(run())
        base = statistics.median(samples["ipy_parallel Pool"])
        table(
            f"Cold start: a fresh pool of {n} to the first result of every worker, median of {args.repeat}",
            ["method", "time", "x ours"],
            [
                [name, f"{statistics.median(t) * 1e3:.1f}ms", f"{statistics.median(t) / base:.2f}x"]
                for name, t in samples.items()
            ],
        )


def transfer(args, cluster) -> None:
    size = args.transfer_mib * MiB
    blob = b"\x01" * size
    numbers = array.array("d", bytes(size))  # a buffer exporter: lent to workers in place
    with multiprocessing.get_context("fork").Pool(2) as procs:  # before any interpreter exists
        procs.map(abs, [1, 2])
        mp = bench.measure(
            {
                "multiprocessing in": (lambda: procs.map(len, [blob, blob], chunksize=1), ""),
                "multiprocessing out": (lambda: len(procs.apply(bench.blob_of, (size,))), ""),
            },
            args.repeat,
        )
    with Pool(2) as pool:
        pool.run("len(b'')")
        ours = bench.measure(
            {
                "one memcpy": (lambda: len(bytearray(blob)), ""),  # the floor: one copy of the data, here
                "ipy_parallel in": (lambda: [r.value for r in pool.run("len(blob)", {"blob": blob})], ""),
                "ipy_parallel view in": (lambda: [r.value for r in pool.run("len(view)", {"view": numbers})], ""),
                "ipy_parallel out": (
                    lambda: len(pool.run("bytes(size) if worker_id == 0 else None", {"size": size})[0].value),
                    "",
                ),
            },
            args.repeat,
        )
        pool.reset()  # the views go: the array is released here
    by = {m.method: m for m in mp + ours}
    memcpy = by["one memcpy"].median
    rows = [
        [
            f"one {args.transfer_mib} MiB memcpy, in this process (the floor)",
            f"{memcpy * 1e3:.1f}ms",
            f"{size / MiB / memcpy:,.0f} MiB/s",
            "1.00x",
            "",
        ]
    ]
    for label, key, moved, other in (
        ("bytes to 2 workers: ipy_parallel (a copy each, in parallel)", "ipy_parallel in", 2 * size, "in"),
        ("bytes to 2 workers: multiprocessing", "multiprocessing in", 2 * size, "in"),
        ("array.array to 2 workers: ipy_parallel (a read-only view, no copy)", "ipy_parallel view in", 2 * size, "in"),
        ("bytes result back: ipy_parallel (one copy)", "ipy_parallel out", size, "out"),
        ("bytes result back: multiprocessing", "multiprocessing out", size, "out"),
    ):
        m = by[key]
        rows.append(
            [
                label,
                f"{m.median * 1e3:.1f}ms",
                f"{moved / MiB / m.median:,.0f} MiB/s",
                f"{m.median / memcpy:.2f}x",
                f"{by[f'multiprocessing {other}'].median / m.median:.2f}x",
            ]
        )
    table(
        f"Transfer: {args.transfer_mib} MiB to each of 2 workers, and {args.transfer_mib} MiB back "
        f"(median of {args.repeat}, interleaved)",
        ["what", "time", "rate", "x one memcpy", "x multiprocessing speed"],
        rows,
    )


def memory(args, cluster) -> None:
    n = 20
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as procs:
        procs.map(abs, range(4), chunksize=1)
        children = [p.pid for p in multiprocessing.active_children()]
        fork_pss = statistics.mean(bench.pss_bytes(pid) for pid in children)
        fork_rss = statistics.mean(bench.rss_bytes(pid) for pid in children)
    with multiprocessing.get_context("spawn").Pool(4) as procs:
        procs.map(abs, range(4), chunksize=1)
        children = [p.pid for p in multiprocessing.active_children()]
        spawn_rss = statistics.mean(bench.rss_bytes(pid) for pid in children)
    before = bench.rss_bytes()
    with Pool(n) as pool:
        pool.run("worker_id")
        ours = (bench.rss_bytes() - before) / n
    table(
        f"Memory: resident memory per idle worker (ours: growth of this process over {n} workers)",
        ["worker", "per worker", "x ours"],
        [
            ["ipy_parallel sub-interpreter", f"{ours / MiB:.1f} MiB", "1.00x"],
            ["multiprocessing spawn process (RSS)", f"{spawn_rss / MiB:.1f} MiB", f"{spawn_rss / ours:.2f}x"],
            ["multiprocessing fork process (PSS)", f"{fork_pss / MiB:.1f} MiB", f"{fork_pss / ours:.2f}x"],
            ["multiprocessing fork process (RSS)", f"{fork_rss / MiB:.1f} MiB", f"{fork_rss / ours:.2f}x"],
        ],
    )


def progress(args, cluster) -> None:
    from ipy_parallel import ThreadPool
    from ipy_parallel.backends.process import ProcessPool

    # The range's figure is near zero, where 1% must be told from noise: 150 rounds put it within
    # about half a percent; the generator's is far from it.
    n, rounds = (200_000, {"range": 6, "generator": 6}) if args.quick else (10_000_000, {"range": 150, "generator": 30})
    rows = []
    for backend, pool_class in (("sub-interpreters", Pool), ("processes", ProcessPool), ("threads", ThreadPool)):
        with contextlib.ExitStack() as stack:
            if pool_class is ThreadPool:  # on a GIL build they take turns: said once, known here
                stack.enter_context(warnings.catch_warnings())
                warnings.simplefilter("ignore", RuntimeWarning)
            pool = stack.enter_context(pool_class(2))
            for kind, figures in bench.progress_overhead(pool, n, rounds).items():
                low, high = figures.interval
                rows.append(
                    [
                        f"{backend}, {kind}",
                        f"{figures.plain:.3f}s",
                        f"{figures.tracked:.3f}s",
                        f"{figures.overhead * 100:+.1f}%",
                        f"{low * 100:+.1f}% .. {high * 100:+.1f}%",
                    ]
                )
    table(
        f"Progress: a loop of {n:,} trivial items in each of 2 workers, without and with worker.progress() "
        f"(read 10 times a second, as a cell's display does), both through one function; "
        f"{rounds['range']} rounds (the generator {rounds['generator']}), the two back to back, the order alternating. Times: the workers' own (medians); overhead: the median "
        "of the rounds' ratios, and where it lies 19 times in 20",
        ["backend, items", "plain loop", "with progress", "overhead", "95% interval"],
        rows,
    )


def joblib(args, cluster) -> None:
    try:
        import joblib as installed
    except ImportError:
        print("\njoblib: not installed, its section is left out (pip install -e '.[joblib]')")
        return
    n_jobs = 2
    trivial = bench.notebook_function(bench.TRIVIAL_SOURCE, "trivial")
    workloads = [
        (
            f"a trivial function over {10_000 if args.quick else 100_000:,} items",
            trivial,
            list(range(10_000 if args.quick else 100_000)),
        ),
        (f"the seed workload, 4 tasks of n={args.size:,}", bench.seed_function(), [args.size] * 4),
    ]
    for title, fn, items in workloads:
        rows, first = bench.joblib_side_by_side(fn, items, n_jobs, args.repeat)
        by = {m.method: m for m in rows}
        serial, loky = by["serial"], by["joblib loky"]
        table(
            f"joblib {installed.__version__}, n_jobs={n_jobs}: {title}, median of {args.repeat} "
            f"(ceiling {min(n_jobs, os.cpu_count() or 1)}x); functions defined as a notebook defines them",
            ["method", "first call", "time", "speedup", "vs loky", "answers"],
            [
                [
                    m.method,
                    f"{first[m.method.removeprefix('joblib ')]:.3f}s" if m.method.startswith("joblib ") else "",
                    f"{m.median:.3f}s",
                    f"{serial.median / m.median:.2f}x",
                    f"{loky.median / m.median:.2f}x as fast",
                    "agree" if m.values == serial.values else "DIFFER",
                ]
                for m in rows
            ],
        )


def pythons(args, cluster) -> None:
    """The same figures on every CPython given with --pythons (each a venv's python, ours first):
    benchmarks/probe.py in each, round by round, one Python after another, so that the machine's
    drift falls on all of them alike. Speedups are each Python's own serial time over its pool's."""
    if not args.pythons:
        print("\nPythons side by side: no --pythons given (make bench passes every venv it built)")
        return
    interpreters = [sys.executable, *args.pythons]
    probe = str(Path(__file__).with_name("probe.py"))
    samples: dict[str, list[dict]] = {}
    for _ in range(args.repeat):
        for python in interpreters:
            proc = subprocess.run(
                [python, probe, str(args.iterations // 2), str(args.size)], capture_output=True, text=True, timeout=1800
            )
            if proc.returncode != 0:
                raise RuntimeError(f"{python} {probe} failed:\n{proc.stdout}{proc.stderr}")
            one = json.loads(proc.stdout.strip().splitlines()[-1])
            name = one["version"] + ("t" if one["free_threaded"] else "")
            samples.setdefault(name, []).append(one)

    def round_trips(runs: list[dict], n: int) -> tuple[float, float]:  # median, p90
        times = [t for run in runs for t in run[f"round_trip_{n}"]]
        return statistics.median(times), statistics.quantiles(times, n=10)[-1]

    first = next(iter(samples))
    base = {n: round_trips(samples[first], n) for n in (2, 20)}
    rows = []
    for name, runs in samples.items():
        row = [
            name
            + (
                ""
                if not runs[0]["free_threaded"]
                else (" (GIL off)" if not runs[-1]["gil_enabled_after"] else " (GIL turned on)")
            )
        ]
        for n in (2, 20):
            (median, p90), (base_median, base_p90) = round_trips(runs, n), base[n]
            row += [f"{median * 1e6:.1f} / {p90 * 1e6:.1f}us", f"{median / base_median:.2f}x / {p90 / base_p90:.2f}x"]
        serial = statistics.median(run["serial"] for run in runs)
        row += [
            f"{serial / statistics.median(run['pool'] for run in runs):.2f}x",
            f"{serial / statistics.median(run['threads'] for run in runs):.2f}x",
        ]
        rows.append(row)
    table(
        f"Pythons side by side: round trip of an empty task (median / p90, {args.iterations // 2} and "
        f"{max(50, args.iterations // 8)} per run) and the seed workload with 2 tasks of n={args.size:,} "
        f"(speedup over that Python's serial run), {args.repeat} runs of each, alternating",
        ["CPython", "2 workers", f"x {first}", "20 workers", f"x {first}", "Pool, 2 tasks", "threads, 2 tasks"],
        rows,
    )

    rows = []
    for name, runs in samples.items():
        serial = median_of(runs, "serial")
        row = [name, runs[0]["stdlib_label"].removeprefix("stdlib ")]
        for n in (2, 20):
            row.append(
                f"{median_of(runs, f'round_trip_{n}') * 1e6:.0f} / {median_of(runs, f'stdlib_round_trip_{n}') * 1e6:.0f}us"
            )
        row += [
            f"{serial / median_of(runs, 'pool'):.2f}x / {serial / median_of(runs, 'stdlib'):.2f}x",
            f"{median_of(runs, 'cold_20') * 1e3:.0f} / {median_of(runs, 'stdlib_cold_20') * 1e3:.0f}ms",
        ]
        theirs = "InterpreterPoolExecutor_map" in runs[0]
        for what in ("map", "submit"):
            row.append(
                f"{median_of(runs, f'ours_{what}') * 1e6:.2f}us / "
                + (f"{median_of(runs, f'InterpreterPoolExecutor_{what}') * 1e6:.2f}us" if theirs else "(none)")
            )
        rows.append(row)
    table(
        "Pythons side by side, ours / CPython's own interpreters (driven by a thread each) in the same runs: "
        "round trip (median), the seed workload with 2 tasks, a pool of 20 new interpreters to its first "
        "result, and an executor's calls on 2 workers (median per call) / InterpreterPoolExecutor's (3.14)",
        ["CPython", "CPython's own", "2 workers", "20 workers", "2 tasks", "cold 20", "map", "submit().result()"],
        rows,
    )
    threads_backend_table(samples)


def median_of(runs: list[dict], key: str) -> float:
    """The median of a probe figure over runs (of every timing, where a run has many)."""
    values = [run[key] for run in runs]
    return statistics.median([v for many in values for v in many] if isinstance(values[0], list) else values)


def threads_backend_table(samples: dict[str, list[dict]]) -> None:
    """The threads backend beside its alternatives, per Python (probe.py's threads_backend())."""
    rows = []
    for name, runs in samples.items():
        seed = median_of(runs, "serial")
        row = [name + ("" if runs[-1]["gil_enabled_after"] else " (GIL off)")]
        row.append(
            " / ".join(
                f"{seed / median_of(runs, key):.2f}x"
                for key in ("seed_threads_backend", "pool", "seed_process", "seed_executor")
            )
        )
        trip, cxx, python = (median_of(runs, k) for k in ("threads_round_trip", "cxx_floor", "python_floor"))
        row.append(
            f"{trip * 1e6:.0f} us: {trip / cxx:.1f}x C++ ({cxx * 1e6:.0f} us), {trip / python:.2f}x Python ({python * 1e6:.0f} us)"
        )
        if "numpy_serial" in runs[0]:
            numpy = median_of(runs, "numpy_serial")
            row.append(
                " / ".join(
                    f"{numpy / median_of(runs, key):.2f}x"
                    for key in ("numpy_threads_backend", "numpy_process", "numpy_executor")
                )
            )
            same = all(run["push_threads_same_array"] for run in runs)
            row.append(
                f"{median_of(runs, 'push_threads_backend') * 1e3:.1f} ms ({'the array itself' if same else 'COPIED'})"
                f" / {median_of(runs, 'push_process') * 1e3:.0f} ms"
            )
        else:
            row += ["(no numpy)", "(no numpy)"]
        rows.append(row)
    table(
        "The threads backend, per Python, in the same runs: the seed workload with 2 tasks (speedup over "
        "serial: ThreadPool / sub-interpreter Pool / process backend / ThreadPoolExecutor); an empty run's "
        "round trip to 2 workers (median) against 2 bare threads on condition variables, C++ and Python; "
        "a loop of small numpy.linalg.solve calls as 2 tasks (ThreadPool / process backend / "
        "ThreadPoolExecutor); a 100 MiB numpy array pushed to 2 workers (ThreadPool / process backend)",
        ["CPython", "seed, 2 tasks", "empty run, 2 workers", "numpy loop, 2 tasks", "100 MiB array push"],
        rows,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated, from: " + ", ".join(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats: checks the suite runs")
    parser.add_argument("--no-ipyparallel", action="store_true", help="leave ipyparallel out")
    parser.add_argument(
        "--pythons",
        type=lambda text: [p for p in text.split(",") if p],
        default=[],
        help="comma-separated: other Pythons (each with ipy_parallel installed) for the pythons section",
    )
    args = parser.parse_args()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    args.size, args.repeat, args.iterations, args.transfer_mib = (
        (20_000, 1, 200, 4) if args.quick else (4_000_000, 5, 4000, 100)
    )
    args.task_counts = [1, 2] if args.quick else [1, 2, 4, 20]

    print(
        f"ipy_parallel benchmark suite: CPython {platform.python_version()}, {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), {platform.system()}, {datetime.date.today()}"
    )
    cluster = None
    if not args.no_ipyparallel and {"throughput", "latency"} & set(sections):
        try:
            cluster = bench.IPyParallelCluster(2)
        except ImportError:
            print("ipyparallel is not installed: its rows are left out (pip install ipyparallel)")
    try:
        for name in SECTIONS:
            if name in sections:
                globals()[name](args, cluster)
                sys.stdout.flush()
    finally:
        if cluster is not None:
            cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
