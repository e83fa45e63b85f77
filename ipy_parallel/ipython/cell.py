"""One %%parallel cell: inputs from the user's namespace, a run with live output and CPU display, results back.

IPython-free on purpose (it takes the namespace and a monitor as arguments), so the magic stays a
thin parser. Misuse raises UsageError-like ValueErrors that the magic turns into UsageError.
"""

from __future__ import annotations

import ast
from collections.abc import Buffer, Mapping
from dataclasses import dataclass, field
from typing import Any, MutableMapping

from .._wire import protocol
from ..backends.base import MAX_WORKERS, BasePool, Run
from ..exceptions import CellSyntaxError, ParallelError
from .display import LabelledOutput, Monitor

__all__ = ["CellOptions", "CellUsageError", "parse_workers", "parse_names", "check_names", "run_cell"]


class CellUsageError(ValueError):
    """The cell or its options are wrong; the magic shows it as a UsageError."""


@dataclass
class CellOptions:
    n: int | None  # None: the backend's default
    push: list[str] = field(default_factory=list)
    scatter: str | None = None
    out: str | None = None
    pull: list[str] = field(default_factory=list)
    timeout: float | None = None


def parse_workers(text: str | None, default: int | None) -> int | None:
    if text is None:
        return default
    try:
        n = int(text)
    except ValueError:
        n = None
    if n is None or not 1 <= n <= MAX_WORKERS:
        raise CellUsageError(f"the number of workers must be an integer from 1 to {MAX_WORKERS}, got {text!r}")
    return n


def parse_names(text: str | None, option: str) -> list[str]:
    if not text:
        return []
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if not name.isidentifier():
            raise CellUsageError(f"{option}: {name!r} is not a variable name (give names separated by commas)")
    return names


def check_names(options: CellOptions) -> None:
    """The variables a cell's options name must be names, and none that the workers reserve."""
    for option, names in (("--push", options.push), ("--scatter", [options.scatter] if options.scatter else []),
                          ("--out", [options.out] if options.out else []), ("--pull", options.pull)):
        for name in names:
            if not name.isidentifier():
                raise CellUsageError(f"{option}: {name!r} is not a variable name")
            if name in protocol.RESERVED and option != "--pull":
                raise CellUsageError(f"{option} {name}: {name} is set by ipy_parallel in every worker "
                                     "(worker_id, n_workers and __builtins__ are); use another name")


def run_cell(pool: BasePool, source: str, options: CellOptions, user_ns: MutableMapping[str, Any],
             monitor: Monitor, filename: str | None = None):
    """Run ``source`` in every worker of ``pool`` with live output and display; return the list of
    per-worker values (or None), as the cell's result. Raises CellSyntaxError before any worker runs,
    CellUsageError for bad options, ParallelError when workers raised, ParallelInterrupted on
    KeyboardInterrupt and ParallelTimeout at options.timeout (both after stopping the workers)."""
    if not source.strip():
        raise CellUsageError("the cell is empty: put the code to run in every worker below %%parallel")
    check_names(options)
    try:
        ast.parse(source, filename or "<cell>", "exec")
    except SyntaxError as exc:
        raise CellSyntaxError(exc) from None
    inputs = {name: _lookup(user_ns, name, "--push") for name in options.push}
    worker_inputs = None
    if options.scatter:
        chunks = _split(_lookup(user_ns, options.scatter, "--scatter"), options.scatter, pool.size)
        worker_inputs = [{options.scatter: chunk} for chunk in chunks]

    echo = LabelledOutput(monitor.write)
    started: list[Run] = []

    def tick(run: Run) -> None:
        if not started:
            started.append(run)
        for worker_id, stream, text in run.output():
            echo.feed(worker_id, stream, text)
        monitor.update(run.cpu_times())

    try:
        results = pool.run(source, inputs, worker_inputs=worker_inputs, filename=filename, timeout=options.timeout,
                           stream=True, on_tick=tick, what="%%parallel")
    except (TypeError, ValueError) as exc:
        if started:
            raise
        raise CellUsageError(str(exc)) from None  # an input that cannot be sent: say which, as a usage problem
    finally:
        if started:
            for worker_id, stream, text in started[0].output():
                echo.feed(worker_id, stream, text)
        echo.flush()
        monitor.close(started[0].cpu_times() if started else [0.0] * pool.size)

    if any(r.error for r in results):
        raise ParallelError(results)
    if options.pull:
        try:
            pulled = pool.pull(*options.pull)
        except NameError as exc:
            raise CellUsageError(f"--pull: {exc}") from None
        user_ns.update(pulled)
    values = [r.value for r in results]
    if options.out:
        user_ns[options.out] = values
        return None
    return values if any(v is not None for v in values) else None


def _lookup(user_ns: Mapping[str, Any], name: str, option: str):
    try:
        return user_ns[name]
    except KeyError:
        raise CellUsageError(f"{option} {name}: there is no variable {name!r} in this namespace") from None


def _split(seq, name: str, n: int) -> list:
    """n contiguous chunks whose sizes differ by at most one, by slicing (so a list stays a list; a
    buffer gives memoryviews of its slices)."""
    if isinstance(seq, Mapping) or not hasattr(seq, "__len__") or not hasattr(seq, "__getitem__"):
        raise CellUsageError(f"--scatter {name}: a {type(seq).__name__} is not a sequence that can be split; "
                             "give a list, tuple, range, str or array")
    if isinstance(seq, Buffer) and not isinstance(seq, (bytes, str)):
        seq = memoryview(seq)  # each worker gets a view of its slice, no copy (a sub-interpreter shares it)
    size = len(seq)
    if size < n:
        raise CellUsageError(f"--scatter {name}: {size} items cannot give each of the {n} workers a chunk; "
                             f"use %%parallel {max(size, 1)} or more items")
    try:
        return [seq[k * size // n:(k + 1) * size // n] for k in range(n)]
    except TypeError as exc:
        raise CellUsageError(f"--scatter {name}: a {type(seq).__name__} cannot be sliced: {exc}") from None
