"""The process backend: ProcessPool, whose workers are warm, reused Python processes (numpy works there)."""

from __future__ import annotations

import os
import sys
import warnings
import weakref

from ...results import format_workers
from ..base import BasePool
from ..run import STOP_GRACE
from .engine import ProcessEngine

__all__ = ["ProcessPool"]


class ProcessPool(BasePool):
    """A warm pool of worker processes with the interface and semantics of Pool.

    For cells that sub-interpreters cannot run: numpy and other extension modules that do not
    support isolated interpreters import and work here. ``ProcessPool(n)`` starts n processes at
    once and blocks until all are ready (about the start-up time of one Python process); they
    are reused until ``close()``, the end of a ``with`` block, or interpreter exit, and none
    outlives its parent (each also exits by itself when the parent dies).

    Each worker keeps its variables between runs and sees ``worker_id`` and ``n_workers``;
    workers follow the parent's sys.path and current directory. ``interrupt()`` sends SIGURG
    to the workers running the current run, which raises KeyboardInterrupt in their cells;
    workers ignore SIGINT, so the Ctrl-C or stop button that a terminal or Jupyter sends to the
    kernel's whole process group never stops them (nor a background run) by itself. A worker
    process that dies during a run gets a WorkerDied error in its Result; the others' results are kept, and the next run
    starts a new process in its place, with a RuntimeWarning (its variables are gone). A worker
    that cannot be stopped is killed when the pool closes, or when Ctrl-C is pressed while the
    next run waits for it.

    Blocking and the GIL: as every pool (see BasePool).
    """

    _kind = "ProcessPool"

    def _open_engine(self, n: int) -> ProcessEngine:
        self._sent_path = list(sys.path)  # each process starts with it
        engine = ProcessEngine(n, self._sent_path)
        # A pool dropped without close() (one a Ctrl-C lost as it was being assigned, say) still
        # ends its processes: the engine's reader threads keep the engine alive, never this pool.
        weakref.finalize(self, engine.close, STOP_GRACE)
        return engine

    def __repr__(self) -> str:
        return f"<ipy_parallel.ProcessPool {self.size} worker processes, {self.state}, {self.runs} runs>"

    def _before_run(self) -> None:
        """In a child forked from the process that made this pool, the worker processes are its
        parent's: start new ones for the child, and say that their state is gone."""
        if self._engine.owner_pid == os.getpid():
            return
        self._engine.close(0.0)  # lets go of the parent's pipes only
        self._engine = self._open_engine(self._engine.size)
        warnings.warn(
            "ipy_parallel: this process was forked from the one that started the ProcessPool, "
            "so it got worker processes of its own, with no variables",
            RuntimeWarning,
            stacklevel=6,
        )

    def _terminate(self, workers: list[int]) -> list[int]:
        killed = self._engine.kill(workers)
        if killed:
            warnings.warn(
                f"ipy_parallel: killed the processes of worker{'s' if len(killed) > 1 else ''} "
                f"{format_workers(killed)}, stuck in an earlier run; the next run starts new ones, "
                "without their variables",
                RuntimeWarning,
                stacklevel=4,
            )
        return killed
