"""What a run gives back: one Result per worker, its WorkerError, and how they are rebuilt from the wire."""

from __future__ import annotations

import marshal
import pickle
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from collections.abc import Iterable, Sequence

from ._wire import protocol

__all__ = ["Result", "WorkerError", "Outcome", "rebuild", "rebuild_all", "format_workers", "group_errors"]


class Outcome(StrEnum):
    """How a run ended, as the displays say it (a str: it compares equal to its value)."""

    OK = "ok"
    FAILED = "failed"  # a worker raised, or the run itself did
    STOPPED = "stopped"  # interrupted or timed out

    @classmethod
    def of(cls, error: BaseException | None, failed: bool = False) -> Outcome:
        """The outcome of a run that raised ``error`` (None: it returned), ``failed`` if a worker raised."""
        # Imported here: exceptions.py builds on this module.
        from .exceptions import RunStopped

        if isinstance(error, (RunStopped, KeyboardInterrupt)):
            return cls.STOPPED
        return cls.FAILED if failed or error is not None else cls.OK


@dataclass(frozen=True)
class WorkerError:
    """An exception raised inside a worker (or while its result came back).

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
    cpu_time: float  # CPU seconds of the worker for the task (and the µs it took to wake)

    @property
    def ok(self) -> bool:
        return self.error is None


def rebuild(record: tuple) -> Result:
    """The Result of one protocol result record. Never raises, whatever unpickling does (a
    value's __reduce__ may raise anything, SystemExit and KeyboardInterrupt included, and a
    Ctrl-C may land here): that worker's Result then carries the error instead."""
    return _rebuild(record)[0]


def rebuild_all(records: Iterable[tuple]) -> tuple[list[Result], bool]:
    """The Results of a run's records, and whether a KeyboardInterrupt (a Ctrl-C) landed while
    they were rebuilt: every record is rebuilt all the same, the interrupted ones carrying it as
    their error, so that the caller can raise ParallelInterrupted with every result in it."""
    results, interrupted = [], False
    for record in records:
        result, stopped = _rebuild(record)
        results.append(result)
        interrupted = interrupted or stopped
    return results, interrupted


def _rebuild(record: tuple) -> tuple[Result, bool]:
    worker_id, value_blob, stdout, stderr, error, wall, cpu, value_format = record
    value = err = None
    interrupted = False
    try:
        if error is not None:
            err = _worker_error(*error)
        elif value_format == protocol.RAW:
            value = value_blob
        elif value_blob is not None:
            value = (marshal.loads if value_format == protocol.MARSHAL else pickle.loads)(value_blob)
    except BaseException as exc:
        value = None
        interrupted = isinstance(exc, KeyboardInterrupt)
        why = (
            "it was interrupted (KeyboardInterrupt) while it was rebuilt"
            if interrupted
            else f"{type(exc).__name__} was raised while it was rebuilt: {exc!r}"
        )
        message = f"the result of worker {worker_id} cannot be rebuilt in the main interpreter: {why}"
        err = WorkerError(type(exc).__name__, message, f"{type(exc).__name__}: {message}\n", None)
    return Result(worker_id, value, stdout, stderr, err, wall, cpu), interrupted


def _worker_error(type_name, message, text, exc_blob) -> WorkerError:
    exception = None
    if exc_blob is not None:
        try:
            exception = pickle.loads(exc_blob)
        except Exception:  # its class does not exist here: the texts still say what happened
            exception = None
    return WorkerError(type_name, message, text, exception)


def format_workers(ids: Iterable[int]) -> str:
    """[0, 1, 2, 3, 7, 9, 10] -> "0-3, 7, 9-10"."""
    spans: list[list[int]] = []
    for i in sorted(set(ids)):
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


#: The lines under a traceback's source line that point at the failing part (~~~^^^): two workers
#: interrupted at different places of one line differ only there.
_MARKERS = re.compile(r"^[ \t]*[~^][ \t~^]*\n", re.M)


def group_errors(results: Sequence[Result]) -> list[tuple[list[int], WorkerError]]:
    """Failed workers grouped by identical traceback text (its ~~^^ marker lines aside), in order
    of first appearance; each group keeps its first worker's error."""
    groups: dict[str, tuple[list[int], WorkerError]] = {}
    for r in results:
        if r.error is not None:
            groups.setdefault(_MARKERS.sub("", r.error.traceback), ([], r.error))[0].append(r.worker_id)
    return list(groups.values())
