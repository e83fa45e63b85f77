"""One run on a pool: wait for it, read its output as it comes, stop it, take its results.

A Run never calls its engine for a run that is not the engine's current one (``_live()``): the
pool moves on without it, and whatever it still needs (records, late output, CPU) was put into
it by the pool's next turn (backends/base.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..exceptions import ParallelInterrupted, ParallelTimeout, RunStopped
from ..results import Result, rebuild_all
from ..timeline import MAX_SAMPLES, RunTimeline, usable_cores
from .engine import Engine
from .inputs import check_timeout

if TYPE_CHECKING:
    from .base import BasePool

__all__ = ["Run", "STOP_GRACE", "TICK", "WAIT_SLICE"]

STOP_GRACE = 1.0  # seconds interrupted workers get to stop before a run is left to finish alone
WAIT_SLICE = 0.01  # seconds per wait on the engine: a Ctrl-C is seen at least that often
TICK = 0.1  # seconds between on_tick calls while a run goes


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
        self._interrupted_in_rebuild = False  # a Ctrl-C landed while its results were rebuilt
        # Its timeline: (seconds since it started, CPU seconds per worker), read at every tick of
        # a wait for its results and at its end.
        self._t0 = time.monotonic()
        self._samples: list[tuple[float, tuple[float, ...]]] = [(0.0, (0.0,) * len(self.workers))]
        self._finished_at: float | None = None
        self._timeline_source: Callable[[], RunTimeline] | None = None  # builds it once, on first use

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

    def progress(self) -> list[tuple[int, int | None] | None]:
        """Each of its workers' position in its ``ipy_parallel.worker.progress()``: (done, total or
        None if not known), or None for a worker whose task made none (or has not reported yet).
        The latest readings; each call asks the workers for fresh ones, which the next call sees.
        Never blocks; from any thread. Once the pool has started another run, none are known
        (an engine keeps only its current run's: a run's end costs nothing for them)."""
        positions = None
        engine = self._engine
        if engine is self._pool._engine and engine.runs == self._number and not engine.closed:
            try:
                positions = engine.progress()
            except Exception:  # closed meanwhile (by another thread): nothing to show
                positions = None
        if not positions:
            return [None] * len(self.workers)
        return list(positions) if self._targets is None else [positions[w] for w in self._targets]

    @property
    def timeline(self) -> RunTimeline | None:
        """Where the run's time went, worker by worker (see RunTimeline), once its results are in;
        None before."""
        return None if self._timeline_source is None else self._timeline_source()

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
        return self._wait_for_results(check_timeout(timeout), on_tick, what, timeout)

    def _wait_for_results(self, timeout, on_tick, what: str, shown) -> list[Result]:
        """results(), where ``shown`` is the timeout the message names (run()'s began earlier)."""
        if self._results is not None:
            return self._results
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                left = TICK if deadline is None else min(TICK, deadline - time.monotonic())
                finished = self.wait(max(left, 0.0))
                if not finished:
                    self._sample()
                if on_tick is not None:
                    on_tick(self)
                if finished:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._stopped(ParallelTimeout, f"{what} did not finish within {shown:g} s")
            results = self._rebuild()
            if self._interrupted_in_rebuild:  # said once; the results stay the run's
                self._interrupted_in_rebuild = False
                raise ParallelInterrupted(f"{what} was interrupted while its results were rebuilt", results=results)
            return results
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
            self._finished_at = time.monotonic()
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
            results, self._interrupted_in_rebuild = rebuild_all(records)
            if self._targets is not None:
                by_id = {r.worker_id: r for r in results}
                results = [by_id[w] for w in self._targets]
            self._results = results
            self._records = None
            try:
                self._timeline_source = self._timeline_of(results)
            except Exception:  # the timeline is an extra: it never costs the results
                self._timeline_source = None
            self._pool._forget(self)
        return self._results

    def _sample(self) -> None:
        try:
            self._samples.append((time.monotonic() - self._t0, tuple(self.cpu_times())))
        except Exception:  # an engine closed meanwhile (by another thread): a sample less, never a run lost
            return
        if len(self._samples) > MAX_SAMPLES:  # every other one; the first and the last stay
            kept = self._samples[::2]
            if kept[-1] is not self._samples[-1]:
                kept.append(self._samples[-1])
            self._samples = kept

    def _timeline_of(self, results: list[Result]) -> Callable[[], RunTimeline]:
        """(Its records in.) What builds its timeline when someone asks (most runs are never
        looked at, and a run's cost is tens of microseconds): the samples up to its end, the
        moment it was seen to finish or, when nobody looked then, just after its last worker
        finished (its CPU stopped there). It holds no result."""
        ends = [r.wall_time for r in results]
        end = (self._finished_at or time.monotonic()) - self._t0
        if ends:
            end = min(end, max(ends) + TICK)
        samples = [s for s in self._samples if s[0] < end] + [(end, tuple(self.cpu_times()))]
        states = [
            "ok"
            if r.error is None
            else "stopped"
            if self._stopping and r.error.type_name == "KeyboardInterrupt"
            else "failed"
            for r in results
        ]
        workers, built = self.workers, []
        local = self._pool._on_this_machine

        def timeline() -> RunTimeline:
            if not built:  # two threads asking at once may each build one: the same figures
                cores = usable_cores() if local else None
                built.append(RunTimeline.of(workers, samples, ends, states, cores))
            return built[0]

        return timeline

    def _interrupt(self) -> None:
        self._pool._resend_path()
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
