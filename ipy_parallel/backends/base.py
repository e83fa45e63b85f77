"""The one run lifecycle every backend shares: a Pool takes turns, starts, waits, stops, collects and closes its Engine's runs.

A backend is an Engine (backends/engine.py: where the workers are and how to reach them) and a
subclass of Pool that opens it. Everything else, the part where reliability lives, is here once.

A run goes registered -> started -> finished -> collected. The invariant that keeps a pool
usable whatever happens between two bytecodes (a KeyboardInterrupt can land anywhere: right
after a C call returned, inside a finally, while results are unpickled) is that every step is
either one call into the engine or a single store, and that every engine call can be repeated:

- a run is registered (``pool._current = run``) before the engine starts it, so the pool always
  knows it; whether it started is the engine's run counter, not a flag we might not have set;
- ``collect()`` gives the same records until the next start, so an interrupted collector asks
  again; the records are stored in the Run with one store;
- the next run's turn comes once the engine has finished the previous run: it collects that
  run's records into its Run on its behalf (its owner may be gone, or interrupted), so nothing
  needs "releasing" and no state can be left half-released;
- unpickling the results touches only the Run (results.rebuild never raises).

So the only way to wait for a pool is to wait for its workers, and that wait is interruptible:
the next run says at once that it waits for workers an earlier, stopped run left busy.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import pickle
import signal
import sys
import threading
import time
import warnings
import zlib
from typing import Any
from collections.abc import Callable, Mapping, Sequence

import cloudpickle

from .. import _engine  # LockHold only (InterruptSafeLock): no backend's transport
from .._wire import protocol
from ..exceptions import ParallelError, ParallelInterrupted, ParallelTimeout, RunStopped
from ..results import Result, format_workers, rebuild
from .engine import Engine

__all__ = [
    "BasePool",
    "Run",
    "MAX_WORKERS",
    "STOP_GRACE",
    "TICK",
    "check_workers",
    "cell_filename",
    "deferred_interrupts",
    "InterruptSafeLock",
]

#: The most workers one pool may have.
MAX_WORKERS = 256
STOP_GRACE = 1.0  # seconds interrupted workers get to stop before a run is left to finish alone
CLOSE_TIMEOUT = 3.0  # seconds close() waits for workers to end before it abandons them
RESET_WAIT = 2.0  # seconds reset() waits for workers still busy with an earlier run
WAIT_SLICE = 0.01  # seconds per wait on the engine: a Ctrl-C is seen at least that often
TICK = 0.1  # seconds between on_tick calls while a run goes


class BasePool:
    """A warm pool of workers that run the same source at once; the base of every backend.

    ``run()`` executes a source in every worker and returns one Result per worker; ``submit()``
    starts it and returns its Run. Each worker keeps its namespace between runs and sees
    ``worker_id`` (0..n-1) and ``n_workers``.

    Blocking and the GIL: the constructor, ``run()``, ``Run.wait()``, ``Run.results()`` and
    ``close()`` block the calling thread and release the GIL while they wait. One run at a time:
    a run submitted while another is in progress (from any thread) waits for it to finish,
    keeps that run's results for its Run, then starts.
    """

    _kind = "Pool"  # for repr
    _follows_path = True  # workers get the main interpreter's sys.path whenever it changes

    def __init__(self, n: int | None = None):
        n = self._check_size(n)
        self._lock = InterruptSafeLock()  # guards _current and the start and collection of runs
        self._current: Run | None = None  # the last run registered
        self._closed = False
        self._sent_path: list[str] | None = None
        self._engine = self._open_engine(n)

    # -- what a backend provides ------------------------------------------------------------

    def _check_size(self, n):
        """The number of workers asked for, validated (None: os.cpu_count())."""
        return check_workers(n, f"{self._kind}(n): n")

    def _open_engine(self, n: int) -> Engine:
        raise NotImplementedError

    def _before_run(self) -> None:
        """Called with the pool's lock held before each run starts (a backend may replace an
        engine lost to a fork here)."""

    def _lendable(self, value: Any, what: str) -> bool:
        """Whether the engine takes this input as it is, lent rather than pickled (see the
        protocol's ``lent``); ``what`` names it for an error. None can: every value is pickled."""
        return False

    def _terminate(self, workers: list[int]) -> list[int]:
        """End by force workers that could not be stopped, if this backend can; returns those ended."""
        return []

    # -- the public face ---------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Number of workers."""
        return self._engine.size

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def state(self) -> str:
        """ "idle", "busy" (a run in progress) or "closed"."""
        return "closed" if self._closed else ("busy" if self._engine.busy else "idle")

    @property
    def runs(self) -> int:
        """Runs started on the current workers."""
        return self._engine.runs

    def cpu_times(self) -> list[float]:
        """CPU seconds each worker has used since it started (read without stopping it)."""
        return self._engine.cpu_times()

    def run(
        self,
        source: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        worker_inputs: Sequence[Mapping[str, Any]] | None = None,
        filename: str | None = None,
        timeout: float | None = None,
        stream: bool = False,
        on_tick: Callable[[Run], None] | None = None,
        what: str = "the run",
        targets: Sequence[int] | None = None,
    ) -> list[Result]:
        """Execute ``source`` in every worker at once; return one Result per worker, by worker_id.

        ``targets`` (worker ids) runs it on those workers only, and the Results come in their
        order; the others do nothing (each worker keeps its own worker_id and n_workers).
        ``inputs`` are bound by name in every worker first; ``worker_inputs``, one mapping per
        worker (per target, with ``targets``), add or override names per worker. Values travel by pickle (cloudpickle, so
        functions and classes defined in ``__main__`` go too); one that cannot raises TypeError
        naming it, before anything runs. An exception in a worker is reported in its Result
        and does not stop the others. ``filename`` is what tracebacks call the source.

        Blocks until every worker is done, with the GIL released. With ``timeout`` (seconds)
        the workers still running then are interrupted and ParallelTimeout (a TimeoutError) is
        raised; on KeyboardInterrupt they are interrupted and ParallelInterrupted (a
        KeyboardInterrupt) is raised; ``what`` names the run in their messages. Python code
        stops within milliseconds, time.sleep at once; a worker blocked in other C code stops
        when that returns (the next run waits for it). ``on_tick(run)`` is called as the run
        starts, every 0.1 s while the workers run, and once more when they have finished (with
        ``stream=True``, ``run.output()`` then gives what they wrote), in the calling thread.
        """
        timeout = _check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        started: list[Run] = []
        try:
            run = self._start(
                source,
                inputs,
                worker_inputs,
                filename,
                stream,
                WAIT_SLICE,
                started,
                (deadline, f"{what} did not start within {timeout:g} s" if timeout is not None else ""),
                targets,
            )
            if on_tick is not None:
                on_tick(run)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            return run._wait_for_results(left, on_tick, what, timeout)
        except KeyboardInterrupt as exc:
            if isinstance(exc, RunStopped) or not started:
                raise
            raise started[0]._stopped(ParallelInterrupted, f"{what} was interrupted") from None
        except BaseException:
            if started:
                started[0]._give_up()
            raise

    def submit(
        self,
        source: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        worker_inputs: Sequence[Mapping[str, Any]] | None = None,
        filename: str | None = None,
        stream: bool = False,
        targets: Sequence[int] | None = None,
    ) -> Run:
        """Start ``source`` in every worker (or the ``targets``) as run() does, and return its
        Run at once (after waiting for the run in progress, if any). With ``stream=True`` the
        workers' output can be read while they run (``Run.output()``). A Run that is never
        collected is finished by the workers all the same; the next run waits for it."""
        started: list[Run] = []
        try:
            return self._start(source, inputs, worker_inputs, filename, stream, 0.0, started, targets=targets)
        except BaseException:
            if started:
                started[0]._give_up()
            raise

    def pull(self, *names: str, targets: Sequence[int] | None = None) -> dict[str, list[Any]]:
        """The values of these variables in every worker (or the ``targets``, in their order):
        {name: [value of worker 0, ...]}. Raises NameError naming the workers that have no such
        variable, and ParallelError if a value cannot be sent back. Blocks as run() does."""
        for name in names:
            if not isinstance(name, str) or not name.isidentifier():
                raise TypeError(f"pull(): {name!r} is not a variable name")
        results = self.run(
            protocol.PULL, {"names": list(names)}, filename="<ipy_parallel pull>", what="--pull", targets=targets
        )
        if any(r.error for r in results):
            raise ParallelError(results)
        for name in names:
            missing = [r.worker_id for r in results if name not in r.value]
            if missing:
                raise NameError(
                    f"worker{'s' if len(missing) > 1 else ''} {format_workers(missing)} "
                    f"{'have' if len(missing) > 1 else 'has'} no variable {name!r}"
                )
        return {name: [r.value[name] for r in results] for name in names}

    def interrupt(self) -> list[int]:
        """Raise KeyboardInterrupt in every worker running the current run (from any thread);
        returns their ids. The run then ends as it handles it (usually at once)."""
        return [] if self._closed else self._engine.interrupt()

    def reset(self) -> None:
        """Clear every worker's variables (worker_id and n_workers stay; imported modules stay
        imported; what cells put into builtins goes). Blocks until every worker has done it;
        raises RuntimeError, naming them, if workers are still busy with an earlier run after
        a few seconds (blocked in C code, say)."""
        self._wait_until_idle("reset")
        self._on_every_worker(protocol.RESET, None, "reset", "could not be reset")

    def resize(self, n: int | None) -> None:
        """Make the pool ``n`` workers (None: os.cpu_count()), keeping the workers that stay
        rather than starting them again: a grown pool starts only the new ones. Every worker
        then starts afresh, as in a new pool (variables cleared, ``n_workers`` the new size;
        modules they imported stay imported). Blocks; waits for a run in progress as reset()
        does. A worker that is let go and cannot end is abandoned, with a RuntimeWarning.
        Raises NotImplementedError for a backend that cannot (make a new pool instead)."""
        n = self._check_size(n)
        if not self._engine.resizable:
            raise NotImplementedError(f"a {self._kind} cannot be resized: close it and make one of {n} workers")
        if n == self.size:
            return
        self._wait_until_idle("resize")
        with self._lock.held():
            self._check_open()
            self._before_run()
            abandoned = self._engine.resize(n)
        _warn_abandoned(self._kind, abandoned)
        self._on_every_worker(protocol.RESIZE, {"n": n}, "resize", "could not be told the new size")

    def _on_every_worker(self, code: str, inputs: Mapping[str, Any] | None, what: str, failed: str) -> None:
        """Run one of the protocol's own requests on every worker; a worker's failure is a
        RuntimeError that names it."""
        for r in self.run(code, inputs, filename=f"<ipy_parallel {what}>", what=f"the {what}"):
            if r.error is not None:
                raise RuntimeError(f"worker {r.worker_id} {failed}: {r.error}")

    def close(self) -> None:
        """End every worker, interrupting a run in progress. Bounded: a worker that has not
        ended within a few seconds (blocked in C code, swallowing KeyboardInterrupt, or running
        a thread of its own) is abandoned, left running and never joined, with a RuntimeWarning
        naming it. A Ctrl-C meanwhile abandons at once. Harmless twice."""
        if self._closed:
            return
        self._closed = True
        engine = self._engine
        abandoned: list = []
        try:
            abandoned = engine.close(CLOSE_TIMEOUT)
        except BaseException:
            abandoned = list(engine.abandoned)
            raise
        finally:
            _warn_abandoned(self._kind, abandoned)

    def __enter__(self) -> BasePool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ipy_parallel.{self._kind} {self.size} workers, {self.state}, {self.runs} runs>"

    # -- the lifecycle -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"this {self._kind} is closed: create a new {self._kind} to run more work")

    def _wait_until_idle(self, what: str) -> None:
        """Wait a few seconds for the run in progress, if any; RuntimeError naming the workers
        still busy after that (blocked in C code, say)."""
        previous = self._current
        try:
            waited = previous is None or previous.wait(RESET_WAIT)
        except KeyboardInterrupt:
            raise ParallelInterrupted(f"the {what} was interrupted while it waited for an earlier run") from None
        if not waited:
            busy = previous.busy_workers()
            if busy:
                raise RuntimeError(
                    f"cannot {what} now: worker{'s' if len(busy) > 1 else ''} {format_workers(busy)} "
                    f"{'are' if len(busy) > 1 else 'is'} still busy with an earlier run; try again "
                    "once it has ended, or close the pool"
                )

    def _start(
        self,
        source,
        inputs,
        worker_inputs,
        filename,
        stream,
        first_wait,
        started: list,
        limit: tuple[float | None, str] = (None, ""),
        targets: Sequence[int] | None = None,
    ) -> Run:
        """Register and start a run once the previous one has finished; ``started`` gets the Run
        as soon as it exists, so that a caller interrupted before this returns can stop it.
        ``limit``: (a deadline for the wait for its turn, what the ParallelTimeout then says)."""
        if not isinstance(source, str):
            raise TypeError(f"source must be str, not {type(source).__name__}")
        if filename is None:
            filename = cell_filename(source)
        targets = self._check_targets(targets)
        payloads, lent, path = self._payloads(inputs, worker_inputs, targets)
        announced = False
        while True:
            with self._lock.held():
                self._check_open()
                self._before_run()
                previous = self._current
                if previous is None or previous._settle():
                    engine = self._engine
                    run = Run(self, engine, engine.runs + 1, engine.cpu_times(), targets)
                    started.append(run)
                    self._current = run
                    done = engine.start(source, filename, payloads, stream, first_wait, lent)
                    if path is not None:
                        self._sent_path = path
                    run._finished_seen = done
                    return run
            announced = self._wait_for_turn(previous, announced, limit)

    def _wait_for_turn(self, previous: Run, announced: bool, limit: tuple[float | None, str]) -> bool:
        """Wait (outside the lock) until the engine has finished ``previous``. Says so within
        0.1 s if that run was stopped and left workers busy; a Ctrl-C meanwhile stops it again
        (and, once the user was told, ends those workers by force where the backend can) and
        gives up."""
        deadline, timed_out = limit
        try:
            finished = previous.wait(TICK if deadline is None else max(0.0, min(TICK, deadline - time.monotonic())))
            if not finished and deadline is not None and time.monotonic() >= deadline:
                busy = previous.busy_workers()
                raise ParallelTimeout(
                    f"{timed_out}: worker{'s' if len(busy) > 1 else ''} {format_workers(busy)} "
                    f"{'are' if len(busy) > 1 else 'is'} still busy with an earlier run",
                    stuck=busy,
                )
            if not finished and previous._stopping and not announced:  # not a run that is about to end
                busy = previous.busy_workers()
                if busy:
                    print(
                        f"ipy_parallel: waiting for worker{'s' if len(busy) > 1 else ''} {format_workers(busy)}, "
                        "still busy with an earlier run that was stopped but has not ended (blocked in C code, "
                        "or catching KeyboardInterrupt); interrupt to give up",
                        file=sys.stderr,
                        flush=True,
                    )
                    announced = True
        except KeyboardInterrupt:
            stuck = previous.busy_workers()
            previous._give_up()
            # Only workers the user was told about, and chose to give up on: a run interrupted a
            # moment ago may just not have ended yet.
            ended = self._terminate(stuck) if announced else []
            still = [w for w in stuck if w not in ended]
            what = "interrupted while waiting for an earlier run"
            if ended:
                what += f" (ended worker{'s' if len(ended) > 1 else ''} {format_workers(ended)} by force)"
            raise ParallelInterrupted(what, stuck=still) from None
        return announced

    def _forget(self, run: Run) -> None:
        """The run is over and its results are its owner's: neither the pool nor its engine
        keeps a reference to them, so that a value the user drops is freed now rather than at
        the next run."""
        with self._lock.held():
            if self._current is run:
                self._current = None
                if run._engine is self._engine and not self._engine.closed and self._engine.runs == run._number:
                    self._engine.release()

    def _collect(self, run: Run) -> list[tuple]:
        """The finished run's records, kept in it (the run's owner and the next run's turn may
        both ask, hence the lock)."""
        with self._lock.held():
            if not run._settle():
                raise RuntimeError("the run is not finished: wait() until it returns True")
            records = run._records
        if records is None and run._results is None:
            why = "was closed" if run._started() else "failed to start it"
            raise RuntimeError(f"this {self._kind} {why} before the run finished: its results are lost")
        return records

    def _check_targets(self, targets) -> tuple[int, ...] | None:
        """The run's targets, validated: distinct worker ids of this pool, or None for all."""
        if targets is None:
            return None
        if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence):
            raise TypeError(f"targets must be a sequence of worker ids, not {type(targets).__name__}")
        if not targets:
            raise ValueError("targets is empty: give at least one worker id (or None for every worker)")
        for worker_id in targets:
            if isinstance(worker_id, bool) or not isinstance(worker_id, int) or not 0 <= worker_id < self.size:
                raise ValueError(
                    f"targets: {worker_id!r} is not a worker of this {self._kind} (its workers are 0-{self.size - 1})"
                )
        if len(set(targets)) != len(targets):
            raise ValueError(f"targets: {list(targets)} names a worker twice")
        return None if list(targets) == list(range(self.size)) else tuple(targets)

    def _payloads(self, inputs, worker_inputs, targets=None) -> tuple[list[bytes], list[list], list[str] | None]:
        """What each worker must receive: [] for nothing, [p] for all, or one per worker (each a
        protocol payload); the objects each payload lends ([] if none does); and the sys.path
        they carry, if any: workers follow the main interpreter's sys.path, so the modules a
        notebook can import are importable in its workers; it is sent only when it has changed.
        With ``targets``, every payload names them, and the other workers get the path only."""
        path = None
        if self._follows_path:
            now = list(sys.path)
            path = None if now == self._sent_path else now
        common = self._part(inputs, "inputs") if inputs else None
        each = self.size if targets is None else len(targets)
        if worker_inputs is None:
            if path is None and common is None and targets is None:
                return [], [], path
            mine = [None] * each
        else:
            if isinstance(worker_inputs, (str, bytes)) or not isinstance(worker_inputs, Sequence):
                raise TypeError("worker_inputs must be a sequence of mappings, one per worker")
            if len(worker_inputs) != each:
                whom = f"this pool has {each} workers" if targets is None else f"the run has {each} targets"
                raise ValueError(f"worker_inputs has {len(worker_inputs)} entries; {whom}")
            mine = [self._part(m, f"worker_inputs[{i}]") for i, m in enumerate(worker_inputs)]
        groups = [[p for p in (common, part) if p] for part in mine]
        if worker_inputs is None and targets is None:
            groups = groups[:1]  # one payload for all
        payloads = [
            protocol.pack_payload(path, [(blob, names) for blob, names, _ in parts], targets) for parts in groups
        ]
        lent = [[obj for _, _, objects in parts for obj in objects] for parts in groups]
        if targets is not None:
            idle = protocol.pack_payload(path, [], targets)
            slot = {worker_id: k for k, worker_id in enumerate(targets)}
            payloads = [payloads[slot[w]] if w in slot else idle for w in range(self.size)]
            lent = [lent[slot[w]] if w in slot else [] for w in range(self.size)]
        return payloads, (lent if any(lent) else []), path

    def _part(self, mapping, what: str) -> tuple[bytes | None, list[str], list] | None:
        """One mapping of inputs as a payload part: (the pickled ones, names of the lent ones,
        the lent objects), or None if it is empty."""
        _check_input_names(mapping, what)
        lent = {name: value for name, value in mapping.items() if self._lendable(value, f"{what}[{name!r}]")}
        rest = {name: value for name, value in mapping.items() if name not in lent}
        if not lent and not rest:
            return None
        return (_pickle_inputs(rest, what) if rest else None), list(lent), list(lent.values())


