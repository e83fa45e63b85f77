"""The Python side of the engine: inputs in, one source run in every worker, results back."""

from __future__ import annotations

import functools
import os
import pickle
import sys
import threading
import warnings
import zlib
from dataclasses import dataclass
from importlib import resources
from typing import Any, Mapping, Sequence

import cloudpickle

from . import _engine

__all__ = ["Pool", "Result", "WorkerError", "MAX_WORKERS"]

#: The most workers one pool may have; each is an OS thread and an interpreter (~2 MiB).
MAX_WORKERS = 256

_RUNTIME_SOURCE = resources.files(__package__).joinpath("_runtime.py").read_text(encoding="utf-8")
_WAIT_SLICE = 0.1  # seconds the GIL stays released per wait, so Ctrl-C is seen that often


@dataclass(frozen=True)
class WorkerError:
    """An exception raised inside a worker.

    ``traceback`` is formatted in the worker; its line numbers are those of the source that
    was run. ``exception`` is the exception object itself when it could travel back by pickle
    (its class importable here, or defined in ``__main__``), else None.
    """

    type_name: str
    message: str
    traceback: str
    exception: BaseException | None = None

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name


@dataclass(slots=True)
class Result:
    """What one worker made of one run."""

    worker_id: int
    value: Any  # the value of the source's last expression, or None
    stdout: str
    stderr: str
    error: WorkerError | None
    wall_time: float  # seconds, from the worker picking the task up to its reply
    cpu_time: float  # CPU seconds of the worker's thread for the task (and the µs it took to wake)

    @property
    def ok(self) -> bool:
        return self.error is None


