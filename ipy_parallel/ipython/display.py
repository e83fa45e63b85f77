"""Live CPU display of a run: one status model, pure formatters, and terminal/notebook/summary front ends.

The model (Status, from a Tracker fed the workers' thread CPU clocks) knows nothing of where it
is shown; format_lines/format_summary/format_html turn it into text; a Monitor shows that text
live where it can (the tqdm way) and always ends with a one-line summary.
"""

from __future__ import annotations

import contextlib
import contextvars
import html
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence, TextIO

__all__ = ["Status", "Tracker", "format_lines", "format_summary", "format_html", "LabelledOutput",
           "Monitor", "TerminalMonitor", "NotebookMonitor", "make_monitor"]

SHOW_AFTER = 0.3  # seconds a run must last before a live display appears
REFRESH = 0.2  # seconds between redraws (5 a second)
_BLOCKS = " ▏▎▍▌▋▊▉█"
_SPARKS = "▁▂▃▄▅▆▇█"
_MAX_BARS = 8  # above this many workers, one sparkline character each instead of a bar


@dataclass(frozen=True)
class Status:
    """A run's CPU use at one instant."""

    n_workers: int
    cores: int
    elapsed: float  # seconds since the run started
    cpu: tuple[float, ...]  # CPU seconds each worker has used in this run
    recent: tuple[float, ...]  # each worker's CPU use over the last interval, 0..1 of a core
    done: bool = False
    label: str = "%%parallel"  # what is running
    per_worker: bool = True  # False: one reading for a whole process tree (benchmarks), not clipped

    @property
    def total_cpu(self) -> float:
        return sum(self.cpu)

    @property
    def recent_percent(self) -> float:
        """CPU in use right now, in percent of one core (200 = two cores busy)."""
        return 100 * sum(self.recent)

    @property
    def average_percent(self) -> float:
        """CPU used over the whole run, in percent of one core."""
        return 100 * self.total_cpu / self.elapsed if self.elapsed > 0 else 0.0


class Tracker:
    """Turns successive readings of the workers' CPU clocks into Status snapshots."""

    def __init__(self, n_workers: int, cores: int | None = None, clock: Callable[[], float] = time.monotonic,
                 label: str = "%%parallel", per_worker: bool = True):
        self.n_workers = n_workers
        self.cores = cores or os.cpu_count() or 1
        self.label = label
        self.per_worker = per_worker
        self._clock = clock
        self._start = self._last_time = clock()
        self._last_cpu = (0.0,) * n_workers

    def sample(self, cpu: Sequence[float], done: bool = False) -> Status:
        now = self._clock()
        cpu = tuple(cpu)
        interval = now - self._last_time
        top = 1.0 if self.per_worker else float(self.cores)  # a thread cannot use more than a core
        if interval > 0:
            recent = tuple(min(max((c - p) / interval, 0.0), top) for c, p in zip(cpu, self._last_cpu))
        else:
            recent = (0.0,) * len(cpu)
        self._last_time, self._last_cpu = now, cpu
        return Status(self.n_workers, self.cores, now - self._start, cpu, recent, done, self.label, self.per_worker)


