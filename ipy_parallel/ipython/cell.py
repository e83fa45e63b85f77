"""One %%parallel cell: inputs from the user's namespace, a run with live output and CPU display, results back.

IPython-free on purpose (it takes the namespace and a monitor as arguments), so the magic stays a
thin parser. Misuse raises UsageError-like ValueErrors that the magic turns into UsageError.
"""

from __future__ import annotations

import ast
import keyword
from collections.abc import Buffer, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from collections.abc import MutableMapping

from .._wire import protocol
from ..backends.base import BasePool
from ..backends.inputs import MAX_WORKERS
from ..backends.run import Run
from ..exceptions import CellSyntaxError, ParallelError
from ..results import Outcome, Result, format_workers
from ..timeline import RunTimeline
from .display import LabelledOutput, Monitor

__all__ = [
    "CellOptions",
    "CellUsageError",
    "CellRun",
    "parse_workers",
    "parse_names",
    "parse_targets",
    "check_names",
    "is_name",
    "check_cell",
    "run_cell",
    "ipython_syntax_hint",
]


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
    targets: list[int] | None = None  # worker ids, in the order of the values; None: every worker


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


def is_name(text: str) -> bool:
    """A name a variable can have (an identifier, not a keyword such as class)."""
    return text.isidentifier() and not keyword.iskeyword(text)


def parse_names(text: str | None, option: str) -> list[str]:
    if not text:
        return []
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if not is_name(name):
            raise CellUsageError(f"{option}: {name!r} is not a variable name (give names separated by commas)")
    return names


def parse_targets(text: str | None) -> list[int] | None:
    """ "1,3" -> [1, 3]; "0-3" -> [0, 1, 2, 3]; "0,4-5" -> [0, 4, 5] (ipyparallel's --targets)."""
    if text is None:
        return None
    targets: list[int] = []
    for item in text.split(","):
        low, dash, high = item.strip().partition("-")
        ends = [low.strip(), high.strip()] if dash else [low.strip()]
        # ASCII digits only: int() would also take "1_0" and other scripts' digits. Past 3 digits,
        # past any worker id (and int() refuses 4,300 digits).
        first, last = 1, 0  # not a range, unless both ends are numbers
        if all(end.isascii() and end.isdigit() for end in ends):
            first, last = (int(end) if len(end.lstrip("0")) <= 3 else MAX_WORKERS for end in (ends[0], ends[-1]))
        if first > last:
            raise CellUsageError(f"--targets {text}: give worker ids like 1,3 or 0-3 (got {item.strip()!r})")
        if last >= MAX_WORKERS:  # compared as numbers: a huge range is never walked
            raise CellUsageError(
                f"--targets {text}: a pool has at most {MAX_WORKERS} workers (ids 0-{MAX_WORKERS - 1})"
            )
        targets += range(first, last + 1)
    if len(set(targets)) != len(targets):
        raise CellUsageError(f"--targets {text}: names a worker twice")
    return targets


def check_targets(options: CellOptions, size: int) -> None:
    """The targets must be workers of the pool the cell runs on."""
    outside = [t for t in options.targets or () if t >= size]
    if outside:
        raise CellUsageError(
            f"--targets: the pool has {size} worker{'s' if size > 1 else ''} (0-{size - 1}), "
            f"so there is no worker {format_workers(outside)}"
        )


def check_cell(
    source: str, options: CellOptions, user_ns: Mapping[str, Any], filename: str | None = None, size: int | None = None
) -> None:
    """Whatever refuses a cell, checked before a pool is started or resized for it, so that a
    refused cell changes nothing: an empty cell, bad names, a syntax error (CellSyntaxError),
    inputs that are missing; and, given the ``size`` of the pool it runs on, targets outside it
    and a --scatter too short for it (CellUsageError)."""
    if not source.strip():
        raise CellUsageError("the cell is empty: put the code to run in every worker below %%parallel")
    check_names(options)
    try:
        ast.parse(source, filename or "<cell>", "exec")
    except SyntaxError as exc:
        raise CellSyntaxError(exc, ipython_syntax_hint(exc)) from None
    for name in options.push:
        _lookup(user_ns, name, "--push")
    if options.scatter:
        _lookup(user_ns, options.scatter, "--scatter")
    if size is not None:
        check_targets(options, size)
        if options.scatter:
            count = size if options.targets is None else len(options.targets)
            _check_scatter(user_ns[options.scatter], options.scatter, count)


