"""joblib's backend "ipy_parallel": a joblib Parallel run on a warm pool of sub-interpreters.

Importing this module registers the backend (``%load_ext ipy_parallel`` imports it when joblib is
installed)::

    from joblib import Parallel, delayed, parallel_config
    with parallel_config(backend="ipy_parallel", n_jobs=4):
        results = Parallel()(delayed(f)(x) for x in items)

joblib stays in the main interpreter: a batch travels to a SubinterpreterExecutor's worker as its
plain (function, args, kwargs) calls, so a worker imports only what the calls need. The pool stays
warm between Parallel calls of the same n_jobs.
"""

from __future__ import annotations

import os
import threading

from joblib import register_parallel_backend
from joblib._parallel_backends import AutoBatchingMixin, FallbackToBackend, ParallelBackendBase, SequentialBackend

from ._wire.protocol import not_isolated_package
from .backends.inputs import MAX_WORKERS
from .executor import SubinterpreterExecutor
from .worker import NOT_ISOLATED_ADVICE, call_each

__all__ = ["SubinterpreterBackend", "NAME"]

NAME = "ipy_parallel"

_lock = threading.Lock()
_warm: SubinterpreterExecutor | None = None  # the pool the last Parallel call used, kept for the next


def _executor(n_jobs: int) -> SubinterpreterExecutor:
    """A running executor of ``n_jobs`` workers: the warm one if it has that many and still works
    (a fork of this process ends every pool), else a new one (the old one ends in the background)."""
    global _warm
    with _lock:
        old = _warm
        if old is not None and old.max_workers == n_jobs and old.broken is None:
            return old
        _warm = SubinterpreterExecutor(n_jobs)
    if old is not None:
        old.shutdown(wait=False)
    return _warm


def _discard(executor: SubinterpreterExecutor) -> None:
    """Interrupt ``executor``'s calls and let it go (the next Parallel call starts a new pool)."""
    global _warm
    with _lock:
        if _warm is executor:
            _warm = None
    executor.terminate_workers()


class SubinterpreterBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib's ParallelBackendBase on sub-interpreters, each with its own GIL.

    Batches are sized as loky's are (AutoBatchingMixin), for a batch of about MIN_IDEAL_BATCH_DURATION
    seconds: a call here costs tens of microseconds, not a process pool's milliseconds. Results
    come back through Future callbacks, so ``return_as="generator"`` and
    ``"generator_unordered"`` and timeouts work. An abort (a call's exception, Ctrl-C, the stop
    button) interrupts the running calls at once. ``require="sharedmem"`` is not supported:
    joblib then picks its threading backend itself.
    """

    MIN_IDEAL_BATCH_DURATION = 0.05
    supports_retrieve_callback = True
    supports_timeout = True
    supports_return_generator = True
    uses_threads = False
    supports_sharedmem = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._executor: SubinterpreterExecutor | None = None
        self.parallel = None

    def effective_n_jobs(self, n_jobs):
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            n_jobs = max((os.cpu_count() or 1) + 1 + n_jobs, 1)
        if n_jobs > MAX_WORKERS:
            raise ValueError(f"n_jobs={n_jobs}: the backend {NAME!r} runs at most {MAX_WORKERS} sub-interpreters")
        return n_jobs

    def configure(self, n_jobs=1, parallel=None, prefer=None, require=None, **backend_kwargs):
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self.parallel = parallel
        self._executor = _executor(n_jobs)
        return n_jobs

    def submit(self, func, callback=None):
        """Send a batch (joblib's BatchedCalls) as its plain calls; returns its Future."""
        try:
            future = self._executor.submit(call_each, func.items)
        except RuntimeError:  # BrokenSubinterpreterPool (a worker died), or shut down by an abort
            _discard(self._executor)
            raise
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, future):
        try:
            return future.result()
        except ImportError as exc:
            package = not_isolated_package(exc)
            if package is None:
                raise
            advice = 'Run it on worker processes instead: with parallel_config(backend="loky"): ...'
            raise ImportError(str(exc).replace(NOT_ISOLATED_ADVICE, advice), name=package) from None

    def abort_everything(self, ensure_ready=True):
        executor, self._executor = self._executor, None
        if executor is not None:
            _discard(executor)
        if ensure_ready and self.parallel is not None:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel)

    def terminate(self):
        self._executor = None  # the pool stays warm for the next Parallel call
        self.reset_batch_stats()


register_parallel_backend(NAME, SubinterpreterBackend)
