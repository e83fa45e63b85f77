"""The default backend: each worker a sub-interpreter of this process, on its own OS thread, with its own GIL (the C++ engine)."""

from __future__ import annotations

import warnings

from collections.abc import Buffer

from .. import _engine
from .._wire import marshalled, protocol
from .base import BasePool

__all__ = ["Pool"]

# Compiled here once per process, unmarshalled in each worker (cheaper there than compiling).
_MODULES = marshalled()
_RESERVE_MAX = 4096  # workers the reserve may keep at most
_PLAIN = frozenset((int, float, bool, type(None), list, tuple, dict, set))  # never buffers: skip the check


class Pool(BasePool):
    """A warm pool of isolated sub-interpreters, one OS thread each, each with its own GIL.

    ``Pool(n)`` starts n workers in parallel (default ``os.cpu_count()``, at most 256) and
    blocks until all are ready (a few ms each); they live until ``close()``, the end of a
    ``with`` block, or interpreter exit. Every ``run()`` executes in all of them at once, in
    true parallel: pure-Python code in one worker never waits for another's GIL. Modules that
    do not support sub-interpreters (numpy, most compiled extensions) cannot be imported in a
    worker: use ProcessPool for those.

    Workers outlive their pool: as it closes or shrinks, each worker with no thread of a cell
    left is kept, parked, in a process-wide reserve (up to 64; see ``Pool.reserve``), and the
    next pool or growth takes it instead of creating an interpreter: a start in well under a
    millisecond, and none of the ~2 MiB that CPython 3.12 and 3.13 keep of every interpreter
    they end. A kept worker starts as a new one would: its ``__main__`` and builtins are fresh,
    but the modules its cells imported stay imported, with whatever they did to them.
    ``fresh=True`` gives a pool whose interpreters are all new.

    Blocking and the GIL: as every pool (see BasePool); the workers take the main
    interpreter's GIL only to start and to end.
    """

    _kind = "Pool"

    def __init__(self, n: int | None = None, *, fresh: bool = False):
        self._fresh = bool(fresh)
        super().__init__(n)

    @staticmethod
    def reserve(limit: int | None = None, *, clear: bool = False) -> dict[str, int]:
        """The reserve of workers kept for the next pool: ``{"kept": ..., "limit": ...}``.
        ``limit`` sets how many it keeps at most (0: none; every interpreter then ends with its
        pool); ``clear=True`` ends those it keeps. Both block, GIL released, until the
        interpreters that go have ended."""
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int):
                raise TypeError(f"Pool.reserve(limit): expected a count of workers (an int), got {limit!r}")
            if not 0 <= limit <= _RESERVE_MAX:
                raise ValueError(f"Pool.reserve(limit): expected 0 to {_RESERVE_MAX} workers, got {limit}")
            _engine.set_reserve_limit(limit)
        if clear:
            _engine.clear_reserve()
        return {"kept": _engine.reserve_size(), "limit": _engine.reserve_limit()}

    @classmethod
    def prepare(cls) -> None:
        """The workaround imports the engine makes in the main interpreter before any worker
        runs (native/compat.h); see BasePool.prepare."""
        if hasattr(_engine, "prepare_main_interpreter"):  # inside a worker, a Pool cannot start anyway
            _engine.prepare_main_interpreter()

    def _lendable(self, value, what: str) -> bool:
        """Big bytes and str are copied once into each worker, straight from this interpreter's
        memory; any other buffer (memoryview, bytearray, array.array, mmap, ...) is lent in place,
        as a read-only memoryview: the same address space, no copy."""
        kind = type(value)
        if kind is bytes or kind is str:
            return len(value) >= protocol.LEND_MIN
        if kind in _PLAIN or not isinstance(value, Buffer):
            return False
        with memoryview(value) as view:
            if not view.c_contiguous:
                raise BufferError(
                    f"{what}: this {kind.__name__}'s memory is not contiguous, so the workers cannot "
                    "share it: send a contiguous copy (bytes(view) or array.copy())"
                )
        return True

    def _open_engine(self, n: int):
        if not hasattr(_engine, "Engine"):  # a worker's own _engine: queues and barriers only
            raise RuntimeError(
                "a Pool cannot be started inside a worker: workers do not nest; "
                "split the work among the workers you have (worker_id, n_workers)"
            )
        return _engine.Engine(n, _MODULES, self._fresh)

    def _before_run(self) -> None:
        """The engine ends every pool before os.fork() (a child forked with live sub-interpreters
        crashes); start this one again, and say that its workers' state is gone."""
        if not self._engine.closed:
            return
        if not self._engine.closed_for_fork:  # by the engine's atexit hook: the interpreter is exiting
            raise RuntimeError("this Pool was closed as the interpreter exits: it runs nothing more")
        self._engine = _engine.Engine(self._engine.size, _MODULES, self._fresh)
        self._sent_path = None
        warnings.warn(
            "ipy_parallel: this process forked (os.fork or multiprocessing's 'fork' start method), so "
            "the pool's workers were restarted and their variables cleared: CPython crashes a child "
            "forked while sub-interpreters are alive (gh-139759). Use multiprocessing's 'spawn' or "
            "'forkserver' start method to keep the workers' state.",
            RuntimeWarning,
            stacklevel=6,
        )
