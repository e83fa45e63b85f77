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

Beside it: run.py (one Run), inputs.py (what a run takes in, checked and packed), signals.py
(a lock and critical sections a Ctrl-C cannot break), engine.py (what a backend writes).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._wire import protocol
from ..exceptions import ParallelError, ParallelInterrupted, ParallelTimeout, RunStopped
from ..results import Result, format_workers
from ..timeline import RunTimeline
from .engine import Engine
from .inputs import cell_filename, check_targets, check_timeout, check_workers, pack
from .run import TICK, WAIT_SLICE, Run
from .signals import InterruptSafeLock

__all__ = ["BasePool"]

CLOSE_TIMEOUT = 3.0  # seconds close() waits for workers to end before it abandons them
RESET_WAIT = 2.0  # seconds reset() waits for workers still busy with an earlier run


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
    _on_this_machine = True  # its workers share this machine's cores (a run's efficiency is of them)

    def __init__(self, n: int | None = None):
        n = self._check_size(n)
        self._lock = InterruptSafeLock()  # guards _current and the start and collection of runs
        self._current: Run | None = None  # the last run registered
        self._closed = False
        self._sent_path: list[str] | None = None
        self._last_timeline: Callable[[], RunTimeline | None] = lambda: None
        self._engine = self._open_engine(n)

    @classmethod
    def prepare(cls) -> None:
        """Do now, in the calling thread, what starting a pool of this backend does to this
        interpreter's shared state: the modules it imports. Whoever starts a pool in a thread of
        its own calls this first, from its own thread (%load_ext's warm-up does): without the
        GIL, a module one thread adds to sys.modules while another iterates over it makes the
        latter fail, and IPython's kernel takes set(sys.modules) as it starts. Blocks for those
        imports; calling it again costs nothing."""

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

    @property
    def last_timeline(self) -> RunTimeline | None:
        """The timeline of the last run whose results were taken (Run.timeline), or None."""
        return self._last_timeline()

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
        timeout = check_timeout(timeout)
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
        targets = check_targets(targets, self.size, self._kind)
        path = self._path_to_send()
        payloads, lent = pack(inputs, worker_inputs, targets, self.size, path, self._lendable)
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
        source = run._timeline_source or (lambda: None)
        with self._lock.held():
            self._last_timeline = source  # not the run: it holds the results
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

    def _resend_path(self) -> None:
        """A run was stopped: a worker interrupted before it applied the sys.path the run sent may
        still have its old one (a new interpreter's), so the next run sends it again."""
        self._sent_path = None

    def _path_to_send(self) -> list[str] | None:
        """sys.path, if the workers follow it and it has changed since it was last sent: so the
        modules a notebook can import are importable in its workers."""
        if not self._follows_path:
            return None
        now = list(sys.path)
        return None if now == self._sent_path else now


def _warn_abandoned(kind: str, abandoned) -> None:
    for worker_id, why in abandoned:
        warnings.warn(
            f"ipy_parallel: {kind} worker {worker_id} was abandoned while closing ({why}): its thread and "
            "interpreter are left running and will never be joined",
            RuntimeWarning,
            stacklevel=3,
        )
