"""The results of one %native_bench run, and what they allow to be said: speedups, the core ceiling, the flags."""

from __future__ import annotations

import os
import platform
import statistics
from dataclasses import dataclass, field
from pathlib import Path

NOISY = 0.25  # a method whose rounds differ by more than this fraction of their median is flagged
SLACK = 1.05  # a speedup above the core ceiling by more than this factor cannot be real
BUSY = 0.85  # serial below this fraction of one core: something else had the CPU
NOISE_FLOOR = 0.005  # seconds: rounds closer than this are not called noisy, whatever their ratio
OURS = "sub-interpreters (ipy_parallel)"  # the method this project is: its row is highlighted
OURS_THREADS = "threads backend (ipy_parallel)"  # our pool of threads: free-threaded CPython's answer
COMPILED = frozenset({"C++ kernel, GIL released"})  # not the same code as serial: no ceiling applies


class BenchmarkError(RuntimeError):
    """The methods of a benchmark did not compute the same values."""


@dataclass
class MethodResult:
    method: str
    note: str
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # process-tree CPU seconds, per round
    values: list | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """(slowest - fastest) / median over the rounds."""
        return (max(self.times) - min(self.times)) / self.median if self.median > 0 else 0.0

    @property
    def cpu_percent(self) -> float:
        """CPU used while it ran, in percent of one core (200 = two cores busy)."""
        return 100 * statistics.median(c / t for c, t in zip(self.cpu, self.times) if t > 0)


@dataclass
class BenchReport:
    """The results of one %native_bench run; its repr is the text table, _repr_html_ the same as
    a notebook's HTML table, plot() and save_plot() the chart."""

    tasks: int
    size: int
    repeat: int  # rounds, every method once per round
    cores: int
    rows: list[MethodResult]
    skipped: dict[str, str] = field(default_factory=dict)  # method -> why it did not run
    python: str = field(default_factory=lambda: f"CPython {platform.python_version()}")
    load: float | None = None  # the 1-minute load average as the run began

    def row(self, method: str) -> MethodResult:
        return next(r for r in self.rows if r.method == method)

    def speedup(self, method: str) -> float:
        return self.row("serial").median / self.row(method).median

    @property
    def ceiling(self) -> int:
        """The most speedup this machine allows for these tasks: min(tasks, cores)."""
        return min(self.tasks, self.cores)

    def efficiency(self, method: str) -> float:
        """Speedup over the ceiling, min(tasks, cores)."""
        return self.speedup(method) / self.ceiling

    @property
    def agree(self) -> bool:
        return all(r.values == self.rows[0].values for r in self.rows)

    def above_ceiling(self, method: str) -> bool:
        return method not in COMPILED and self.speedup(method) > self.ceiling * SLACK

    def noisy(self, method: str) -> bool:
        times = self.row(method).times
        return len(times) > 1 and self.row(method).spread > NOISY and max(times) - min(times) > NOISE_FLOOR

    @property
    def busy(self) -> bool:
        """Serial did not get a whole core: the other figures are not what this machine can do."""
        return self.row("serial").cpu_percent < 100 * BUSY

    @property
    def warnings(self) -> list[str]:
        """Why some figures must not be taken as fact; [] for a clean run."""
        said = []
        above = [r.method for r in self.rows if self.above_ceiling(r.method)]
        if above:
            said.append(
                f"! above the ceiling of {self.ceiling}x (min(tasks, cores)): {', '.join(above)}. No method "
                "can be that much faster than serial; serial's rounds were slowed by other load. Rerun."
            )
        noisy = [r.method for r in self.rows if self.noisy(r.method)]
        if noisy:
            said.append(
                f"~ noisy: the rounds of {', '.join(noisy)} differ by more than {NOISY:.0%} of their "
                "median; the machine was shared meanwhile."
            )
        if self.busy:
            said.append(
                f"the machine was busy: serial got only {self.row('serial').cpu_percent:.0f}% of one core, "
                "so every figure is low. Rerun when it is quieter."
            )
        return said

    @property
    def headline(self) -> str:
        """What ran: the report's first line."""
        return (
            f"native_bench: {self.tasks} tasks of n={self.size:,} (k = k*i % 1000000007), median of "
            f"{self.repeat} rounds, methods interleaved"
        )

    @property
    def machine(self) -> str:
        """Where it ran."""
        load = "" if self.load is None else f", load {self.load:.1f}"
        return f"{self.python}, {self.cores} cores{load}"

    # The renderers import this module for its constants, so they are imported when first used.

    def table(self) -> str:
        """The report as text (the terminal's, and text/plain): a row per method, our row marked
        ▶, a speedup bar per row with a | at the ceiling, flags on the figures, then the warnings."""
        from .render import text_table

        return text_table(self)

    def __repr__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        """The report as HTML for a notebook: the table of table(), our row highlighted, a bar per
        method up to a tick at the ceiling, each flag with a tooltip saying why."""
        from .render import html_table

        return html_table(self)

    def plot(self, ax=None):
        """A bar chart of the speedup over serial per method (matplotlib; longer is better), on
        ``ax`` or a new pyplot figure; returns the axes."""
        from .render import plot_speedups

        return plot_speedups(self, ax)

    def save_plot(self, path: str | os.PathLike | None = None, dpi: int = 120) -> Path:
        """Draw plot() into an image file (PNG unless the name says otherwise) and return its
        absolute path; by default native_bench-YYYYmmdd-HHMMSS.png in the current directory."""
        from .render import save_plot

        return save_plot(self, path, dpi)

    def show(self, notebook: bool, plot: bool = False, plot_file: str | os.PathLike | None = None) -> None:
        """Present the report where it ran: a notebook gets a display, anything else the printed
        table; the chart too with ``plot``, or saved in ``plot_file``."""
        from .render import show

        show(self, notebook, plot, plot_file)
