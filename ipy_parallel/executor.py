"""SubinterpreterExecutor: a concurrent.futures.Executor whose workers are the engine's sub-interpreters."""

from __future__ import annotations

import itertools
import marshal
import os
import pickle
import sys
import threading
from collections import deque
from concurrent.futures import Executor, Future

import cloudpickle

from . import _engine
from .backends.base import check_workers
from .backends.subinterpreter import Pool
from .exceptions import BrokenSubinterpreterPool

__all__ = ["SubinterpreterExecutor"]

_names = itertools.count()
_WAIT = 0.05  # seconds the collector waits per look at the results queue (GIL released)


class SubinterpreterExecutor(Executor):
    """Run callables in isolated sub-interpreters, each with its own GIL: true parallelism in one
    process, on CPython 3.12+ (the shape of 3.14's InterpreterPoolExecutor).

    ``max_workers`` sub-interpreters (default os.cpu_count()) start on the first submit() and
    stay warm until shutdown(). Each takes the next call as soon as it is free. Callables and
    arguments travel by cloudpickle, so functions and classes defined in ``__main__`` (a
    notebook, a script) work; results and exceptions come back by pickle. A worker keeps its
    module imports between calls. Modules that cannot load in a sub-interpreter (numpy, most
    compiled extensions) fail the call that imports them with ImportError.

    Blocking and the GIL: submit() never blocks; Future.result() and shutdown(wait=True) block
    the calling thread with the GIL released. A background thread of this process collects the
    results and prints what the workers print. Use it in a ``with`` block, or call shutdown():
    at interpreter exit the workers are interrupted.
    """

    def __init__(self, max_workers: int | None = None):
        self._max_workers = check_workers(max_workers, "max_workers")
        name = f"ipy_parallel.executor.{os.getpid()}.{next(_names)}"
        self._tasks, self._results = f"{name}.tasks", f"{name}.results"
        self._lock = threading.Lock()
        self._pending: deque[tuple[int, Future, bytes]] = deque()  # not yet handed to a worker
        self._running: dict[int, Future] = {}  # handed to a worker, not answered
        self._ids = itertools.count()
        self._shutdown = False
        self._broken: str | None = None
        self._pool: Pool | None = None
        self._collector: threading.Thread | None = None
        self._sentinels_sent = False

    @property
    def max_workers(self) -> int:
        return self._max_workers

    def submit(self, fn, /, *args, **kwargs) -> Future:
        """Schedule ``fn(*args, **kwargs)``; return its Future at once. A call that cannot be
        pickled gets its Future failed with TypeError."""
        if not callable(fn):
            raise TypeError(f"submit(fn, ...): fn must be callable, not {type(fn).__name__}")
        future: Future = Future()
        try:
            call = cloudpickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            call = None
            error = TypeError(f"{getattr(fn, '__qualname__', fn)!s}: the call cannot be sent to a "
                              f"sub-interpreter, because it cannot be pickled: {exc}")
        with self._lock:
            if self._broken is not None:
                raise BrokenSubinterpreterPool(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if call is None:
                future.set_exception(error)
                return future
            self._pending.append((next(self._ids), future, call))
            self._start()
            self._feed()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submits. With ``cancel_futures`` the calls not yet started are cancelled;
        the others finish. With ``wait`` (blocks, GIL released) return when they have and the
        workers are gone; without it they end in the background."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._pending:
                    self._pending.popleft()[1].cancel()
            self._end_when_idle()
            collector = self._collector
        if wait and collector is not None:
            collector.join()

    def __repr__(self) -> str:
        state = "broken" if self._broken else "shut down" if self._shutdown else "running"
        return f"<ipy_parallel.SubinterpreterExecutor {self._max_workers} workers, {state}>"

    # -- internals: everything below that touches the queues holds self._lock, except the
    # collector's waits, which must not block submit() ------------------------------------

    def _start(self) -> None:
        if self._pool is not None:
            return
        self._pool = Pool(self._max_workers)
        source = f"from ipy_parallel import worker\nworker._serve({self._tasks!r}, {self._results!r})\n"
        run = self._pool.submit(source, filename="<SubinterpreterExecutor>", stream=True)
        self._collector = threading.Thread(target=self._collect, args=(run,), name="SubinterpreterExecutor",
                                           daemon=True)
        self._collector.start()

    def _feed(self) -> None:
        """Hand pending calls to the workers, one per free worker: a call not yet handed over
        can still be cancelled."""
        while self._pending and len(self._running) < self._max_workers:
            task_id, future, call = self._pending.popleft()
            if future.set_running_or_notify_cancel():
                self._running[task_id] = future
                _engine.queue_put(self._tasks, pickle.dumps((task_id, call)))
        self._end_when_idle()

    def _end_when_idle(self) -> None:
        if self._shutdown and not self._pending and not self._running and not self._sentinels_sent \
                and self._pool is not None:
            self._sentinels_sent = True
            for _ in range(self._max_workers):
                _engine.queue_put(self._tasks, pickle.dumps(None))

    def _collect(self, run) -> None:
        try:
            while True:
                answer = _engine.queue_get(self._results, _WAIT)
                self._echo(run)
                if answer is not None:
                    self._answer(*marshal.loads(answer))
                elif run.done or (not self._sentinels_sent and len(run.busy_workers()) < self._max_workers):
                    break  # the workers ended, or one did on its own: the executor cannot go on
            self._echo(run)
            if not run.done:  # stop the others, who would wait for calls forever
                run.stop()
            results = run.results()
            why = next((f"worker {r.worker_id} stopped: {r.error}" for r in results if r.error), None)
        except BaseException as exc:  # the collector must end by failing what is left, never silently
            why = f"the executor's collector failed: {exc!r}"
        with self._lock:
            if self._running or self._pending or why:
                self._broken = why or "the executor's workers ended with calls unfinished"
            left = list(self._running.values()) + [f for _, f, _ in self._pending]
            self._running.clear()
            self._pending.clear()
        for future in left:
            if not future.done():
                future.set_exception(BrokenSubinterpreterPool(self._broken))
        self._pool.close()
        _engine.queue_clear(self._tasks)
        _engine.queue_clear(self._results)

    def _answer(self, task_id: int, worker_id: int, ok: bool, blob: bytes, text: str) -> None:
        with self._lock:
            future = self._running.pop(task_id, None)
            self._feed()
        if future is None:
            return
        try:
            self._deliver(future, worker_id, ok, blob, text)
        except BaseException as exc:  # never a future left waiting
            if not future.done():
                future.set_exception(RuntimeError(f"the answer of a call in worker {worker_id} could not be "
                                                  f"delivered: {exc!r}"))

    @staticmethod
    def _deliver(future: Future, worker_id: int, ok: bool, blob: bytes, text: str) -> None:
        try:
            value = pickle.loads(blob)
        except BaseException as exc:  # whatever unpickling raises (SystemExit too), the future gets it
            future.set_exception(RuntimeError(f"the result of a call in worker {worker_id} cannot be rebuilt "
                                              f"here: {exc!r}"))
            return
        if ok:
            future.set_result(value)
            return
        if not isinstance(value, BaseException):  # an exception whose pickle rebuilds something else
            value = RuntimeError(f"the call raised an exception that was rebuilt here as a {type(value).__name__}")
        value.add_note(f"raised in sub-interpreter worker {worker_id}:\n{text.rstrip()}")
        future.set_exception(value)

    @staticmethod
    def _echo(run) -> None:
        """What the calls print goes to this process's stdout/stderr, as a process pool's would."""
        for _, stream, text in run.output():
            (sys.stderr if stream == "stderr" else sys.stdout).write(text)