class Pool:
    """A warm pool of isolated sub-interpreters, one OS thread each, each with its own GIL.

    ``Pool(n)`` starts n workers in parallel and blocks until all are ready (a few ms each);
    they live until ``close()``, the end of a ``with`` block, or interpreter exit. Every
    ``run()`` executes in all of them at once. Each worker keeps its namespace (its own
    ``__main__``) between runs and sees ``worker_id`` (0..n-1) and ``n_workers``.

    Blocking and the GIL: the constructor, ``run()`` and ``close()`` block the calling thread
    and release the GIL while they wait, so other Python threads run meanwhile. One run at a
    time per pool: concurrent ``run()`` calls from several threads are served in turn.
    """

    def __init__(self, n: int | None = None):
        n = (os.cpu_count() or 1) if n is None else n
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"Pool(n): n must be an int number of workers, not {type(n).__name__}")
        if not 1 <= n <= MAX_WORKERS:
            raise ValueError(f"Pool(n): n must be between 1 and {MAX_WORKERS}, got {n}")
        self._lock = threading.Lock()
        self._sent_path: list[str] | None = None
        self._abandoned = False
        self._closed_by_user = False
        self._engine = _engine.Pool(n, _RUNTIME_SOURCE)

    @property
    def size(self) -> int:
        """Number of workers."""
        return self._engine.size

    @property
    def closed(self) -> bool:
        return self._closed_by_user

    def run(
        self,
        source: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        worker_inputs: Sequence[Mapping[str, Any]] | None = None,
        filename: str | None = None,
    ) -> list[Result]:
        """Execute ``source`` in every worker at once; return one Result per worker, by worker_id.

        ``inputs`` are bound by name in every worker first; ``worker_inputs``, one mapping per
        worker, add or override names per worker. Values travel by pickle (cloudpickle, so
        functions and classes defined in ``__main__`` go too); one that cannot raises TypeError
        naming it, before anything runs. An exception in a worker is reported in its Result
        and does not stop the others.

        Blocks until every worker is done, with the GIL released. On KeyboardInterrupt it
        returns at once; the workers finish that run in the background (they cannot be stopped
        yet) and the next run waits for them.
        """
        if not isinstance(source, str):
            raise TypeError(f"run(source): source must be str, not {type(source).__name__}")
        if filename is None:
            filename = _cell_filename(source)
        with self._lock:
            self._check_open()
            self._restart_after_fork()
            payloads, path = self._payloads(inputs, worker_inputs)
            self._finish_abandoned()
            done = self._engine.start(source, filename, payloads, _WAIT_SLICE)
            if path is not None:
                self._sent_path = path
            try:
                while not done:
                    done = self._engine.wait(_WAIT_SLICE)
            except BaseException:
                self._abandoned = True
                raise
            return [_result(*raw) for raw in self._engine.collect()]

    def close(self) -> None:
        """End every worker's interpreter and thread. Waits for a run in progress. Harmless twice."""
        self._closed_by_user = True
        self._engine.close()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("busy" if self._engine.busy else "idle")
        return f"<ipy_parallel.Pool {self.size} workers, {state}, {self._engine.runs} runs>"

    # -- internals ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed_by_user:
            raise RuntimeError("this Pool is closed: create a new Pool to run more work")

    def _restart_after_fork(self) -> None:
        """The engine ends every pool before os.fork() (a child forked with live sub-interpreters
        crashes); start this one again, and say that its workers' state is gone."""
        if not self._engine.closed:
            return
        self._engine = _engine.Pool(self._engine.size, _RUNTIME_SOURCE)
        self._sent_path = None
        self._abandoned = False
        warnings.warn(
            "ipy_parallel: this process forked (os.fork or multiprocessing's 'fork' start method), so "
            "the pool's workers were restarted and their variables cleared: CPython crashes a child "
            "forked while sub-interpreters are alive (gh-139759). Use multiprocessing's 'spawn' or "
            "'forkserver' start method to keep the workers' state.",
            RuntimeWarning,
            stacklevel=4,
        )

    def _finish_abandoned(self) -> None:
        if self._abandoned:
            while not self._engine.wait(_WAIT_SLICE):
                pass
            self._engine.collect()  # an interrupted run's results: nobody is waiting for them
            self._abandoned = False

    def _payloads(self, inputs, worker_inputs) -> tuple[list[bytes], list[str] | None]:
        """Pickle what each worker must receive: [] for nothing, [b] for all, or one per worker.

        Workers follow the main interpreter's sys.path, so the modules a notebook can import
        are importable in its workers; it is sent only when it has changed.
        """
        path = list(sys.path)
        path_to_send = None if path == self._sent_path else path
        common = _pickle_inputs(inputs, "inputs") if inputs else None
        if worker_inputs is None:
            if path_to_send is None and common is None:
                return [], None
            return [pickle.dumps((path_to_send, [common] if common else []))], path_to_send
        if isinstance(worker_inputs, (str, bytes)) or not isinstance(worker_inputs, Sequence):
            raise TypeError("worker_inputs must be a sequence of mappings, one per worker")
        if len(worker_inputs) != self.size:
            raise ValueError(f"worker_inputs has {len(worker_inputs)} entries; this pool has {self.size} workers")
        blobs = [_pickle_inputs(m, f"worker_inputs[{i}]") for i, m in enumerate(worker_inputs)]
        parts = [[b for b in (common, blob) if b] for blob in blobs]
        return [pickle.dumps((path_to_send, p)) for p in parts], path_to_send


@functools.lru_cache(maxsize=64)
def _cell_filename(source: str) -> str:
    """A name for tracebacks and linecache that differs between sources and not between runs."""
    return f"<cell-{zlib.crc32(source.encode('utf-8', 'surrogatepass')):08x}>"


def _pickle_inputs(mapping, what: str) -> bytes:
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{what} must be a mapping of names to values, not {type(mapping).__name__}")
    for name in mapping:
        if not isinstance(name, str) or not name.isidentifier():
            raise TypeError(f"{what}: {name!r} is not a valid variable name")
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


def _result(worker_id, value_blob, stdout, stderr, error, wall, cpu) -> Result:
    value = None
    err = None
    if error is not None:
        type_name, message, text, exc_blob = error
        exception = None
        if exc_blob is not None:
            try:
                exception = pickle.loads(exc_blob)
            except Exception:
                exception = None
        err = WorkerError(type_name, message, text, exception)
    elif value_blob is not None:
        try:
            value = pickle.loads(value_blob)
        except Exception as exc:
            message = f"the result of worker {worker_id} cannot be rebuilt in the main interpreter: {exc!r}"
            err = WorkerError(type(exc).__name__, message, f"{type(exc).__name__}: {message}\n", None)
    return Result(worker_id, value, stdout, stderr, err, wall, cpu)