class Run:
    """One run on a Pool: wait for it, read its output as it comes, stop it, take its results."""

    def __init__(
        self, pool: BasePool, engine: Engine, number: int, cpu_base: list[float], targets: tuple[int, ...] | None = None
    ):
        self._pool = pool
        self._engine = engine
        self._targets = targets  # the workers it runs on, in the order of its results (None: all)
        self._number = number  # the engine's run counter once this run has started
        self._cpu_base = cpu_base
        self._cpu_end: list[float] | None = None
        self._records: list[tuple] | None = None  # once finished and collected
        self._results: list[Result] | None = None  # once rebuilt (then _records goes)
        self._late_output: list[tuple[int, int, str]] = []  # drained for it when the pool moved on
        self._finished_seen = False
        self._stopping = False  # stopped (or given up): the next run says so if it must wait

    @property
    def done(self) -> bool:
        return self.wait(0)

    def wait(self, timeout: float | None = None) -> bool:
        """Block up to ``timeout`` seconds (None: until done), GIL released; True once every
        worker has finished. Ctrl-C is seen within 10 ms."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while True:
            left = WAIT_SLICE if deadline is None else min(WAIT_SLICE, deadline - time.monotonic())
            if self._finished(max(left, 0.0)):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def output(self) -> list[tuple[int, str, str]]:
        """What the workers wrote since the last call, as (worker_id, "stdout" | "stderr", text),
        in order for each worker. Only for runs started with stream=True."""
        with self._pool._lock.held():
            chunks, self._late_output = self._late_output, []
            if self._live():
                chunks += self._engine.drain_output()
        return [(w, "stderr" if s == 2 else "stdout", t) for w, s, t in chunks]

    @property
    def workers(self) -> list[int]:
        """The ids of the workers it runs on, in the order of its results and cpu_times()."""
        return list(range(len(self._cpu_base))) if self._targets is None else list(self._targets)

    def cpu_times(self) -> list[float]:
        """CPU seconds each of its workers has used since this run started."""
        now = self._cpu_end if self._cpu_end is not None else self._engine.cpu_times()
        used = [a - b for a, b in zip(now, self._cpu_base)]
        return used if self._targets is None else [used[w] for w in self._targets]

    def interrupt(self) -> None:
        """Raise KeyboardInterrupt in the workers still running this run (from any thread);
        nothing once the pool has moved on to another run. Returns at once."""
        self._interrupt()

    def busy_workers(self) -> list[int]:
        """The ids of the workers still running this run."""
        return [] if not self._live() or self._finished(0) else self._engine.busy_workers()

    def results(
        self, timeout: float | None = None, *, on_tick: Callable[[Run], None] | None = None, what: str = "the run"
    ) -> list[Result]:
        """Wait for every worker, then return one Result per worker, by worker_id.

        With ``timeout`` (seconds), workers still running then are interrupted and
        ParallelTimeout is raised. On KeyboardInterrupt (Ctrl-C, a notebook's stop button) every
        worker is interrupted and ParallelInterrupted (a KeyboardInterrupt) is raised. Either
        way the pool is usable after, and the exception carries the results of a run whose
        workers all stopped. ``on_tick(run)`` is called every 0.1 s while it waits, and once
        when the workers have finished; ``what`` names the run in the messages."""
        return self._wait_for_results(_check_timeout(timeout), on_tick, what, timeout)

    def _wait_for_results(self, timeout, on_tick, what: str, shown) -> list[Result]:
        """results(), where ``shown`` is the timeout the message names (run()'s began earlier)."""
        if self._results is not None:
            return self._results
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                left = TICK if deadline is None else min(TICK, deadline - time.monotonic())
                finished = self.wait(max(left, 0.0))
                if on_tick is not None:
                    on_tick(self)
                if finished:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._stopped(ParallelTimeout, f"{what} did not finish within {shown:g} s")
            return self._rebuild()
        except KeyboardInterrupt as exc:
            if isinstance(exc, RunStopped):
                raise
            raise self._stopped(ParallelInterrupted, f"{what} was interrupted") from None

    def stop(self, grace: float = STOP_GRACE) -> tuple[list[int], list[Result] | None]:
        """Interrupt the workers still running and wait up to ``grace`` seconds for them.
        Returns (workers that did not stop, the run's results if all stopped). Workers stuck
        in C code finish in the background; the pool's next run waits for them."""
        if self._results is not None:
            return [], self._results
        self._stopping = True
        deadline = time.monotonic() + grace
        stopped = False
        try:
            # Again every 0.1 s: a KeyboardInterrupt can be swallowed by C code that clears
            # errors, or caught by the cell itself.
            while True:
                self._interrupt()
                if self.wait(min(TICK, max(0.0, deadline - time.monotonic()))):
                    stopped = True
                    break
                if time.monotonic() >= deadline:
                    break
        except KeyboardInterrupt:  # pressed again: give up waiting
            pass
        if not stopped:
            return self.busy_workers(), None
        return [], self._rebuild()

    def __repr__(self) -> str:
        state = "collected" if self._results is not None else ("finished" if self.done else "running")
        return f"<ipy_parallel.Run of {self._pool!r}: {state}>"

    # -- internals ------------------------------------------------------------------------

    def _started(self) -> bool:
        return self._engine.runs >= self._number

    def _live(self) -> bool:
        """This run is the engine's current one, started, and not yet collected."""
        return (
            self._records is None
            and self._results is None
            and self._engine is self._pool._engine
            and self._engine.runs == self._number
        )

    def _finished(self, timeout: float) -> bool:
        if self._finished_seen or self._records is not None or self._results is not None or not self._live():
            return True
        if self._engine.wait(timeout):
            self._finished_seen = True
        return self._finished_seen

    def _settle(self) -> bool:
        """(The pool's lock held.) True once the engine is free of this run: it never started,
        it belonged to an engine since replaced, or it finished and its records are in it."""
        if not self._started() or not self._live():
            return True
        if not self._engine.wait(0):
            return False
        # One store each: an interrupt before a store leaves collect() to be asked again.
        self._late_output = self._late_output + self._engine.drain_output()
        self._cpu_end = self._engine.cpu_times()
        try:
            self._records = self._engine.collect()
        except RuntimeError:
            if not self._engine.closed:
                raise
            # Closed meanwhile (by another thread): the records are lost, and _collect says so.
        return True

    def _rebuild(self) -> list[Result]:
        records = self._pool._collect(self)
        if self._results is None:
            results = [rebuild(record) for record in records]
            if self._targets is not None:
                by_id = {r.worker_id: r for r in results}
                results = [by_id[w] for w in self._targets]
            self._results = results
            self._records = None
            self._pool._forget(self)
        return self._results

    def _interrupt(self) -> None:
        if self._live() and not self._engine.closed:
            self._engine.interrupt()

    def _give_up(self) -> None:
        """Nobody will wait for this run: stop its workers (without waiting for them)."""
        self._stopping = True
        self._interrupt()

    def _stopped(self, kind: type[RunStopped], what: str) -> RunStopped:
        if not self._started():  # the interrupt came while the engine was starting it (spawning a process)
            return kind(f"{what} before it started")
        late = self.busy_workers()
        stuck, results = self.stop()
        return kind(what, late, stuck, results)


def check_workers(n, what: str) -> int:
    """A number of workers, validated (None: os.cpu_count())."""
    n = (os.cpu_count() or 1) if n is None else n
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{what} must be an int number of workers, not {type(n).__name__}")
    if not 1 <= n <= MAX_WORKERS:
        raise ValueError(f"{what} must be between 1 and {MAX_WORKERS}, got {n}")
    return n


def _check_timeout(timeout):
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be a number of seconds >= 0 (or None for no limit), got {timeout!r}")
    return None if math.isinf(timeout) else float(timeout)


@functools.lru_cache(maxsize=64)
def cell_filename(source: str) -> str:
    """A name for tracebacks and linecache that differs between sources and not between runs."""
    return f"<cell-{zlib.crc32(source.encode('utf-8', 'surrogatepass')):08x}>"


def _check_input_names(mapping, what: str) -> None:
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{what} must be a mapping of names to values, not {type(mapping).__name__}")
    for name in mapping:
        if not isinstance(name, str) or not name.isidentifier():
            raise TypeError(f"{what}: {name!r} is not a valid variable name")
        if name in protocol.RESERVED:
            raise ValueError(f"{what}: {name!r} is set by ipy_parallel in every worker; send it under another name")


def _pickle_inputs(mapping, what: str) -> bytes:
    try:
        return cloudpickle.dumps(dict(mapping), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass
    for name, value in mapping.items():  # find the culprit, to name it
        try:
            cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(
                f"{what}: {name!r} (a {type(value).__name__}) cannot be sent to the workers, "
                f"because it cannot be pickled: {exc}. Send data it can be rebuilt from instead."
            ) from exc
    raise TypeError(f"{what} cannot be pickled as a whole (each value alone can)")


def _warn_abandoned(kind: str, abandoned) -> None:
    for worker_id, why in abandoned:
        warnings.warn(
            f"ipy_parallel: {kind} worker {worker_id} was abandoned while closing ({why}): its thread and "
            "interpreter are left running and will never be joined",
            RuntimeWarning,
            stacklevel=3,
        )


class InterruptSafeLock:
    """A lock for ``with lock.held():`` blocks that a KeyboardInterrupt cannot leave held.

    CPython 3.14 calls a with statement's ``__enter__`` through an ordinary CALL, which runs
    pending signal handlers after the call returns and before the block and its ``__exit__`` are
    set up (CPython gh-148874): a Ctrl-C there leaves a plain lock acquired for good, and every
    later run waits for it forever. 3.12 and 3.13's BEFORE_WITH runs none, so there ``held()`` is
    the plain lock. On 3.14+ it is the engine's LockHold, made for that one with statement: its
    acquire is noted in C, and interrupted in that window it is dropped as the exception unwinds
    and releases the lock (native/lock_hold.h). Deferring SIGINT instead would swap its handler
    twice a hold: two system calls, more than a run's own locking costs."""

    def __init__(self):
        self._lock = threading.Lock()

    def held(self):
        """The object of one ``with`` statement that holds the lock."""
        return self._lock if _WITH_ENTERS_ATOMICALLY else _engine.LockHold(self._lock)

    def locked(self) -> bool:
        return self._lock.locked()


_WITH_ENTERS_ATOMICALLY = sys.version_info < (3, 14)


@contextlib.contextmanager
def deferred_interrupts():
    """For engines written in Python: a KeyboardInterrupt (SIGINT) that arrives inside the
    block is raised when it ends, so that the block's stores happen all or not at all. Outside
    the main thread, or where SIGINT is not Python's to handle, it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGINT)
    except ValueError:
        previous = None
    if not callable(previous):  # SIG_IGN, SIG_DFL, or not installed from Python
        yield
        return
    pending = []
    signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            previous(signal.SIGINT, None)