def check_names(options: CellOptions) -> None:
    """The variables a cell's options name must be names, and none that the workers reserve."""
    for option, names in (
        ("--push", options.push),
        ("--scatter", [options.scatter] if options.scatter else []),
        ("--out", [options.out] if options.out else []),
        ("--pull", options.pull),
    ):
        for name in names:
            if not is_name(name):
                raise CellUsageError(f"{option}: {name!r} is not a variable name")
            if name in protocol.RESERVED and option != "--pull":
                raise CellUsageError(
                    f"{option} {name}: {name} is set by ipy_parallel in every worker "
                    "(worker_id, n_workers and __builtins__ are); use another name"
                )


class CellRun:
    """One cell's way through a run, the same whether the cell waits for it (run_cell) or not
    (a background cell): its inputs, its live output and display, and its values at the end.

    The constructor checks the cell and its options and reads its inputs (raising
    CellSyntaxError or CellUsageError before any worker runs); ``tick`` feeds the display from a
    Run; ``end`` closes the display with the outcome; ``values`` turns the Results into the
    cell's value (storing -o, doing --pull)."""

    def __init__(
        self,
        pool: BasePool,
        source: str,
        options: CellOptions,
        user_ns: MutableMapping[str, Any],
        monitor: Monitor,
        filename: str | None = None,
        on_end: Callable[[CellRun], None] | None = None,
    ):
        check_cell(source, options, user_ns, filename, pool.size)
        self.pool, self.source, self.options, self.user_ns = pool, source, options, user_ns
        self.monitor, self.filename = monitor, filename
        self.inputs = {name: _lookup(user_ns, name, "--push") for name in options.push}
        self.worker_inputs = None
        if options.scatter:
            count = pool.size if options.targets is None else len(options.targets)
            chunks = _split(_lookup(user_ns, options.scatter, "--scatter"), options.scatter, count)
            self.worker_inputs = [{options.scatter: chunk} for chunk in chunks]
        self.run: Run | None = None  # once started
        self.timeline: RunTimeline | None = None  # once ended, if its results came back
        self._on_end = on_end
        self._echo = LabelledOutput(monitor.write)

    def tick(self, run: Run) -> None:
        if self.run is None:
            self.run = run
        for worker_id, stream, text in run.output():
            self._echo.feed(worker_id, stream, text)
        busy = set(run.busy_workers())
        self.monitor.update(run.cpu_times(), tuple(w in busy for w in run.workers), run.progress())

    def end(self, results: list[Result] | None = None, error: BaseException | None = None) -> None:
        """The last output, then the display's end: ok, failed (naming who) or stopped."""
        if self.run is not None:
            for worker_id, stream, text in self.run.output():
                self._echo.feed(worker_id, stream, text)
        self._echo.flush()
        failed = tuple(i for i, r in enumerate(results or ()) if r.error is not None)
        outcome = Outcome.of(error, bool(failed))
        cpu = (
            self.run.cpu_times() if self.run is not None else [0.0] * len(self.options.targets or range(self.pool.size))
        )
        progress = self.run.progress() if self.run is not None else None
        self.monitor.close(cpu, outcome=outcome, failed=failed, progress=progress)
        self.timeline = self.run.timeline if self.run is not None else None
        if self._on_end is not None:
            self._on_end(self)

    def values(self, results: list[Result]):
        """The cell's value from its Results: raises ParallelError if workers raised; stores -o
        and pulls --pull names into the namespace."""
        if any(r.error for r in results):
            raise ParallelError(results)
        if self.options.pull:
            try:
                pulled = self.pool.pull(*self.options.pull, targets=self.options.targets)
            except NameError as exc:
                raise CellUsageError(f"--pull: {exc}") from None
            self.user_ns.update(pulled)
        values = [r.value for r in results]
        if self.options.out:
            self.user_ns[self.options.out] = values
            return None
        return values if any(v is not None for v in values) else None

    def submit(self) -> Run:
        """Start it and return its Run at once (a background cell)."""
        try:
            self.run = self.pool.submit(
                self.source,
                self.inputs,
                worker_inputs=self.worker_inputs,
                filename=self.filename,
                stream=True,
                targets=self.options.targets,
            )
        except (TypeError, ValueError) as exc:
            raise CellUsageError(str(exc)) from None  # an input that cannot be sent: say which
        return self.run


