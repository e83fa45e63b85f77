"""SubinterpreterExecutor: a concurrent.futures.Executor whose workers are the engine's sub-interpreters."""

from __future__ import annotations

import functools
import itertools
import os
import pickle
import sys
import threading
import time
from collections import deque
from concurrent.futures import Executor, Future
from types import BuiltinFunctionType, CodeType, FunctionType

import cloudpickle

from . import _engine
from ._wire import dumps
from ._wire.protocol import (
    EXECUTOR_END,
    EXECUTOR_FUNCTIONS_KEPT,
    EXECUTOR_SPIN,
    executor_call,
    read_executor_message,
)
from .backends.inputs import check_workers
from .backends.signals import InterruptSafeLock
from .backends.subinterpreter import Pool
from .exceptions import BrokenSubinterpreterPool
from .worker import serve_executor

__all__ = ["SubinterpreterExecutor"]

_names = itertools.count()
_WAIT = 0.05  # seconds the collector waits per look at the results queue (GIL released)
_ECHO_EVERY = 0.02  # seconds between looks at what the workers printed, while answers keep coming


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
        self._tasks, self._results, self._functions_at = f"{name}.tasks", f"{name}.results", f"{name}.function."
        self._lock = InterruptSafeLock()
        self._pending: deque[tuple[int, Future, tuple]] = deque()  # not yet handed to a worker
        self._running: dict[int, Future] = {}  # handed to a worker, not answered
        self._ids = itertools.count()
        self._functions: dict[int, tuple] = {}  # id(fn) -> (fn, fingerprint, function id), oldest first
        self._function_ids = itertools.count()
        self._retired: list[int] = []  # function ids still shared, to be dropped once no call is out
        self._scheduling = 0  # submit() and map() calls between taking a function id and queueing
        self._shutdown = False
        self._broken: str | None = None
        self._pool: Pool | None = None
        self._run = None  # the workers' one run: serve_executor in each
        self._collector: threading.Thread | None = None
        self._sentinels_sent = False

    @property
    def max_workers(self) -> int:
        return self._max_workers

    @property
    def broken(self) -> str | None:
        """Why the workers stopped with calls unfinished (every submit() now raises
        BrokenSubinterpreterPool), or None while they have not."""
        return self._broken

    def submit(self, fn, /, *args, **kwargs) -> Future:
        """Schedule ``fn(*args, **kwargs)``; return its Future at once. A call that cannot be
        pickled gets its Future failed with TypeError."""
        return self._schedule(fn, (args, kwargs), False)

    def map(
        self,
        fn,
        *iterables,
        timeout: float | None = None,
        chunksize: int | None = None,
        progress: bool = False,
    ):
        """``fn`` over the items of ``iterables`` (all taken at once, as Executor.map does), in
        parallel; returns an iterator of the results in order. ``chunksize``: calls per message
        to a worker; by default about four messages per worker, so that trivial calls cost about
        what a thread pool's do; give 1 for long calls of uneven length. The first exception a
        call raises is raised by the iterator, at that item's place; ``timeout`` bounds the whole
        map, as for Executor.map. ``progress=True``: a live display of the items done of all,
        with rate, ETA and the workers' CPU (in a notebook or terminal IPython; elsewhere a
        summary line), drawn by a thread of its own until the map is done."""
        if chunksize is not None and (isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1):
            raise ValueError(f"chunksize must be a positive int or None, got {chunksize!r}")
        end = None if timeout is None else time.monotonic() + timeout
        items = list(zip(*iterables))
        size = chunksize or max(1, len(items) // (4 * self._max_workers))
        futures = [self._schedule(fn, items[i : i + size], True) for i in range(0, len(items), size)]
        if progress and futures:
            from .ipython.map_progress import show_map

            sizes = [min(size, len(items) - i) for i in range(0, len(items), size)]
            show_map(list(zip(futures, sizes)), "SubinterpreterExecutor.map", self._pool.cpu_times)

        def results():
            try:
                futures.reverse()
                while futures:
                    future = futures.pop()
                    yield from future.result(None if end is None else end - time.monotonic())
            finally:
                for future in futures:
                    future.cancel()

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submits. With ``cancel_futures`` the calls not yet started are cancelled;
        the others finish. With ``wait`` (blocks, GIL released) return when they have and the
        workers are gone; without it they end in the background."""
        with self._lock.held():
            self._shutdown = True
            if cancel_futures:
                while self._pending:
                    future = self._pending.popleft()[1]
                    if future.cancel():  # cancel() alone leaves wait() and as_completed() waiting for it
                        future.set_running_or_notify_cancel()
            self._end_when_idle()
            collector = self._collector
        if wait and collector is not None:
            collector.join()

    def terminate_workers(self) -> None:
        """Stop now, as 3.14's ProcessPoolExecutor.terminate_workers does: shut down, cancel
        the calls not yet handed to a worker, and raise KeyboardInterrupt in the running ones
        (their futures get it). A call handed to the workers that none had taken yet (a worker
        still starting) gets BrokenSubinterpreterPool, which says the worker stopped. Every
        future is answered. Does not block; a call stuck in C code ends in the background."""
        self.shutdown(wait=False, cancel_futures=True)
        with self._lock.held():
            run = self._run
        if run is not None:
            run.interrupt()

    def __repr__(self) -> str:
        state = "broken" if self._broken else "shut down" if self._shutdown else "running"
        return f"<ipy_parallel.SubinterpreterExecutor {self._max_workers} workers, {state}>"

    # -- internals: everything below that touches the queues holds self._lock, except the
    # collector's waits, which must not block submit() ------------------------------------

    def _schedule(self, fn, arguments, many: bool) -> Future:
        """A Future for fn(*args, **kwargs) (arguments = (args, kwargs)) or, with ``many``, for
        [fn(*args) for args in arguments]."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        future: Future = Future()
        with self._lock.held():
            self._scheduling += 1  # a function id in hand: no retired one is dropped meanwhile
        try:
            function_id = self._function(fn)
            message = (function_id, dumps(arguments), many)
        except Exception as exc:
            message = None
            error = TypeError(
                f"{getattr(fn, '__qualname__', fn)!s}: the call cannot be sent to a "
                f"sub-interpreter, because it cannot be pickled: {exc}"
            )
        except BaseException:
            with self._lock.held():
                self._scheduling -= 1
            raise
        with self._lock.held():
            self._scheduling -= 1
            if self._broken is not None:
                raise BrokenSubinterpreterPool(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if message is None:
                future.set_exception(error)
                return future
            self._pending.append((next(self._ids), future, message))
            self._start()
            self._feed()
        return future

    def _function(self, fn) -> int:
        """The id under which ``fn`` is pickled and shared with the workers (each message names
        it; its pickle travels once). A function is pickled once per executor while what its pickle
        captured stays the same (cloudpickle sends a notebook's function by value, with the
        globals and closure cells it reads): rebinding such a global (re-running the cell that
        sets it) makes a new pickle; changing an object it reads in place does not (pass that
        object as an argument instead). Other callables are pickled for every call. The workers
        unpickle each pickle once."""
        fingerprint = _fingerprint(fn)
        if fingerprint is not None:
            with self._lock.held():
                known = self._functions.get(id(fn))
            if known is not None and known[0] is fn and _same(known[1], fingerprint):
                return known[2]
        blob = cloudpickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock.held():
            function_id = next(self._function_ids)
            _engine.shared_put(self._shared_name(function_id), blob)
            if fingerprint is None:
                self._retired.append(function_id)  # pickled for this call alone
            else:
                # Holding fn (and what it read) keeps id(fn) from meaning another function.
                replaced = self._functions.pop(id(fn), None)
                if replaced is not None:
                    self._retired.append(replaced[2])
                self._functions[id(fn)] = (fn, fingerprint, function_id)
                if len(self._functions) > EXECUTOR_FUNCTIONS_KEPT:
                    self._retired.append(self._functions.pop(next(iter(self._functions)))[2])
        return function_id

    def _start(self) -> None:
        if self._pool is not None:
            return
        self._pool = Pool(self._max_workers)
        # Named from the function itself: a rename fails here, not in every worker.
        source = (
            f"from {serve_executor.__module__} import {serve_executor.__name__}\n"
            f"{serve_executor.__name__}({self._tasks!r}, {self._results!r}, {self._functions_at!r})\n"
        )
        run = self._run = self._pool.submit(source, filename="<SubinterpreterExecutor>", stream=True)
        self._collector = threading.Thread(
            target=self._collect, args=(run,), name="SubinterpreterExecutor", daemon=True
        )
        self._collector.start()

    def _feed(self) -> None:
        """Hand pending calls to the workers, one per free worker: a call not yet handed over
        can still be cancelled (and the spinning waits make the hand-over quick)."""
        while self._pending and len(self._running) < self._max_workers:
            task_id, future, message = self._pending.popleft()
            if future.set_running_or_notify_cancel():
                self._running[task_id] = future
                _engine.queue_put(self._tasks, executor_call(task_id, *message))
        self._end_when_idle()

    def _end_when_idle(self) -> None:
        idle = not self._pending and not self._running
        if idle and not self._scheduling:  # no call out or being made names a retired function
            self._unshare(self._retired)
            self._retired.clear()
        if self._shutdown and idle and not self._sentinels_sent and self._pool is not None:
            self._sentinels_sent = True
            for _ in range(self._max_workers):
                _engine.queue_put(self._tasks, EXECUTOR_END)

    def _collect(self, run) -> None:
        try:
            echoed = time.monotonic()
            while True:
                answer = _engine.queue_get(self._results, _WAIT, EXECUTOR_SPIN)
                if answer is None or time.monotonic() - echoed > _ECHO_EVERY:
                    self._echo(run)
                    echoed = time.monotonic()
                if answer is not None:
                    self._answer(*read_executor_message(answer))
                elif run.done or (not self._sentinels_sent and len(run.busy_workers()) < self._max_workers):
                    break  # the workers ended, or one did on its own: the executor cannot go on
            self._echo(run)
            if not run.done:  # stop the others, who would wait for calls forever
                run.stop()
            results = run.results()
            # Every worker has ended: what they answered meanwhile (one may answer as another
            # ends, after the wait above saw nothing) is all here, and is delivered, not failed.
            while (answer := _engine.queue_get(self._results, 0, 0)) is not None:
                self._answer(*read_executor_message(answer))
            why = next((f"worker {r.worker_id} stopped: {r.error}" for r in results if r.error), None)
        except BaseException as exc:  # the collector must end by failing what is left, never silently
            why = f"the executor's collector failed: {exc!r}"
        with self._lock.held():
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
        with self._lock.held():
            self._unshare(self._retired + [known[2] for known in self._functions.values()])
            self._retired.clear()
            self._functions.clear()

    def _shared_name(self, function_id: int) -> str:
        """Where a function's pickle is shared (worker.serve_executor reads it there)."""
        return f"{self._functions_at}{function_id}"

    def _unshare(self, function_ids: list[int]) -> None:
        """(Lock held.) Drop these functions' shared pickles."""
        for function_id in function_ids:
            _engine.shared_drop(self._shared_name(function_id))

    def _answer(self, task_id: int, worker_id: int, ok: bool, blob: bytes, text: str) -> None:
        with self._lock.held():
            future = self._running.pop(task_id, None)
            self._feed()
        if future is None:
            return
        try:
            self._deliver(future, worker_id, ok, blob, text)
        except BaseException as exc:  # never a future left waiting
            if not future.done():
                future.set_exception(
                    RuntimeError(f"the answer of a call in worker {worker_id} could not be delivered: {exc!r}")
                )

    @staticmethod
    def _deliver(future: Future, worker_id: int, ok: bool, blob: bytes, text: str) -> None:
        try:
            value = pickle.loads(blob)
        except BaseException as exc:  # whatever unpickling raises (SystemExit too), the future gets it
            future.set_exception(
                RuntimeError(f"the result of a call in worker {worker_id} cannot be rebuilt here: {exc!r}")
            )
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


_MISSING = object()


def _fingerprint(fn) -> tuple | None:
    """What a pickle of ``fn`` captured, as objects to compare by identity: for a function its
    code, defaults, the globals its code reads and its closure cells' contents; () for a builtin
    function (pickled by name); None for any other callable, which is pickled every time."""
    if isinstance(fn, BuiltinFunctionType):
        return ()
    if type(fn) is not FunctionType:
        return None
    namespace = fn.__globals__
    cells = []
    for cell in fn.__closure__ or ():
        try:
            cells.append(cell.cell_contents)
        except ValueError:  # empty
            cells.append(_MISSING)
    return (
        fn.__code__,
        fn.__defaults__,
        fn.__kwdefaults__,
        *(namespace.get(name, _MISSING) for name in _global_names(fn.__code__)),
        *cells,
    )


@functools.lru_cache(maxsize=256)
def _global_names(code) -> tuple[str, ...]:
    """The names a code object (and the code nested in it) may read as globals."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names.update(_global_names(const))
    return tuple(sorted(names))


def _same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))
