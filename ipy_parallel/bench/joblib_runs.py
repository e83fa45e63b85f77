"""joblib's Parallel on the backend "ipy_parallel" beside loky and a plain loop: the same calls, timed side by side."""

from __future__ import annotations

import time

from .runners import SEED_SOURCE, Measurement, measure

__all__ = ["TRIVIAL_SOURCE", "JOBLIB_BACKENDS", "notebook_function", "seed_function", "joblib_side_by_side"]

TRIVIAL_SOURCE = "def trivial(x):\n    return x + 1\n"
JOBLIB_BACKENDS = ("ipy_parallel", "loky")


def notebook_function(source: str, name: str):
    """The function ``name`` defined by ``source`` as a notebook cell defines it (in ``__main__``):
    both backends then send it by value, as they send a user's."""
    namespace = {"__name__": "__main__"}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    return namespace[name]


def seed_function():
    """The seed workload's task, as a notebook defines it."""
    return notebook_function(SEED_SOURCE, "seed_task")


def joblib_side_by_side(fn, items: list, n_jobs: int, repeat: int) -> tuple[list[Measurement], dict[str, float]]:
    """``[fn(x) for x in items]`` as a plain loop ("serial"), and as
    ``Parallel(n_jobs)(delayed(fn)(x) for x in items)`` on each of JOBLIB_BACKENDS, with joblib's
    own batching, ``repeat`` times, interleaved round by round. Returns the measurements (values
    of the last call kept) and each backend's first call, which starts its pool (seconds; a
    backend whose pool this process already started is warm there)."""
    import ipy_parallel.joblib  # noqa: F401  registers the backend
    from joblib import Parallel, delayed, parallel_config

    def on(backend):
        def run():
            with parallel_config(backend=backend, n_jobs=n_jobs):
                return Parallel()(delayed(fn)(x) for x in items)

        return run

    first = {}
    for backend in JOBLIB_BACKENDS:
        start = time.perf_counter()
        on(backend)()
        first[backend] = time.perf_counter() - start
    runners = {"serial": (lambda: [fn(x) for x in items], "a plain loop")}
    runners.update({f"joblib {backend}": (on(backend), "warm") for backend in JOBLIB_BACKENDS})
    return measure(runners, repeat), first
