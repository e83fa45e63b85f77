"""The threads backend: ThreadPool, whose workers are threads of this interpreter (free-threaded CPython runs them in parallel).

See engine.py for the design. Each worker has a namespace of its own that lasts across runs;
inputs are bound by reference (nothing is pickled) and values come back as the objects the cells
made. On a CPython with a GIL the workers take turns: it works, but only a free-threaded build
(3.14t) runs them in parallel.
"""

from __future__ import annotations

import warnings
import weakref

from .. import gil_enabled
from ..base import BasePool
from ..run import STOP_GRACE
from .engine import ThreadEngine

__all__ = ["ThreadPool", "TAKING_TURNS", "takes_turns"]

#: What the displays and %parallel_status say of a ThreadPool while the GIL is on.
TAKING_TURNS = "GIL enabled: threads take turns"

_said_gil = False  # the GIL build's note is given once per process


class ThreadPool(BasePool):
    """A warm pool of worker threads of this interpreter, with the interface and semantics of Pool.

    Workers share the interpreter, so every module works in them (numpy included) and inputs
    are the caller's own objects: an object pushed to 8 workers is one object, and what a cell
    does to it every worker and the caller see. Values come back as they are. A cell that
    patches a module (builtins too) patches it for the caller and every worker.

    Blocking and the GIL: as every pool (see BasePool).
    """

    _kind = "ThreadPool"
    _follows_path = False  # the workers' sys.path is the caller's own

    @classmethod
    def prepare(cls) -> None:
        """The shipped runtime the workers run, installed in this interpreter (see BasePool.prepare)."""
        ThreadEngine.prepare()

    def _open_engine(self, n: int) -> ThreadEngine:
        global _said_gil
        if takes_turns() and n > 1 and not _said_gil:
            _said_gil = True
            warnings.warn(
                "ipy_parallel: this CPython runs with a GIL, so the ThreadPool's workers take turns "
                "rather than running in parallel; a free-threaded build (3.14t) runs them at once",
                RuntimeWarning,
                stacklevel=4,
            )
        engine = ThreadEngine(n)
        # A pool dropped without close() still ends its threads: they keep the engine alive, never this pool.
        weakref.finalize(self, engine.close, STOP_GRACE)
        return engine

    def _lendable(self, value, what: str) -> bool:
        """Every input: the workers share this interpreter, so each binds the object itself."""
        return True

    def __repr__(self) -> str:
        return f"<ipy_parallel.ThreadPool {self.size} worker threads, {self.state}, {self.runs} runs>"


def takes_turns() -> bool:
    """True while the workers of a ThreadPool run one at a time: this CPython has the GIL on
    (a build with one, or 3.14t once an extension module turned it on)."""
    return gil_enabled()
