"""Helpers for code running in a worker: its rank and size, a barrier across a run, queues shared with everyone.

Inside a ``%%parallel`` cell or a Pool run::

    from ipy_parallel import worker
    worker.rank(), worker.size()          # the same as worker_id, n_workers
    worker.barrier()                      # wait until every worker of the run gets here
    worker.Queue("results").put(value)    # read it in the main interpreter, or in another worker
    for item in worker.progress(items):   # the live display shows each worker's bar, rate and ETA

A Queue is named and belongs to the process: every interpreter that opens the same name (the
main one included: ``ipy_parallel.Queue("results").get()``) shares it. Items travel by pickle
(cloudpickle, so functions defined in a notebook go too). Blocking calls release the GIL and
wake every 50 ms, so an interrupt (Ctrl-C, the stop button, --timeout) still stops them.

This module loads in sub-interpreters (the engine's module is marked per-interpreter-GIL safe).
On the process and ipyparallel backends rank(), size() and progress() work, but the workers share no
memory: barrier() and Queue raise there.

serve_executor() is not for cells: it is the loop a SubinterpreterExecutor starts in each of its
workers.
"""

from __future__ import annotations

import itertools
import operator
import pickle
import sys
import threading
import time
from queue import Empty
from typing import Any

from ._wire import RUNTIME, dumps
from ._wire.protocol import (
    CONTEXT_MODULE,
    EXECUTOR_FUNCTIONS_KEPT,
    EXECUTOR_SPIN,
    executor_answer,
    read_executor_message,
)

__all__ = ["rank", "size", "barrier", "Queue", "Empty", "progress", "Progress", "in_worker", "serve_executor"]

_SLICE = 0.05  # seconds per wait with the GIL released; interrupts are seen between them


_engine = None  # the engine's C++ module, once _native() has loaded it


def _native():
    """The engine's C++ module, loaded on first use: a worker process or an ipyparallel engine
    that only asks rank(), size() or progress() never loads it (an engine may not be able to)."""
    global _engine
    if _engine is None:
        from . import _engine as engine

        _engine = engine
    return _engine


def in_worker() -> bool:
    """True when called in an ipy_parallel worker (of any backend)."""
    return _current() is not None


def _current():
    """This worker's context: its interpreter's, or, in a worker thread of an interpreter it
    shares (the threads backend), its thread's."""
    context = sys.modules.get(CONTEXT_MODULE)
    if context is None:
        runtime = sys.modules.get(RUNTIME)
        if runtime is not None:
            context = runtime.thread_contexts.get(threading.get_ident())
    return context


def _context(what: str):
    context = _current()
    if context is None:
        raise RuntimeError(
            f"ipy_parallel.worker.{what}: this is not an ipy_parallel worker; call it in "
            "code that runs in one (a %%parallel cell, Pool.run, SubinterpreterExecutor)"
        )
    return context


def rank() -> int:
    """This worker's id in its pool, 0..size()-1 (the cell's ``worker_id``)."""
    return _context("rank()").rank


def size() -> int:
    """How many workers its pool has (the cell's ``n_workers``)."""
    return _context("size()").size


def barrier(timeout: float | None = None) -> None:
    """Block until every worker of the current run (its ``targets``, if it has them) has called
    barrier(), then go on together.

    Raises threading.BrokenBarrierError (in every waiting worker) when a worker of the run
    raised, finished its task without calling barrier(), or waited longer than ``timeout``
    seconds: a barrier never hangs a run. The GIL is released while waiting.
    """
    context = _context("barrier()")
    if context.barrier is not None:  # worker threads of one interpreter (the threads backend)
        context.barrier.wait(context.rank, context.parties, timeout)
        return
    if context.group is None:
        raise RuntimeError(
            f"ipy_parallel.worker.barrier() needs workers in one process; the {context.backend} "
            "backend's workers are separate processes: use the default sub-interpreter backend"
        )
    deadline = None if timeout is None else time.monotonic() + timeout
    ticket = _native().barrier_arrive(context.group, context.parties)
    while not _native().barrier_wait(context.group, ticket, _slice(deadline)):
        if deadline is not None and time.monotonic() >= deadline:
            why = f"worker {context.rank} waited {timeout:g} s at the barrier"
            _native().barrier_abort(context.group, why)
            raise threading.BrokenBarrierError(why)