def _bar(fraction: float, width: int) -> str:
    eighths = round(max(0.0, min(fraction, 1.0)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (_BLOCKS[part] if part else "")).ljust(width, "·")


def _spark(fraction: float) -> str:
    return _SPARKS[min(int(max(fraction, 0.0) * len(_SPARKS)), len(_SPARKS) - 1)]


def _header(s: Status) -> str:
    who = f"{s.n_workers} workers · " if s.per_worker else ""
    return (f"{s.label} · {who}{s.elapsed:.1f} s · "
            f"{s.recent_percent:.0f}% CPU of {100 * s.cores}% on {s.cores} cores")


def format_lines(s: Status, width: int = 80) -> list[str]:
    """The live display as text lines: a header, then a bar per worker (a sparkline character
    each when there are many)."""
    lines = [_header(s)]
    if not s.per_worker:
        bar_width = max(10, min(40, width - 20))
        lines.append(f"[all] {_bar(sum(s.recent) / s.cores, bar_width)} {s.recent_percent:4.0f}%")
    elif s.n_workers <= _MAX_BARS:
        bar_width = max(10, min(30, width - 30))
        for i, (u, c) in enumerate(zip(s.recent, s.cpu)):
            lines.append(f"[{i}] {_bar(u, bar_width)} {100 * u:3.0f}%  {c:7.2f} s CPU")
    else:
        # Each character is a worker's CPU use against its fair share of the cores, so that
        # 20 workers keeping 2 cores busy show full blocks, not 10% slivers.
        share = min(1.0, s.cores / s.n_workers)
        per_line = max(10, width - 12)
        for lo in range(0, s.n_workers, per_line):
            hi = min(lo + per_line, s.n_workers) - 1
            lines.append(f"[{lo}-{hi}] " + "".join(_spark(u / share) for u in s.recent[lo:hi + 1]))
    return lines


def format_summary(s: Status) -> str:
    """The one line left when a run ends."""
    who = f"{s.n_workers} workers, " if s.per_worker else ""
    return (f"{s.label}: {who}{s.elapsed:.2f} s wall, {s.total_cpu:.2f} s CPU, "
            f"{s.average_percent:.0f}% CPU of {100 * s.cores}% on {s.cores} cores")


def format_html(s: Status) -> str:
    return _pre(format_summary(s) if s.done else "\n".join(format_lines(s)))


def _pre(text: str) -> str:
    return f'<pre class="ipy-parallel-monitor" style="line-height:1.15">{html.escape(text)}</pre>'


class LabelledOutput:
    """Worker output, prefixed line by line with the worker's id ("[3] ..."). Partial lines wait
    for their newline (or flush()), so lines of different workers never mix."""

    def __init__(self, write: Callable[[str, str], None]):
        self._write = write
        self._partial: dict[tuple[int, str], str] = {}

    def feed(self, worker_id: int, stream: str, text: str) -> None:
        key = (worker_id, stream)
        text = self._partial.pop(key, "") + text
        *complete, rest = text.split("\n")
        if complete:
            self._write(stream, "".join(f"[{worker_id}] {line}\n" for line in complete))
        if rest:
            self._partial[key] = rest

    def flush(self) -> None:
        for (worker_id, stream), rest in sorted(self._partial.items()):
            self._write(stream, f"[{worker_id}] {rest}\n")
        self._partial.clear()


class Monitor:
    """Shows nothing while a run goes; prints the summary at the end of a run that lasted at
    least SHOW_AFTER seconds (a plain script, piped output). Subclasses draw live."""

    def __init__(self, tracker: Tracker, summary: bool = True, stdout: TextIO | None = None,
                 stderr: TextIO | None = None):
        self.tracker = tracker
        self.summary = summary
        self._stdout = stdout
        self._stderr = stderr
        self._last_draw = float("-inf")
        self.updates = 0  # live redraws made, for tests and curiosity

    @property
    def stdout(self) -> TextIO:
        return self._stdout or sys.stdout

    @property
    def stderr(self) -> TextIO:
        return self._stderr or sys.stderr

    def update(self, cpu: Sequence[float]) -> None:
        """Feed the workers' CPU clocks; redraws at most every REFRESH seconds, and only once
        the run has lasted SHOW_AFTER seconds."""
        now = time.monotonic()
        if now - self._last_draw < REFRESH:
            return
        status = self.tracker.sample(cpu)
        if status.elapsed < SHOW_AFTER:
            return
        self._last_draw = now
        self.updates += 1
        self._draw(status)

    def write(self, stream: str, text: str) -> None:
        """Worker output; goes above the live display."""
        out = self.stderr if stream == "stderr" else self.stdout
        out.write(text)
        out.flush()

    def close(self, cpu: Sequence[float], text: str | None = None) -> Status:
        """End the display: it becomes ``text``, or the summary line of a run that lasted at least
        SHOW_AFTER seconds (nothing for a shorter one)."""
        status = self.tracker.sample(cpu, done=True)
        show = text is not None or (self.summary and status.elapsed >= SHOW_AFTER)
        self._finish(status, text if text is not None else format_summary(status), show)
        return status

    @contextlib.contextmanager
    def live(self, sample: Callable[[], Sequence[float]]):
        """Keep the display updated from a background thread while the body runs (for work that
        holds the calling thread, such as a benchmark's serial loop)."""
        stop = threading.Event()

        def tick():
            while not stop.wait(REFRESH / 2):
                self.update(sample())

        # Run in a copy of this thread's context: ipykernel keeps the cell's parent header in a
        # context variable, and without it a thread's output goes to whichever cell ran last.
        context = contextvars.copy_context()
        ticker = threading.Thread(target=context.run, args=(tick,), name="ipy_parallel-monitor", daemon=True)
        ticker.start()
        try:
            yield self
        finally:
            stop.set()
            ticker.join()

    def _draw(self, status: Status) -> None:
        pass

    def _finish(self, status: Status, text: str, show: bool) -> None:
        if show:
            print(text, file=self.stdout, flush=True)


class TerminalMonitor(Monitor):
    """Redraws its lines in place with ANSI escapes (terminal IPython)."""

    def __init__(self, tracker: Tracker, **kwargs):
        super().__init__(tracker, **kwargs)
        self._drawn = 0  # lines on screen below the output
        self._status: Status | None = None

    def _erase(self) -> None:
        if self._drawn:
            self.stdout.write(f"\x1b[{self._drawn}F\x1b[J")  # up to the first line, clear below
            self._drawn = 0

    def _draw(self, status: Status) -> None:
        width = _terminal_width()
        lines = [line[:width] for line in format_lines(status, width)]
        self._erase()
        self.stdout.write("".join(line + "\n" for line in lines))
        self.stdout.flush()
        self._drawn = len(lines)
        self._status = status

    def write(self, stream: str, text: str) -> None:
        if not self._drawn:
            return super().write(stream, text)
        self.stderr.flush()
        self._erase()
        super().write(stream, text)
        self._draw(self._status)

    def _finish(self, status: Status, text: str, show: bool) -> None:
        self._erase()
        self.stdout.flush()
        super()._finish(status, text, show)


class NotebookMonitor(Monitor):
    """An updating display in the notebook (ipykernel): created when the run has lasted
    SHOW_AFTER seconds, updated in place, and replaced by the summary at the end."""

    def __init__(self, tracker: Tracker, **kwargs):
        super().__init__(tracker, **kwargs)
        self._handle = None

    @staticmethod
    def _bundle(text: str) -> dict:
        return {"text/plain": text, "text/html": _pre(text)}

    def _draw(self, status: Status) -> None:
        from IPython.display import display

        bundle = {"text/plain": "\n".join(format_lines(status)), "text/html": format_html(status)}
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)

    def _finish(self, status: Status, text: str, show: bool) -> None:
        if self._handle is not None:
            self._handle.update(self._bundle(text), raw=True)
        elif show:
            super()._finish(status, text, show)


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 80


def make_monitor(n_workers: int, enabled: bool = True, shell=None, label: str = "%%parallel",
                 per_worker: bool = True) -> Monitor:
    """The front end for where we are: a notebook kernel, a terminal, or neither (summary only).
    ``enabled=False`` shows nothing at all."""
    tracker = Tracker(n_workers, label=label, per_worker=per_worker)
    if not enabled:
        return Monitor(tracker, summary=False)
    kind = type(shell).__name__ if shell is not None else ""
    if kind in ("ZMQInteractiveShell", "XPythonShell"):  # ipykernel, xeus-python: both publish displays
        return NotebookMonitor(tracker)
    if kind == "TerminalInteractiveShell" and _isatty(sys.stdout):
        return TerminalMonitor(tracker)
    return Monitor(tracker)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
