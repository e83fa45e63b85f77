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

import sys
import threading
import weakref
from concurrent.futures import CancelledError

from joblib import cpu_count, register_parallel_backend
from joblib._parallel_backends import AutoBatchingMixin, FallbackToBackend, ParallelBackendBase, SequentialBackend

from ._wire.protocol import not_isolated_package
from .backends.inputs import MAX_WORKERS
from .executor import SubinterpreterExecutor
from .worker import NOT_ISOLATED_ADVICE, call_each

__all__ = ["SubinterpreterBackend", "NAME"]

NAME = "ipy_parallel"

_lock = threading.Lock()
_stopped: weakref.WeakSet[SubinterpreterExecutor] = weakref.WeakSet()  # let go by an abort
_idle: tuple[SubinterpreterExecutor, list[str]] | None = None  # the warm pool no Parallel uses, and its sys.path


def _take(n_jobs: int) -> SubinterpreterExecutor:
    """A running executor of ``n_jobs`` workers for one Parallel call, its own until _give_back():
    the warm one if it has that many, still works (a fork of this process ends every pool) and
    started with today's sys.path (its workers got the path once, as they started), else a new
    one. Two Parallel calls alive at once (a generator not yet consumed, another thread) each
    have a pool: an abort of one interrupts its own calls, never the other's."""
    global _idle
    with _lock:
        idle, _idle = _idle, None
    if idle is not None:
        executor, path = idle
        if executor.max_workers == n_jobs and executor.broken is None and path == sys.path:
            return executor
        executor.shutdown(wait=False)  # ends in the background
    return SubinterpreterExecutor(n_jobs)


def _give_back(executor: SubinterpreterExecutor, path: list[str]) -> None:
    """A Parallel call is done with ``executor``: kept warm for the next one (the one kept
    before it, if any, ends in the background)."""
    global _idle
    with _lock:
        old, _idle = _idle, (executor, path)
    if old is not None:
        old[0].shutdown(wait=False)


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
        self._path: list[str] = []  # sys.path as this call's executor was taken
        self._n_jobs = 1
        self.parallel = None

    def effective_n_jobs(self, n_jobs):
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:  # joblib's count: the CPUs this process may use (affinity, a container's quota)
            return min(max(cpu_count() + 1 + n_jobs, 1), MAX_WORKERS)
        if n_jobs > MAX_WORKERS:
            raise ValueError(f"n_jobs={n_jobs}: the backend {NAME!r} runs at most {MAX_WORKERS} sub-interpreters")
        return n_jobs

    def configure(self, n_jobs=1, parallel=None, prefer=None, require=None, **backend_kwargs):
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self.parallel, self._n_jobs = parallel, n_jobs
        if self._executor is None:  # a Parallel used as a context manager configures once
            self._take()
        return n_jobs

    def submit(self, func, callback=None):
        """Send a batch (joblib's BatchedCalls) as its plain calls; returns its Future."""
        if self._executor is None:  # another Parallel of this backend (one parallel_config) aborted
            self._take()
        try:
            future = self._executor.submit(call_each, func.items)
        except RuntimeError:  # BrokenSubinterpreterPool (a worker died)
            self._discard()
            raise
        future.ipy_parallel_executor = self._executor  # for retrieve_result_callback
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, future):
        try:
            return future.result()
        except (CancelledError, KeyboardInterrupt):
            if getattr(future, "ipy_parallel_executor", None) not in _stopped:
                raise
            # Read only by a Parallel that did not abort (one that did raises its own error):
            # another one of this backend object, in the same parallel_config block, did.
            raise RuntimeError(
                "this call was stopped because another Parallel call in the same parallel_config block "
                "was aborted (a call's exception, Ctrl-C, or a return_as='generator' result dropped "
                "before its end), and they share one backend object and its pool. Run them one after "
                "another, or give each a backend of its own: Parallel(backend='ipy_parallel', n_jobs=...)"
            ) from None
        except ImportError as exc:
            package = not_isolated_package(exc)
            if package is None:
                raise
            advice = 'Run it on worker processes instead: with parallel_config(backend="loky"): ...'
            raise ImportError(str(exc).replace(NOT_ISOLATED_ADVICE, advice), name=package) from None

    def abort_everything(self, ensure_ready=True):
        """Interrupt this call's running calls and let its pool go (the next takes a new one)."""
        self._discard()
        if ensure_ready and self.parallel is not None:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel)

    def terminate(self):
        executor, self._executor = self._executor, None
        if executor is not None:
            _give_back(executor, self._path)  # warm for the next Parallel call
        self.reset_batch_stats()

    def _take(self) -> None:
        self._path = list(sys.path)
        self._executor = _take(self._n_jobs)

    def _discard(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            _stopped.add(executor)
            executor.terminate_workers()


register_parallel_backend(NAME, SubinterpreterBackend)