class Queue:
    """A named FIFO queue shared by every interpreter of this process (workers and main).

    ``put`` never blocks (the queue is unbounded); ``get`` blocks, with the GIL released, until
    an item comes or ``timeout`` passes (then queue.Empty). Items are pickled on put and
    unpickled on get, so each reader gets its own copy.
    """

    def __init__(self, name: str):
        if not isinstance(name, str) or not name:
            raise TypeError(f"Queue(name): name must be a non-empty str, not {name!r}")
        context = _current()
        if context is not None and context.group is None and context.backend != "threads":  # threads: one process
            raise RuntimeError(
                f"ipy_parallel.worker.Queue is shared memory; the {context.backend} backend's "
                "workers are separate processes: use the default sub-interpreter backend"
            )
        self.name = name

    def put(self, item: Any) -> None:
        """Append ``item`` (anything cloudpickle can pickle). Never blocks."""
        _native().queue_put(self.name, dumps(item))

    def get(self, timeout: float | None = None) -> Any:
        """Remove and return the oldest item, waiting up to ``timeout`` seconds (None: until one
        comes); raises queue.Empty at the timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            blob = _native().queue_get(self.name, _slice(deadline))
            if blob is not None:
                return pickle.loads(blob)
            if deadline is not None and time.monotonic() >= deadline:
                raise Empty(f"queue {self.name!r} stayed empty for {timeout:g} s")

    def get_nowait(self) -> Any:
        return self.get(0)

    def qsize(self) -> int:
        """Items waiting now."""
        return _native().queue_size(self.name)

    def clear(self) -> int:
        """Drop every waiting item; returns how many."""
        return _native().queue_clear(self.name)

    def __repr__(self) -> str:
        return f"<ipy_parallel Queue {self.name!r}, {self.qsize()} items>"


class Progress:
    """How far a worker has come: ``for item in worker.progress(items):`` or, counting by hand,
    ``bar = worker.progress(total=n)`` then ``bar.update(k)``. The live display of the run shows a
    bar per worker with done/total, rate and ETA, and its summary the whole run's rate.

    Nothing is reported per item: the engine reads the position when its display asks (5 times a
    second) and once as the task ends. Where the items know their length and their iterator says
    how many are left (list, tuple, range, dict, str, bytes, a numpy array), the loop runs that
    iterator itself, at no cost per item; any other iterable (a generator) is passed through a
    counter written in C (the engine's Counted), a few ns an item. Outside a worker it
    is a plain iterable, as tqdm is with its display off. The position may be read from another
    thread at any time: position() never blocks and takes no lock.
    """

    def __init__(self, iterable: Any = None, total: int | None = None):
        if iterable is None and total is None:
            raise TypeError("progress(): give the items to go through, progress(items), or a count, progress(total=n)")
        if total is not None:
            try:
                total = operator.index(total)
            except TypeError:
                raise TypeError(f"progress(total=...): a whole number of items, not {total!r}") from None
            if total < 0:
                raise ValueError(f"progress(total={total}): a count cannot be negative")
        elif iterable is not None and hasattr(iterable, "__len__"):
            try:
                total = len(iterable)
            except TypeError:  # an object whose __len__ refuses (a 0-d numpy array)
                total = None
        self.iterable, self.total = iterable, total
        self.n = 0  # what update() added
        self._left = None  # the loop's own iterator, whose length_hint is what is left
        self._counted = None  # or what reads the count of an iterator that cannot say what is left
        if iterable is None:
            _show(self)

    def __iter__(self):
        items = iter(self.iterable)
        if self.total is not None and operator.length_hint(items, -1) == self.total:
            self._left, self._counted = items, None
        else:
            items, self._counted = _counted(items)
            self._left = None
        _show(self)
        return items

    def __len__(self) -> int:
        if self.total is None:
            raise TypeError(
                f"len(progress(...)): the length of a {type(self.iterable).__name__} is not known; "
                "pass total= if you know it"
            )
        return self.total

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items done."""
        self.n += n

    def position(self) -> tuple[int, int | None]:
        """(items done, total or None if not known)."""
        done = self.n
        left, counted = self._left, self._counted
        if left is not None:
            done += self.total - operator.length_hint(left, 0)
        elif counted is not None:
            done += counted()
        return done, self.total

    def close(self) -> None:
        """Nothing to release: for code written for tqdm."""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        done, total = self.position()
        return f"<ipy_parallel progress {done}/{'?' if total is None else total}>"


def progress(iterable: Any = None, total: int | None = None) -> Progress:
    """Show how far this worker has come through ``iterable`` (or, with ``total=n``, as far as
    its ``update(k)`` calls say): see Progress. The latest progress() of a task is the one shown."""
    return Progress(iterable, total)


def _counted(items):
    """``items`` passed through a counter, and what reads its count: the engine's Counted (a few
    ns an item), or on an ipyparallel engine, where our C++ module may not load, the standard
    library's itertools.compress over itertools.count (tens of ns: it makes an int an item)."""
    context = _current()
    if context is not None and context.backend == "ipyparallel":
        count = itertools.count(1)
        return itertools.compress(items, count), lambda: int(repr(count)[6:-1]) - 1  # "count(k + 1)"
    counter = _native().Counted(items)
    return counter, lambda: counter.count


def _show(tracker: Progress) -> None:
    context = _current()
    if context is not None and hasattr(context, "progress"):
        context.progress = tracker


def _slice(deadline: float | None) -> float:
    return _SLICE if deadline is None else max(0.0, min(_SLICE, deadline - time.monotonic()))


def serve_executor(tasks: str, results: str, functions_at: str) -> None:
    """The loop a SubinterpreterExecutor runs in each of its workers, as its whole task there:
    take a call from the queue ``tasks``, make it, send its answer on ``results``, until the end
    message (the messages are ipy_parallel/_wire/protocol.py's). A call names its function by
    id; the pickle is shared once under ``functions_at`` + id (whatever its size, a call costs
    the same) and unpickled once per worker. Every
    message taken gets an answer, whatever the call or its exception does (an exception whose
    __str__ or pickling raises included), even when the pool's interrupt ends the loop, so that
    no future is left waiting; a KeyboardInterrupt the call raises itself is its answer, and the
    worker goes on."""
    me = rank()
    stopping = _context("serve_executor()").stop_requested
    get, put, loads = _native().queue_get, _native().queue_put, pickle.loads
    functions: dict[int, Any] = {}  # function id -> the function, newest last
    while True:
        # GIL released; back every _SLICE so that an interrupt is seen. The spin: calls come in
        # bursts, and a worker that yields a moment before it sleeps takes the next at once.
        blob = get(tasks, _SLICE, EXECUTOR_SPIN)
        if blob is None:
            continue
        message = read_executor_message(blob)
        if message is None:
            return
        task_id, function_id, args_blob, many = message
        stop = False
        try:
            fn = functions.get(function_id)
            if fn is None:
                function_blob = _native().shared_get(f"{functions_at}{function_id}")
                if function_blob is None:  # never: the executor keeps it while a call of it is out
                    raise RuntimeError(f"the function of call {task_id} is no longer shared")
                fn = functions[function_id] = loads(function_blob)
                del function_blob
                if len(functions) > EXECUTOR_FUNCTIONS_KEPT:
                    del functions[next(iter(functions))]
            if many:
                value = [fn(*args) for args in loads(args_blob)]
            else:
                args, kwargs = loads(args_blob)
                value = fn(*args, **kwargs)
            answer = (task_id, me, True, dumps(value), "")
        except BaseException as exc:  # the call's own error, SystemExit and KeyboardInterrupt included
            answer = _failure(task_id, me, exc)
            stop = isinstance(exc, KeyboardInterrupt) and stopping()
        put(results, executor_answer(*answer))
        if stop:
            raise KeyboardInterrupt  # the executor is being stopped: this worker serves no more


def call_each(calls: list) -> list:
    """``[fn(*args, **kwargs) for fn, args, kwargs in calls]``: a batch of joblib's calls as a
    SubinterpreterExecutor's worker makes it (ipy_parallel.joblib), without joblib there."""
    return [fn(*args, **kwargs) for fn, args, kwargs in calls]


# The last sentence of a call's ImportError for a module that cannot load in a sub-interpreter
# (ipy_parallel.joblib puts joblib's own advice in its place).
NOT_ISOLATED_ADVICE = (
    "Make this call in worker processes instead: concurrent.futures.ProcessPoolExecutor, or ipy_parallel.ProcessPool."
)


def _failure(task_id: int, me: int, exc: BaseException) -> tuple:
    """The answer for a call that raised; never raises itself."""
    kind = getattr(type(exc), "__qualname__", "BaseException")
    try:
        import traceback

        tb = exc.__traceback__  # from the call on: this file's frames mean nothing to its caller
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except BaseException:
        text = f"{kind}: <its traceback could not be formatted>\n"
    try:
        plain = sys.modules[RUNTIME].not_isolated_error(exc, NOT_ISOLATED_ADVICE)
        blob = dumps(exc if plain is None else plain)
    except BaseException:  # the exception itself cannot travel: what it says does
        try:
            said = str(exc)
        except BaseException:
            said = "<str() of it failed>"
        blob = pickle.dumps(RuntimeError(f"{kind}: {said}"))
    return task_id, me, False, blob, text
