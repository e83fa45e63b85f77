"""The threads backend's Engine: each worker a thread of this (the kernel's) interpreter, with a namespace of its own.

Design (issue 21, first step). On a free-threaded CPython (3.14t) these threads run Python in
parallel; on a GIL build the same code works, but the workers take turns on the one GIL.

- One runtime, N workers. The shipped runtime (ipy_parallel/_wire/runtime.py) is installed once
  in this interpreter; each worker thread calls its setup() with ``namespace=`` (a dict of its
  own, which lasts across cells) and ``route=``. Given a namespace, the runtime leaves what
  belongs to the whole interpreter alone: it does not replace time.sleep, sys.stdout/stderr,
  __main__ or the context module, a reset does not restore builtins (they are the kernel's), and
  values come back as they are (protocol RAW: the object itself, never pickled).
- Output. While a pool is open, sys.stdout and sys.stderr are _Router objects: a write from a
  worker thread goes to that worker's stream (the runtime's, bounded to OUTPUT_LIMIT a task),
  any other thread's to the stream the router replaced (the kernel's). A run's start wraps a
  stream that replaced the router since (IPython capturing a cell's output, say) in a router of
  its own, leaving the old one intact for whoever saved it; the last pool to close unwraps them.
  A cell that assigns sys.stdout itself replaces it for the whole process: the worker puts the
  router back after its task.
- Interrupts. PyThreadState_SetAsyncExc raises KeyboardInterrupt in a worker's thread at its
  next bytecode, but not inside a C call. time.sleep is therefore, while a pool is open, a
  function that dispatches by thread: a worker's sleep waits on a lock interrupt() releases (so
  it ends within ms), every other thread's is the sleep it replaced. A worker blocked in other C
  code (select, a lock, I/O) stops when that returns; close() waits a bounded time and abandons
  it (a daemon thread, never joined). The exception can land anywhere in the worker's thread,
  the engine's own code included: a task stays the worker's until its record is in, the
  worker cancels a pending one (under the lock interrupt() takes) once its task ended, and its
  locks are held through InterruptSafeLock (on 3.14 it can land between a with statement's
  __enter__ and its block, gh-148874). The same goes for a cell's own `with lock:`.
- Results: the object itself (RAW); an error's exception is still pickled, as on every backend.
- Inputs by reference: the pool lends every input (BasePool._lendable), so pack() pickles
  nothing and the runtime binds the objects themselves; an object pushed to 8 workers is one
  object, shared (mutations are seen by all: as with threads, that is the user's to order).
- CPU per worker: the thread's CPU clock (pthread_getcpuclockid), read from any thread.
- worker.barrier(): a _Barrier per engine, with the C++ rendezvous's rules (a run's barrier breaks
  for all when a worker raised, finished without arriving, or waited past its timeout). Queue
  is the C++ one (one process). The runtime keeps each worker's context in ``thread_contexts``.
"""

from __future__ import annotations

import _thread
import builtins
import ctypes
import os
import sys
import threading
import time
import warnings

from ..._wire import RUNTIME, install, protocol, shipped_sources
from .. import gil_enabled
from ..engine import EngineBase
from ..signals import InterruptSafeLock, wait_for

__all__ = ["ThreadEngine"]

_PACKAGE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_START_TIMEOUT = 10.0  # seconds for the worker threads to be ready
_STOP_GRACE = 1.0  # seconds interrupted workers get to stop before close() lets them go

# Raises an exception in another thread at its next bytecode (NULL: cancels a pending one).
_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.c_void_p)
_set_async_exc.restype = ctypes.c_int


def _open(gate) -> None:
    try:
        gate.release()
    except RuntimeError:  # open already
        pass


def _raise_in(ident: int) -> None:
    _set_async_exc(ident, id(KeyboardInterrupt))  # the class: immortal, no reference to keep


def _cancel_in(ident: int) -> None:
    _set_async_exc(ident, None)


# -- what the open pools share in this interpreter -------------------------------------------------

_shared = InterruptSafeLock()  # guards what follows; worker threads take it too
_open_engines = 0
_routes: dict[int, tuple] = {}  # worker thread id -> (stdout, stderr) of its current task
_sleeps: dict[int, object] = {}  # worker thread id -> its interruptible sleep
_routers: list = [None, None]  # the stdout and stderr routers put in last
_replaced_sleep = None  # time.sleep before the first pool opened


