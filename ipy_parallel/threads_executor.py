"""ThreadsExecutor: a concurrent.futures.Executor whose workers are a ThreadPool's threads (in parallel on a free-threaded CPython)."""

from __future__ import annotations

import itertools
import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import Executor, Future, InvalidStateError
from concurrent.futures.thread import BrokenThreadPool

from .backends.inputs import check_workers
from .backends.signals import InterruptSafeLock, interrupts_as_raised
from .backends.threads import ThreadPool

__all__ = ["ThreadsExecutor"]

_WAIT = 0.02  # seconds the collector waits per look at the answers (it echoes output between looks)
_STOP = None  # what a worker takes from the calls' queue as "no more calls"


class ThreadsExecutor(Executor):
    """Run callables in worker threads of this interpreter: on a free-threaded CPython (3.14t)
    they run in parallel, numpy and every extension built for free-threading included; on a
    CPython with a GIL they take turns (a RuntimeWarning says so once).

    The shape of ThreadPoolExecutor, and of SubinterpreterExecutor: ``max_workers`` threads
    (default os.cpu_count()) start on the first submit() and stay until shutdown(); each free
    worker takes the next call, and a Future can be cancelled until one does. Nothing is pickled:
    a call gets the caller's own objects and its Future the very object it returned or raised
    (what a call does to a shared object, every worker and the caller see: ordering that is
    yours, as with any threads). What the calls print goes to this process's stdout/stderr (at
    most 8 Mi characters per worker over the executor's life: its calls are one ThreadPool task).

    Beyond ThreadPoolExecutor: a ``with`` block that a Ctrl-C (a notebook's stop button) ends,
    in its body or as it waits for the calls at its end, does not wait for them. The calls not
    started are cancelled, the running ones are interrupted (within milliseconds in Python code
    and in time.sleep, looked up as the call runs: ``submit(time.sleep, 9)`` before the first
    submit started the workers passes the plain C sleep) and their Futures get a
    KeyboardInterrupt. A call blocked in other C code
    is left to end in the background (the block's end waits about 4 s for it); its Future fails
    with BrokenThreadPool, as every unfinished one does if the workers end otherwise.

    Blocking and the GIL: submit() returns at once (the first one after the worker threads have
    started); Future.result() and shutdown(wait=True) block the calling thread. A background
    thread resolves the Futures (the workers never touch them, so an interrupt of a stop cannot
    land inside a Future's own lock) and echoes what the workers print.
    """

    def __init__(self, max_workers: int | None = None):
        self._max_workers = check_workers(max_workers, "max_workers")
        self._lock = InterruptSafeLock()
        self._pending: deque[tuple[int, Future, tuple]] = deque()  # not yet handed to a worker
        self._running: dict[int, Future] = {}  # handed to a worker, not answered
        self._ids = itertools.count()
        self._calls: queue.SimpleQueue = queue.SimpleQueue()  # to the workers: (id, fn, args, kwargs) or _STOP
        self._answers: queue.SimpleQueue = queue.SimpleQueue()  # from them: (id, ok, value)
        self._threads: set[int] = set()  # the thread idents of the workers serving calls
        self._shutdown = False
        self._stopping = False  # a with block ended on KeyboardInterrupt: interrupt the running calls
        self._stops_sent = False
        self._broken: str | None = None
        self._pool: ThreadPool | None = None
        self._collector: _Collector | None = None

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
            self._pending.append((next(self._ids), future, (fn, args, kwargs)))
            self._feed()
        return future

    def map(self, fn, *iterables, timeout: float | None = None, chunksize: int = 1, progress: bool = False, **kwargs):
        """Executor.map. ``progress=True``: a live display of the calls done of all, with rate,
        ETA and the workers' CPU (in a notebook or terminal IPython; elsewhere a summary line),
        drawn by a thread of its own until the map is done; the items are then all taken at
        once (no ``buffersize``)."""
        if not progress:
            return super().map(fn, *iterables, timeout=timeout, chunksize=chunksize, **kwargs)
        if kwargs:
            raise TypeError(f"map(progress=True) takes every item at once: {', '.join(kwargs)} cannot go with it")
        from .ipython.map_progress import show_map

        end = None if timeout is None else time.monotonic() + timeout
        futures = [self.submit(fn, *args) for args in zip(*iterables)]
        if futures:
            show_map([(f, 1) for f in futures], "ThreadsExecutor.map", self._pool.cpu_times)

        def results():
            try:
                futures.reverse()
                while futures:
                    yield futures.pop().result(None if end is None else end - time.monotonic())
            finally:
                for future in futures:
                    future.cancel()

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submits. With ``cancel_futures`` the calls not yet started are cancelled;
        the others finish. With ``wait`` return when they have and the workers are gone (blocks;
        refused in one of the executor's own calls, which would wait for itself); without it
        they end in the background."""
        with self._lock.held():
            self._shutdown = True
            if cancel_futures:
                self._cancel_pending()
            self._end_when_idle()
            collector = self._collector
        if wait and collector is not None:
            if threading.get_ident() in self._threads:
                raise RuntimeError(
                    "shutdown(wait=True) in one of the executor's own calls would wait for that call "
                    "itself: call shutdown(wait=False) there"
                )
            _wait_for(collector)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self._stop()
            return False
        try:
            self.shutdown(wait=True)
        except KeyboardInterrupt:  # pressed while the block's end waits for the calls
            self._stop()
            raise
        return False

    def __repr__(self) -> str:
        state = "broken" if self._broken else "shut down" if self._shutdown else "running"
        return f"<ipy_parallel.ThreadsExecutor {self._max_workers} workers, {state}>"

    # -- internals: what touches _pending, _running and the flags holds self._lock ----------

    def _start(self) -> None:
        """(Lock held.) The workers and the collector, on the first submit: both or neither."""
        if self._pool is not None:
            return
        pool = ThreadPool(self._max_workers)
        try:
            # Named from the function itself: a rename fails here, not in every worker.
            source = f"from {serve_calls.__module__} import {serve_calls.__name__}\n{serve_calls.__name__}(calls, answers, threads)\n"
            inputs = {"calls": self._calls, "answers": self._answers, "threads": self._threads}
            run = pool.submit(source, inputs, filename="<ThreadsExecutor>", stream=True)
            collector = _Collector(target=self._collect, args=(pool, run), name="ThreadsExecutor", daemon=True)
            collector.start()
        except BaseException:  # a Ctrl-C: workers that began serving end on a stop of their own queue
            calls, self._calls = self._calls, queue.SimpleQueue()
            for _ in range(self._max_workers):
                calls.put(_STOP)
            pool.close()
            raise
        self._pool, self._collector = pool, collector

    def _feed(self) -> None:
        """(Lock held.) Hand pending calls to the workers, one per free worker: a call not yet
        handed over can still be cancelled."""
        while self._pending and len(self._running) < self._max_workers:
            task_id, future, call = self._pending.popleft()
            if future.set_running_or_notify_cancel():
                self._running[task_id] = future
                self._calls.put((task_id, *call))
        self._end_when_idle()

    def _cancel_pending(self) -> None:
        """(Lock held.) Cancelled, and said so to whoever waits (concurrent.futures.wait, as_completed)."""
        while self._pending:
            _cancel(self._pending.popleft()[1])

    def _end_when_idle(self) -> None:
        """(Lock held.) Once shut down with nothing left to run, or stopping: the workers end."""
        idle = not self._pending and not self._running
        if self._shutdown and (idle or self._stopping) and not self._stops_sent and self._pool is not None:
            self._stops_sent = True
            for _ in range(self._max_workers):
                self._calls.put(_STOP)

    def _stop(self) -> None:
        """Cancel what has not started, interrupt what runs, wait for the workers a bounded time."""
        with self._lock.held():
            self._shutdown = self._stopping = True
            self._cancel_pending()
            self._end_when_idle()
            collector = self._collector
        if collector is not None and threading.get_ident() not in self._threads:
            _wait_for(collector)

    def _collect(self, pool: ThreadPool, run) -> None:
        why, stopped = None, False
        try:
            echoed = time.monotonic()
            while True:
                try:
                    answer = self._answers.get(timeout=_WAIT)
                except queue.Empty:
                    answer = None
                if answer is not None:
                    self._answer(*answer)
                if answer is None or time.monotonic() - echoed > _WAIT:
                    _echo(run)
                    echoed = time.monotonic()
                if answer is not None:
                    continue
                if run.done:
                    break
                if not self._stops_sent and len(run.busy_workers()) < self._max_workers:
                    why = "a worker of the executor ended on its own"  # the others would wait for calls forever
                    run.stop()
                    break
                if self._stopping:
                    stuck, _ = run.stop()
                    if stuck:  # their calls end in the background; their Futures are failed below
                        why = f"worker{'s' if len(stuck) > 1 else ''} {stuck} could not be stopped (blocked in C code)"
                        break
            _echo(run)
            if why is None:
                stopped = self._stopping
                results = run.results()
                why = next((f"worker {r.worker_id} stopped: {r.error}" for r in results if r.error), None)
        except BaseException as exc:  # the collector must end by failing what is left, never silently
            why, stopped = f"the executor's collector failed: {exc!r}", False
        while True:  # the answers of calls that ended as the workers did
            try:
                self._answer(*self._answers.get_nowait())
            except queue.Empty:
                break
        with self._lock.held():
            self._shutdown = True
            self._cancel_pending()
            left = list(self._running.values())
            self._running.clear()
            if left and not stopped:
                self._broken = why or "the executor's workers ended with calls unfinished"
            self._stopping = True  # a worker left running in C takes a _STOP once it is back
            self._end_when_idle()
        for future in left:
            # Stopped: the stop's interrupt, sent again until the worker ends, can land in the
            # worker's own code around the call, before it answered; the call was stopped all the same.
            error = (
                KeyboardInterrupt("stopped: the executor's with block ended on KeyboardInterrupt")
                if stopped
                else BrokenThreadPool(self._broken)
            )
            try:
                future.set_exception(error)
            except InvalidStateError:  # done meanwhile
                pass
        pool.close()

    def _answer(self, task_id: int, ok: bool, value) -> None:
        with self._lock.held():
            future = self._running.pop(task_id, None)
            self._feed()
        if future is None:  # failed already (its worker could not be stopped)
            return
        try:
            future.set_result(value) if ok else future.set_exception(value)
        except InvalidStateError:
            pass


def serve_calls(calls: queue.SimpleQueue, answers: queue.SimpleQueue, threads: set[int]) -> None:
    """A worker's loop (it runs as the worker's task): take a call, run it, put its answer,
    until the executor says stop. ``threads`` holds this thread's ident meanwhile."""
    me = threading.get_ident()
    threads.add(me)
    try:
        while True:
            call = calls.get()
            if call is _STOP:
                return
            answers.put(_call(*call))
            del call  # the worker holds no call's objects while it waits for the next
    finally:
        threads.discard(me)


def _call(task_id: int, fn, args, kwargs) -> tuple:
    try:
        return task_id, True, fn(*args, **kwargs)
    except BaseException as exc:  # KeyboardInterrupt from a stop too: the call's answer
        del fn, args, kwargs  # the exception's traceback keeps this frame: not the call's objects
        return task_id, False, exc


class _Collector(threading.Thread):
    """The thread that resolves the Futures; ``ended`` is set as it ends. Waited for through
    ``ended``, not join(): on 3.12 a Ctrl-C that interrupts join() marks the thread as ended while
    it still runs (threading's bpo-45274 handling), and the next join() returns at once."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.ended = threading.Event()

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.ended.set()


def _wait_for(collector: _Collector) -> None:
    """Until the collector has ended; a Ctrl-C meanwhile is raised (see interrupts_as_raised)."""
    with interrupts_as_raised():
        collector.ended.wait()


def _cancel(future: Future) -> None:
    """Future.cancel() alone leaves wait() and as_completed() waiting for it: an executor tells them."""
    if future.cancel():
        future.set_running_or_notify_cancel()


def _echo(run) -> None:
    for _, stream, text in run.output():
        (sys.stderr if stream == "stderr" else sys.stdout).write(text)
