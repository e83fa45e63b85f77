"""Benchmarks: the seed workload and the round trip on each way to run Python in parallel, and %native_bench's report.

native_bench() runs the runners side by side for %native_bench and returns a BenchReport;
benchmarks/ uses the same runners and contestants. Nothing here asserts a time: callers print
measured ratios from one run. Nothing here imports the IPython extension: what %native_bench
needs of it (its live display) is passed in.
"""

# ruff: noqa: F401 (the names that the magic, benchmarks/ and the tests use, from where they live)

from ..procfs import process_tree_cpu
from .cluster import IPyParallelCluster
from .cold_start import (
    first_result_pool,
    first_result_processes,
    first_result_resized,
    first_result_stdlib,
    first_result_warmed,
)
from .compare import ROUNDS, bench_methods, native_bench, run_native_bench
from .helper import ContestantProcess
from .latency import (
    ThreadsFloor,
    big_function_calls,
    blob_of,
    executor_calls,
    executor_round_trip,
    floor_round_trip,
    interleave,
    length_plus,
    pool_round_trip,
    process_pool_round_trips,
    stdlib_round_trip,
)
from .joblib_runs import JOBLIB_BACKENDS, TRIVIAL_SOURCE, joblib_side_by_side, notebook_function, seed_function
from .memory import pss_bytes, rss_bytes
from .progress import PROGRESS_LOOPS, ProgressOverhead, median_interval, progress_overhead
from .render import BAR_WIDTH, OURS_TINT
from .report import OURS, OURS_THREADS, BenchmarkError, BenchReport, MethodResult
from .runners import (
    DEFAULT_SIZE,
    SEED_KERNEL_MAX_N,
    SEED_SOURCE,
    NUMPY_SOURCE,
    SEED_WORKLOAD,
    Measurement,
    free_threaded,
    measure,
    multiprocessing_pool,
    native,
    numpy_task,
    pool_seed,
    process_pool_executor,
    seed_task,
    serial,
    threads,
    warm_pool,
)
from .stdlib_interpreters import StdlibInterpreters, stdlib_label

__all__ = [
    "seed_task",
    "SEED_SOURCE",
    "native_bench",
    "run_native_bench",
    "BenchReport",
    "MethodResult",
    "BenchmarkError",
]