class _Router:
    """sys.stdout or sys.stderr while a ThreadPool is open: a worker thread's writes go to its
    own stream, every other thread's to the stream this replaced (the kernel's)."""

    def __init__(self, index: int, fallback):
        self._index = index
        self.fallback = fallback

    def _target(self):
        streams = _routes.get(threading.get_ident())
        return self.fallback if streams is None else streams[self._index]

    def write(self, text):
        return self._target().write(text)

    def flush(self):
        return self._target().flush()

    def __getattr__(self, name):  # fileno, encoding, close, isatty, ...: the thread's own stream
        return getattr(self._target(), name)


def _dispatching_sleep(seconds):
    """time.sleep while a ThreadPool is open: a worker's own, else the one it replaced."""
    own = _sleeps.get(threading.get_ident())
    return (own or _replaced_sleep)(seconds)


def _routed() -> bool:
    """sys.stdout and sys.stderr are routers (looked at without the lock; _put_routers looks again under it)."""
    return type(sys.stdout) is _Router and type(sys.stderr) is _Router


def _put_routers(after_task: bool = False) -> None:
    """Route sys.stdout/stderr by thread again. At a run's start, a stream that replaced the
    router (IPython capturing a cell's output, say) gets a router of its own around it: the one
    it replaced is left as it is, for whoever saved it to put back. After a task, what replaced
    it was likely the cell (a worker's sys.stdout is the process's): the last router goes back."""
    for index, name in enumerate(("stdout", "stderr")):
        current = getattr(sys, name)
        if type(current) is _Router:
            continue
        if after_task and _routers[index] is not None:
            setattr(sys, name, _routers[index])
        else:
            _routers[index] = _Router(index, current)
            setattr(sys, name, _routers[index])


def _acquire() -> None:
    global _open_engines, _replaced_sleep
    with _shared.held():
        _open_engines += 1
        if _open_engines > 1:
            return
        _put_routers()
        if time.sleep is not _dispatching_sleep:
            _replaced_sleep = time.sleep
            time.sleep = _dispatching_sleep


def _release() -> None:
    global _open_engines
    with _shared.held():
        _open_engines -= 1
        if _open_engines:
            return
        for name in ("stdout", "stderr"):
            current = getattr(sys, name)
            while type(current) is _Router:
                current = current.fallback
            setattr(sys, name, current)
        if time.sleep is _dispatching_sleep:
            time.sleep = _replaced_sleep


def _runtime():
    """The shipped runtime, installed once in this interpreter."""
    with _shared.held():
        module = sys.modules.get(RUNTIME)
        return module if module is not None else install(shipped_sources())


# -- the engine ----------------------------------------------------------------------------------

_SLICE = 0.05  # seconds a barrier's waiter blocks before it looks at its deadline again