def run_cell(
    pool: BasePool,
    source: str,
    options: CellOptions,
    user_ns: MutableMapping[str, Any],
    monitor: Monitor,
    filename: str | None = None,
    on_end: Callable[[CellRun], None] | None = None,
):
    """Run ``source`` in every worker of ``pool`` (or options.targets) with live output and
    display; return the list of per-worker values (or None), as the cell's result. Raises
    CellSyntaxError before any worker runs, CellUsageError for bad options, ParallelError when
    workers raised, ParallelInterrupted on KeyboardInterrupt and ParallelTimeout at
    options.timeout (both after stopping the workers). Blocks until the cell is done.
    ``on_end(cell)`` is called once its display has ended (its ``timeline`` is then set)."""
    cell = CellRun(pool, source, options, user_ns, monitor, filename, on_end)
    results = None
    try:
        results = pool.run(
            source,
            cell.inputs,
            worker_inputs=cell.worker_inputs,
            filename=filename,
            timeout=options.timeout,
            stream=True,
            on_tick=cell.tick,
            what="%%parallel",
            targets=options.targets,
        )
    except (TypeError, ValueError) as exc:
        cell.end(error=exc)
        if cell.run is not None:
            raise
        raise CellUsageError(str(exc)) from None  # an input that cannot be sent: say which, as a usage problem
    except BaseException as exc:
        cell.end(error=exc)
        raise
    cell.end(results)
    return cell.values(results)


# What a line of IPython's own syntax looks like: a magic, a shell escape, a help request.
_IPYTHON_SYNTAX = ("%", "!", "?")


def ipython_syntax_hint(error: SyntaxError) -> str | None:
    """A one-line hint when a cell's SyntaxError is IPython syntax (%time, !ls, obj?), which
    workers, running plain Python, cannot run."""
    line = (error.text or "").strip()
    if not line or not (line.startswith(_IPYTHON_SYNTAX) or line.endswith("?")):
        return None
    return (
        "hint: workers run plain Python, so IPython syntax (%magics, !commands, obj?) does not work in a "
        "%%parallel cell; run it in a cell of its own, or write it as Python"
    )


def _lookup(user_ns: Mapping[str, Any], name: str, option: str):
    try:
        return user_ns[name]
    except KeyError:
        raise CellUsageError(f"{option} {name}: there is no variable {name!r} in this namespace") from None


def _check_scatter(seq, name: str, n: int) -> None:
    """A --scatter input must be a sequence of at least n items."""
    if isinstance(seq, Mapping) or not hasattr(seq, "__len__") or not hasattr(seq, "__getitem__"):
        raise CellUsageError(
            f"--scatter {name}: a {type(seq).__name__} is not a sequence that can be split; "
            "give a list, tuple, range, str or array"
        )
    if len(seq) < n:
        raise CellUsageError(
            f"--scatter {name}: {len(seq)} items cannot give each of the {n} workers a chunk; "
            f"use %%parallel {max(len(seq), 1)} or more items"
        )


def _split(seq, name: str, n: int) -> list:
    """n contiguous chunks whose sizes differ by at most one, by slicing (so a list stays a list; a
    buffer gives memoryviews of its slices)."""
    _check_scatter(seq, name, n)
    if isinstance(seq, Buffer) and not isinstance(seq, (bytes, str)):
        seq = memoryview(seq)  # each worker gets a view of its slice, no copy (a sub-interpreter shares it)
    size = len(seq)
    try:
        return [seq[k * size // n : (k + 1) * size // n] for k in range(n)]
    except TypeError as exc:
        raise CellUsageError(f"--scatter {name}: a {type(seq).__name__} cannot be sliced: {exc}") from None
