"""ThreadsExecutor: a concurrent.futures.Executor whose workers are a ThreadPool's threads (in parallel on a free-threaded CPython)."""

from __future__ import annotations

import queue
import sys
import threading
from concurrent.futures import Executor, Future, InvalidStateError
from concurrent.futures.thread import BrokenThreadPool

from .backends.inputs import check_workers
from .backends.signals import InterruptSafeLock
from .backends.threads import ThreadPool

__all__ = ["ThreadsExecutor"]

_ECHO_EVERY = 0.02  # seconds between looks at what the workers printed
_STOP = None  # what a worker takes from the calls' queue as "no more calls"


class ThreadsExecutor(Executor):
    """Run callables in worker threads of this interpreter: on a free-threaded CPython (3.14t)
    they run in parallel, numpy and every extension built for free-threading included; on a
    CPython with a GIL they take turns (a RuntimeWarning says so once).

    The shape of ThreadPoolExecutor, and of SubinterpreterExecutor: ``max_workers`` threads
    (default os.cpu_count()) start on the first submit() and stay until shutdown(); each takes
    the next call as soon as it is free. Nothing is pickled: a call gets the caller's own
    objects and its Future the very object it returned (what a call does to a shared object,
    every worker and the caller see: ordering that is yours, as with any threads). What the calls
    print goes to this process's stdout/stderr.

    Beyond ThreadPoolExecutor: the workers are a ThreadPool's, so a ``with`` block that a
    Ctrl-C (a notebook's stop button) ends does not wait for the calls. The calls not started
    are cancelled, the running ones are interrupted (within milliseconds in Python code and in
    time.sleep; a call blocked in other C code is left to end in the background) and their
    Futures get the KeyboardInterrupt.

    Blocking and the GIL: submit() never blocks; Future.result() and shutdown(wait=True) block
    the calling thread. A background thread echoes what the workers print and fails the Futures
    of calls that can no longer run (BrokenThreadPool) if the workers end early.
    """

    def __init__(self, max_workers: int | None = None):
        self._max_workers = check_workers(max_workers, "max_workers")
        self._lock = InterruptSafeLock()
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: set[int] = set()  # the workers' thread idents (each adds its own)
        self._futures: set[Future] = set()  # not yet done; a done callback drops each
        self._shutdown = False
        self._stopping = False  # a with block ended on KeyboardInterrupt: interrupt the running calls
        self._stops_sent = False
        self._broken: str | None = None
        self._pool: ThreadPool | None = None
        self._collector: threading.Thread | None = None

    @property
    def max_workers(self) -> int:
        return self._max_workers

    def submit(self, fn, /, *args, **kwargs) -> Future:
        """Schedule ``fn(*args, **kwargs)``; return its Future at once."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        future: Future = Future()
        with self._lock.held():
            if self._broken is not None:
                raise BrokenThreadPool(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._start()
            self._futures.add(future)
            future.add_done_callback(self._futures.discard)
            self._calls.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submits. With ``cancel_futures`` the calls not yet started are cancelled;
        the others finish. With ``wait`` return when they have and the workers are gone (blocks);
        without it they end in the background."""
        with self._lock.held():
            self._shutdown = True
            if cancel_futures:
                self._cancel_pending()
            if self._pool is not None and not self._stops_sent:
                self._stops_sent = True
                for _ in range(self._max_workers):
                    self._calls.put(_STOP)
            collector = self._collector
        if wait and collector is not None:
            if threading.get_ident() in self._threads:
                raise RuntimeError(
                    "shutdown(wait=True) in one of the executor's own calls would wait for that call "
                    "itself: call shutdown(wait=False) there"
                )
            collector.join()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self._stop()
            return False
        return super().__exit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        state = "broken" if self._broken else "shut down" if self._shutdown else "running"
        return f"<ipy_parallel.ThreadsExecutor {self._max_workers} workers, {state}>"

    # -- internals ------------------------------------------------------------------------

    def _start(self) -> None:
        """(Lock held.) The workers, on the first submit."""
        if self._pool is not None:
            return
        self._pool = ThreadPool(self._max_workers)
        # Named from the function itself: a rename fails here, not in every worker.
        source = (
            f"from {serve_calls.__module__} import {serve_calls.__name__}\n{serve_calls.__name__}(calls, threads)\n"
        )
        inputs = {"calls": self._calls, "threads": self._threads}
        run = self._pool.submit(source, inputs, filename="<ThreadsExecutor>", stream=True)
        self._collector = threading.Thread(target=self._collect, args=(run,), name="ThreadsExecutor", daemon=True)
        self._collector.start()

    def _cancel_pending(self) -> None:
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                return
            if call is not _STOP:
                call[0].cancel()

    def _stop(self) -> None:
        """Cancel what has not started, interrupt what runs, wait for the workers a bounded time."""
        self.shutdown(wait=False, cancel_futures=True)
        with self._lock.held():
            self._stopping = True
            collector = self._collector
        if collector is not None:
            collector.join()

    def _collect(self, run) -> None:
        why = None
        try:
            while not run.wait(_ECHO_EVERY):
                _echo(run)
                if self._stopping:
                    stuck, _ = run.stop()
                    if stuck:  # their calls end in the background; their Futures are failed below
                        why = f"workers {stuck} could not be stopped (blocked in C code)"
                        break
            _echo(run)
            if why is None:
                results = run.results()
                why = next((f"worker {r.worker_id} stopped: {r.error}" for r in results if r.error), None)
        except BaseException as exc:  # the collector must end by failing what is left, never silently
            why = f"the executor's collector failed: {exc!r}"
        with self._lock.held():
            self._shutdown = True
            self._cancel_pending()
            left = [future for future in list(self._futures) if not future.done()]
            if left:
                self._broken = why or "the executor's workers ended with calls unfinished"
        for future in left:
            try:
                future.set_exception(BrokenThreadPool(self._broken))
            except InvalidStateError:  # done meanwhile
                pass
        self._pool.close()


def serve_calls(calls: queue.SimpleQueue, threads: set[int]) -> None:
    """A worker's loop (it runs as the worker's task): take a call, run it, answer its Future,
    until the executor says stop. A call's exception, KeyboardInterrupt from a stop included,
    is its Future's. ``threads`` gets this worker's thread ident."""
    threads.add(threading.get_ident())
    while True:
        call = calls.get()
        if call is _STOP:
            return
        _answer(*call)
        del call  # the worker holds no call's objects while it waits for the next


def _answer(future: Future, fn, args, kwargs) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        outcome, value = future.set_exception, exc
    else:
        outcome, value = future.set_result, result
    try:
        outcome(value)
    except InvalidStateError:  # failed by the collector meanwhile (its worker could not be stopped)
        pass


def _echo(run) -> None:
    for _, stream, text in run.output():
        (sys.stderr if stream == "stderr" else sys.stdout).write(text)