class _Barrier:
    """worker.barrier() among the threads of one run, by the C++ rendezvous's rules for workers
    with interpreters of their own: every party arrives, or the barrier breaks for all, saying
    why (a worker raised, finished its task without arriving, or waited past its timeout). A
    waiter blocks on a bare lock of its own, never a Condition: an interrupt may land anywhere in
    a worker thread (see _Worker.gate), and interrupt() opens the gates so that it lands at once."""

    def __init__(self, guard: InterruptSafeLock):
        self._guard = guard  # the engine's lock
        self.reset()

    def reset(self) -> None:
        """(The engine's lock held.) A new run: nobody has arrived, nothing broke."""
        self._generation = self._arrived = 0
        self._left: str | None = None  # why a party will never arrive
        self._broken: str | None = None
        self._excused: set[int] = set()
        self._gates: list = []

    def wake(self) -> None:
        """(The engine's lock held.) Let every waiter look again (an interrupt, a close)."""
        for gate in self._gates:
            _open(gate)

    def abort(self, why: str) -> None:
        """(The engine's lock held.)"""
        if self._broken is None:
            self._broken = why
        self.wake()

    def leave(self, rank: int, raised: str | None) -> None:
        """(The engine's lock held.) Worker ``rank`` ended its task."""
        if rank in self._excused or self._left is not None:
            return
        ended = f"raised {raised}" if raised else "finished its task without reaching the barrier"
        self._left = f"worker {rank} {ended}"
        if self._arrived:  # someone waits for it: in vain
            self.abort(self._left)

    def excuse(self, rank: int) -> None:
        with self._guard.held():
            self._excused.add(rank)

    def wait(self, rank: int, parties: int, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        gate = _thread.allocate_lock()
        gate.acquire()
        with self._guard.held():
            if self._broken is None and self._left is not None:  # that worker will never arrive
                self._broken = self._left
            if self._broken is not None:
                raise threading.BrokenBarrierError(self._broken)
            ticket = self._generation
            self._arrived += 1
            if self._arrived >= parties:
                self._arrived = 0
                self._generation += 1
                self.wake()
                self._gates = []
                return
            self._gates.append(gate)
        while True:
            left = _SLICE if deadline is None else min(_SLICE, deadline - time.monotonic())
            gate.acquire(True, max(left, 0.0))
            with self._guard.held():
                if self._generation > ticket:
                    return
                if self._broken is not None:
                    raise threading.BrokenBarrierError(self._broken)
                if deadline is not None and time.monotonic() >= deadline:
                    why = f"worker {rank} waited {timeout:g} s at the barrier"
                    self.abort(why)
                    raise threading.BrokenBarrierError(why)


class _Worker:
    """One worker thread, its namespace, and its handshake with the engine (under its condition)."""

    def __init__(self, worker_id: int):
        self.id = worker_id
        self.namespace = {"__name__": "__main__", "__builtins__": builtins}
        self.task: tuple | None = None  # the current run's, until its record is in
        self.running = False  # a task of the current run is in progress: interrupt() may raise in it
        self.stopping = False  # interrupted: its sleeps end at once
        # Locked while its sleeps may sleep; interrupt() unlocks it. A bare lock, not an Event:
        # an interrupt landing inside Event.wait's Python code could leave the Event's lock held.
        self.gate = _thread.allocate_lock()
        self.exit = False
        self.ready = threading.Event()
        self.ident = 0
        self.cpu_last = 0.0
        self.position: tuple[int, int | None] | None = None  # in its task's worker.progress()
        self.thread: threading.Thread | None = None

    def cpu_time(self) -> float:
        """CPU seconds of its thread, read from any thread; the last reading once it has ended
        (a joined thread's pthread_t is gone: its clock id must not be asked for)."""
        if self.thread is None or not self.thread.is_alive():
            return self.cpu_last
        try:
            self.cpu_last = time.clock_gettime(time.pthread_getcpuclockid(self.ident))
        except (OSError, AttributeError, OverflowError):
            pass
        return self.cpu_last


class ThreadEngine(EngineBase):
    """The Engine (see backends/engine.py) over n threads of this interpreter."""

    _kind = "ThreadPool"

    @staticmethod
    def prepare() -> None:
        """Install the shipped runtime in this interpreter now, in the calling thread: what
        starting an engine imports (see BasePool.prepare; ~6 ms, once)."""
        _runtime()

    def __init__(self, n: int):
        super().__init__(n)
        # The worker threads take this lock too, and a KeyboardInterrupt this engine raises in one
        # may land between a with statement's __enter__ and its block (3.14, gh-148874): held
        # through InterruptSafeLock, it is never left held.
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        self._guard = InterruptSafeLock(lock)
        self._barrier = _Barrier(self._guard)
        self._pending = 0
        self._streaming = False
        self._records: list = []
        self._outputs: list[tuple[list[str], list[str]]] = []
        self._queue: list[list[list]] = []
        self._abandoned: list[tuple[int, str]] = []
        self._gil_said = gil_enabled()  # nothing to say if it was on from the start
        self._modules_before = 0  # len(sys.modules) at the run's start
        self._workers = [_Worker(i) for i in range(n)]
        self._runtime = runtime = _runtime()
        _acquire()  # close() releases it, from here on
        try:
            for w in self._workers:
                w.thread = threading.Thread(
                    target=self._serve, args=(w, runtime), daemon=True, name=f"ipy_parallel thread worker {w.id}"
                )
                w.thread.start()
            deadline = time.monotonic() + _START_TIMEOUT
            for w in self._workers:
                while not w.ready.wait(0.05):  # in slices, so that Ctrl-C is seen
                    if time.monotonic() > deadline or not w.thread.is_alive():
                        raise RuntimeError(f"worker thread {w.id} did not start")
        except BaseException:
            self.close(0.0)
            raise

    # -- the Engine ------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._pending > 0

    @property
    def abandoned(self) -> list[tuple[int, str]]:
        return list(self._abandoned)

    def start(self, source, filename, payloads, stream=False, wait=0.0, lent=()) -> bool:
        """Hand the task to every worker thread, then wait up to ``wait`` seconds; True when done."""
        if payloads and len(payloads) not in (1, self.size):
            raise ValueError(f"expected 0, 1 or {self.size} payloads, got {len(payloads)}")
        n = self.size
        each = len(payloads) == n and n > 1
        if not _routed():
            with _shared.held():
                _put_routers()  # IPython may have replaced them since the last run
        if not self._gil_said:  # a count, not a copy: new modules come last (a dict keeps its order)
            self._modules_before = len(sys.modules)
        with self._guard.held():
            self._check_startable()
            self._records, self._outputs = [None] * n, [([], []) for _ in range(n)]
            self._queue = [[] for _ in range(n)]
            self._pending, self._streaming = n, bool(stream)
            self._barrier.reset()
            for w in self._workers:
                k = w.id if each else 0
                payload = payloads[k] if payloads else None
                w.task = (source, filename, payload, lent[k] if lent else ())
                w.stopping, w.position = False, None
                w.gate.acquire(False)  # closed (it may be already)
            self._started()
            self._cond.notify_all()
        return self.wait(wait) if wait > 0 else False

    def wait(self, timeout: float) -> bool:
        if self._pending == 0 or self._closed:  # no lock needed to see it: it stays so until the next start()
            return True
        return wait_for(self._cond, lambda: self._pending == 0 or self._closed, timeout, self._guard.held())

    def collect(self) -> list[tuple]:
        with self._guard.held():
            self._check_collectable(lambda: not self._pending)
            records = list(self._records)
        self._say_if_the_gil_came_back()
        return records

    def release(self) -> None:
        with self._guard.held():
            if not self._pending:
                self._records = [None] * len(self._records)

    def interrupt(self) -> list[int]:
        """KeyboardInterrupt into every worker thread still running the current run."""
        with self._guard.held():
            ids = []
            for w in self._workers:
                if self._busy(w):  # one that has not begun its task yet will not begin it
                    w.stopping = True
                    _open(w.gate)
                    if w.running:
                        _raise_in(w.ident)
                    ids.append(w.id)
            self._barrier.wake()  # a waiter there takes its interrupt now
            return ids

    def busy_workers(self) -> list[int]:
        with self._guard.held():
            return [w.id for w in self._workers if self._busy(w)]

    def cpu_times(self) -> list[float]:
        return [w.cpu_time() for w in self._workers]

    def progress(self) -> list[tuple[int, int | None] | None]:
        """Read here, from each running worker's progress (the same interpreter: no need to ask)."""
        for w in self._workers:
            context = self._runtime.thread_contexts.get(w.ident) if w.running else None
            if context is not None:
                context.report_progress()  # emits to w
        return [w.position for w in self._workers]

    def drain_output(self) -> list[tuple[int, int, str]]:
        with self._guard.held():
            queue, self._queue = self._queue, [[] for _ in self._queue]
        return [(i, stream, text) for i, chunks in enumerate(queue) for stream, text in chunks]

    def close(self, timeout: float) -> list[tuple[int, str]]:
        """Interrupt running tasks, tell every thread to end, and wait up to ``timeout`` seconds;
        threads still running then (blocked in C, swallowing KeyboardInterrupt) are abandoned:
        daemon threads, left running, never joined."""
        with self._guard.held():
            if not self._mark_closed():
                return self.abandoned
            for w in self._workers:
                w.exit = True
            self._barrier.abort("the pool was closed")
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        grace = time.monotonic() + min(_STOP_GRACE, timeout)
        try:
            for w in self._workers:
                while w.thread is not None and w.thread.is_alive():
                    if time.monotonic() >= deadline:
                        self._abandoned.append(
                            (w.id, "its thread did not stop: blocked in C code, or ignoring KeyboardInterrupt")
                        )
                        break
                    if time.monotonic() < grace:
                        self.interrupt()
                    w.thread.join(0.05)
        finally:
            with self._guard.held():
                self._pending = 0
                self._cond.notify_all()
            _release()
        return self.abandoned

    # -- the worker threads ---------------------------------------------------------------

    def _serve(self, w: _Worker, runtime) -> None:
        w.ident = threading.get_ident()

        def emit(stream, text):
            self._emit(w, stream, text)

        def route(stdout, stderr):
            if stdout is None:
                _routes.pop(w.ident, None)
            else:
                _routes[w.ident] = (stdout, stderr)

        _sleeps[w.ident] = lambda seconds: self._sleep(w, seconds)
        try:
            run = runtime.setup(
                w.id,
                self.size,
                emit,
                _sleeps[w.ident],
                backend="threads",
                hide=(__file__,),
                namespace=w.namespace,
                route=route,
                barrier=self._barrier,
            )
            w.ready.set()
            while True:
                try:
                    task = self._next_task(w)
                    if task is None:
                        return
                    self._execute(w, run, task)
                except KeyboardInterrupt:
                    # Landed outside the cell: before it ran (the task is still w's, and ends
                    # as interrupted on the next turn), or after its record was in.
                    continue
        finally:
            _sleeps.pop(w.ident, None)
            _routes.pop(w.ident, None)
            runtime.thread_contexts.pop(w.ident, None)

    def _next_task(self, w: _Worker):
        """w's task of the current run; it stays w's until _finish() has its record, so that an
        interrupt landing between here and the cell loses no task."""
        with self._guard.held():
            while w.task is None and not w.exit:
                self._cond.wait()
            if w.task is None:
                return None
            w.running = True
            return w.task

    def _execute(self, w: _Worker, run, task) -> None:
        source, filename, payload, lent = task
        wall, cpu = time.perf_counter(), time.thread_time()
        reply = None
        try:
            if not w.stopping:  # else interrupted before it began: it does not begin
                reply = run(source, filename, payload, lent)
        except KeyboardInterrupt:  # landed in the runtime's own code, outside the cell's try
            pass
        while True:  # until the record is in: an interrupt may still land here, once
            try:
                if reply is None:
                    reply = protocol.interrupted_reply()
                self._finish(w, reply, time.perf_counter() - wall, time.thread_time() - cpu)
                break
            except KeyboardInterrupt:
                continue

    def _finish(self, w: _Worker, reply, wall: float, cpu: float) -> None:
        with self._guard.held():
            w.running, w.task = False, None
            _cancel_in(w.ident)  # no interrupt comes after this: interrupt() sees running False
            if self._records and self._records[w.id] is None and self._pending:
                error = reply[1]  # (type name, message, ...): said as a WorkerError says it
                raised = None if error is None else (f"{error[0]}: {error[1]}" if error[1] else error[0])
                self._barrier.leave(w.id, raised)
                out, err = self._outputs[w.id]
                self._records[w.id] = protocol.result_record(w.id, reply, "".join(out), "".join(err), wall, cpu)
                self._pending -= 1
                if self._pending == 0:
                    self._cond.notify_all()
        if not _routed():
            with _shared.held():
                _put_routers(after_task=True)  # a cell may have assigned sys.stdout or sys.stderr: the process's

    def _sleep(self, w: _Worker, seconds) -> None:
        """time.sleep in a worker: ends at once when the task is interrupted, and raises
        KeyboardInterrupt again if the cell caught it and sleeps on."""
        if not isinstance(seconds, (int, float)) or not seconds >= 0:
            _replaced_sleep(seconds)  # raises as time.sleep does (a bad type, a negative or NaN)
        if w.stopping:
            raise KeyboardInterrupt
        if w.gate.acquire(True, min(seconds, threading.TIMEOUT_MAX)):  # opened by interrupt()
            _open(w.gate)  # for the worker's next sleep too
        if w.stopping:
            raise KeyboardInterrupt

    def _emit(self, w: _Worker, stream: int, text: str) -> None:
        with self._guard.held():
            if not self._busy(w):
                return
            if stream == protocol.PROGRESS:
                w.position = protocol.read_progress(text)
                return
            self._outputs[w.id][stream - 1].append(text)
            if self._streaming:
                queue = self._queue[w.id]
                if queue and queue[-1][0] == stream:
                    queue[-1][1] += text
                else:
                    queue.append([stream, text])

    def _busy(self, w: _Worker) -> bool:
        return self._pending > 0 and self._records[w.id] is None

    def _say_if_the_gil_came_back(self) -> None:
        """On a free-threaded build, once: an extension a cell imported turned the GIL on."""
        if self._gil_said or not gil_enabled():
            return
        self._gil_said = True
        new = sorted(list(sys.modules)[self._modules_before :])
        extensions = [m for m in new if str(getattr(sys.modules.get(m), "__file__", "")).endswith((".so", ".pyd"))]
        named = ", ".join(extensions) if extensions else "an extension module imported meanwhile"
        warnings.warn(
            f"ipy_parallel: the GIL is enabled again since this run ({named}): the ThreadPool's workers "
            "now take turns instead of running in parallel",
            RuntimeWarning,
            skip_file_prefixes=(_PACKAGE,),  # the caller of run(), however deep the lifecycle
        )
