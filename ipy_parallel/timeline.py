"""RunTimeline: where a run's time went, worker by worker (busy or idle over time, when each finished), as text, inline SVG or a matplotlib plot."""

from __future__ import annotations

import html
import os
from bisect import bisect_right
from dataclasses import dataclass
from collections.abc import Sequence

__all__ = ["RunTimeline", "MAX_SAMPLES", "usable_cores"]

#: Samples a run keeps: past this, every other one is dropped. The CPU readings are cumulative,
#: so dropping one loses no CPU time, only detail (an hour-long run keeps a sample every ~2 s).
MAX_SAMPLES = 2048

_SPARKS = "▁▂▃▄▅▆▇█"
_IDLE = "·"  # a column where the worker used (almost) no CPU
_STATE_COLOURS = {"ok": "#2e7d32", "failed": "#c62828", "stopped": "#ef6c00"}


@dataclass(frozen=True)
class RunTimeline:
    """A finished run's CPU use over time, per worker, and when each worker finished.

    ``times`` are the instants the run's CPU clocks were read (seconds since it started; 10 a
    second while it was waited for, and at its end); ``cpu[k][i]`` is the CPU seconds worker
    ``workers[i]`` had used by ``times[k]``. ``ends[i]`` is when that worker finished (its Result's
    wall time; None if not known) and ``states[i]`` how: "ok", "failed" or "stopped".

    Shown as text (str(), a sparkline row per worker), as inline SVG in a notebook
    (``_repr_html_``, saved with it), or with matplotlib (``plot()``).
    """

    workers: tuple[int, ...]
    cores: int | None  # this machine's that the run could use; None: each worker had one (a cluster's engines)
    wall: float
    times: tuple[float, ...]
    cpu: tuple[tuple[float, ...], ...]
    ends: tuple[float | None, ...]
    states: tuple[str, ...]

    @classmethod
    def of(
        cls,
        workers: Sequence[int],
        samples: Sequence[tuple[float, Sequence[float]]],
        ends: Sequence[float | None],
        states: Sequence[str],
        cores: int | None = None,
    ) -> RunTimeline:
        """From (instant, CPU seconds per worker) samples, the first at the run's start."""
        times = tuple(t for t, _ in samples)
        return cls(
            tuple(workers),
            cores,
            times[-1] if times else 0.0,
            times,
            tuple(tuple(c) for _, c in samples),
            tuple(ends),
            tuple(states),
        )

    @property
    def cpu_time(self) -> float:
        """CPU seconds all the workers used in the run."""
        return sum(self.cpu[-1]) if self.cpu else 0.0

    @property
    def usable(self) -> int:
        """min(workers, cores): how many cores the run could keep busy."""
        return len(self.workers) if self.cores is None else min(len(self.workers), self.cores)

    @property
    def efficiency(self) -> float:
        """CPU time / (wall time x min(workers, cores)): 1.0 when every core it could use was busy throughout."""
        return self.cpu_time / (self.wall * self.usable) if self.wall > 0 and self.usable else 0.0

    def busy(self, columns: int) -> list[list[float]]:
        """Per worker, its CPU use (0..1 of a core) in each of ``columns`` equal slices of the run."""
        if columns < 1 or self.wall <= 0 or len(self.times) < 2:
            return [[0.0] * max(columns, 0) for _ in self.workers]
        edges = [self.wall * c / columns for c in range(columns + 1)]
        rows = []
        for i in range(len(self.workers)):
            used = [self._cpu_at(i, t) for t in edges]
            rows.append(
                [
                    min(max((b - a) / (edges[c + 1] - edges[c]), 0.0), 1.0)
                    for c, (a, b) in enumerate(zip(used, used[1:]))
                ]
            )
        return rows

    def _cpu_at(self, i: int, t: float) -> float:
        """Worker i's CPU seconds at instant t, read straight between the two samples around it;
        from its end on, its last reading (it used none after), reached at its end."""
        k = bisect_right(self.times, t)
        if k == 0:
            return self.cpu[0][i]
        last, end = self.cpu[-1][i], self.ends[i]
        ended = end is not None and end < self.wall
        if k >= len(self.times) or (ended and t >= end):
            return last
        t0, c0 = self.times[k - 1], self.cpu[k - 1][i]
        t1, c1 = self.times[k], self.cpu[k][i]
        if ended and t1 >= end:  # the next reading is past its end: it reached its last one there
            t1, c1 = end, last
        return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1

    def summary(self) -> str:
        n, usable = len(self.workers), self.usable
        of = f"{usable} core{'s' if usable != 1 else ''}" + ("" if self.cores is not None else ", one per worker")
        return (
            f"{n} worker{'s' if n != 1 else ''}, {self.wall:.2f} s wall, {self.cpu_time:.2f} s CPU: "
            f"efficiency {self.efficiency:.0%} of {of}"
        )

    def format_text(self, width: int = 40) -> str:
        """A sparkline row per worker (· where it was idle), when it finished, and the run's efficiency."""
        label = max(len(f"[{w}]") for w in self.workers) if self.workers else 3
        lines = [f"timeline: {self.summary()}"]
        for w, row, end, state, cpu in zip(self.workers, self.busy(width), self.ends, self.states, self._totals()):
            bar = "".join(_IDLE if f < 1 / 16 else _SPARKS[min(int(f * len(_SPARKS)), len(_SPARKS) - 1)] for f in row)
            when = f"{'done' if state == 'ok' else state} at {end:.2f} s" if end is not None else state
            lines.append(f"  {f'[{w}]':>{label}} {bar}  {when}, {cpu:.2f} s CPU")
        lines.append(f"  {'':>{label}} 0 s{f'{self.wall:.2f} s':>{width - 3}}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_text()

    def _repr_pretty_(self, printer, cycle) -> None:  # IPython's terminal display
        printer.text(self.format_text())

    def _repr_html_(self) -> str:
        return self.svg()

    def svg(self, width: int = 600, columns: int = 120) -> str:
        """The timeline as inline SVG: a row per worker shaded by how busy it was, a mark where it
        finished (green: ok, red: raised, orange: stopped)."""
        row_h, label_w, top = 18, 44, 20
        plot_w = width - label_w - 8
        height = top + row_h * len(self.workers) + 18
        cell = plot_w / columns
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="monospace" font-size="11" class="ipy-parallel-timeline">',
            f'<text x="0" y="13">{html.escape("timeline: " + self.summary())}</text>',
        ]
        for r, (w, row, end, state) in enumerate(zip(self.workers, self.busy(columns), self.ends, self.states)):
            y = top + r * row_h
            parts.append(f'<text x="0" y="{y + 13}">[{w}]</text>')
            parts.append(f'<rect x="{label_w}" y="{y + 2}" width="{plot_w}" height="{row_h - 4}" fill="#eeeeee"/>')
            for start, length, f in _runs(row):  # one rect per stretch of equal shade: no seams, a small SVG
                if f > 0:
                    parts.append(
                        f'<rect x="{label_w + start * cell:.1f}" y="{y + 2}" width="{length * cell:.1f}" '
                        f'height="{row_h - 4}" fill="#1565c0" fill-opacity="{f:.2f}"/>'
                    )
            if end is not None and self.wall > 0:
                x = label_w + plot_w * min(end / self.wall, 1.0)
                parts.append(
                    f'<rect x="{x - 1:.1f}" y="{y}" width="2" height="{row_h}" fill="{_STATE_COLOURS.get(state, "#000")}">'
                    f"<title>worker {w}: {html.escape(state)} at {end:.3f} s</title></rect>"
                )
        axis = top + row_h * len(self.workers) + 13
        parts.append(f'<text x="{label_w}" y="{axis}">0 s</text>')
        parts.append(f'<text x="{width - 8}" y="{axis}" text-anchor="end">{self.wall:.2f} s</text>')
        parts.append("</svg>")
        return "".join(parts)

    def plot(self, ax=None, columns: int = 200):
        """Draw it with matplotlib (on ``ax``, else a new figure's); returns the Axes."""
        try:
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("RunTimeline.plot() needs matplotlib: pip install matplotlib") from None
        if ax is None:
            _, ax = plt.subplots(figsize=(8, 0.4 * len(self.workers) + 1))
        n = len(self.workers)
        ax.imshow(
            self.busy(columns),
            aspect="auto",
            cmap="Blues",
            vmin=0,
            vmax=1,
            interpolation="nearest",
            extent=(0, self.wall, n - 0.5, -0.5),
        )
        for r, (end, state) in enumerate(zip(self.ends, self.states)):
            if end is not None:
                ax.plot([end, end], [r - 0.5, r + 0.5], color=_STATE_COLOURS.get(state, "black"), linewidth=2)
        ax.set_yticks(range(n), [f"[{w}]" for w in self.workers])
        ax.set_xlabel("seconds since the run started")
        ax.set_title(f"timeline: {self.summary()}", fontsize=9)
        return ax

    def _totals(self) -> tuple[float, ...]:
        return self.cpu[-1] if self.cpu else (0.0,) * len(self.workers)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), not every core of the machine."""
    count = getattr(os, "process_cpu_count", os.cpu_count)()  # 3.13+: affinity-aware
    return count or 1


def _runs(row: Sequence[float], steps: int = 32) -> list[tuple[int, int, float]]:
    """(first column, columns, shade) for each stretch of columns whose shade, in ``steps`` levels, is the same."""
    runs: list[tuple[int, int, float]] = []
    for c, f in enumerate(row):
        shade = round(f * steps) / steps
        if runs and runs[-1][2] == shade:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1, shade)
        else:
            runs.append((c, 1, shade))
    return runs
