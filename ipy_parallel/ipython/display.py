"""Live CPU display of a run: one status model, pure formatters, and terminal/notebook/summary front ends.

The model (Status, from a Tracker fed the workers' thread CPU clocks and which of them still run)
knows nothing of where it is shown; format_lines/format_summary/format_html turn it into text or
HTML; a Monitor shows that live where it can (the tqdm way) and ends with a one-line summary that
says how the run ended (✓, ✗ which workers raised, stopped).
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
from typing import TextIO
from collections.abc import Callable, Sequence

from ..bars import text_bar
from ..results import Outcome

__all__ = [
    "Status",
    "Tracker",
    "format_lines",
    "format_summary",
    "format_html",
    "LabelledOutput",
    "Monitor",
    "TerminalMonitor",
    "NotebookMonitor",
    "make_monitor",
    "in_notebook",
]

SHOW_AFTER = 0.3  # seconds a run must last before a live display appears
REFRESH = 0.2  # seconds between redraws (5 a second)
_SPARKS = "▁▂▃▄▅▆▇█"
_MAX_BARS = 8  # above this many workers, one sparkline character (HTML: a small square) each instead of a bar


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
    busy: tuple[bool, ...] | None = None  # per worker: still running (None: not known)
    outcome: Outcome | None = None  # of a finished run (None: not said)
    failed: tuple[int, ...] = ()  # the workers that raised (positions, as in cpu)
    ids: tuple[int, ...] | None = None  # each position's worker id (a run on some targets); None: 0..n-1
    # Per worker, its position in its worker.progress(): (done, total or None), None if it has none;
    # and its rate since it was first seen (items a second, None until it can be told).
    progress: tuple[tuple[int, int | None] | None, ...] | None = None
    rates: tuple[float | None, ...] | None = None
    # The run's own count, where its workers have none of their own (an executor's map): (done, total).
    overall: tuple[int, int | None] | None = None

    def worker_id(self, i: int) -> int:
        return i if self.ids is None else self.ids[i]

    def position(self, i: int) -> tuple[int, int | None] | None:
        return None if self.progress is None or i >= len(self.progress) else self.progress[i]

    def rate(self, i: int) -> float | None:
        return None if self.rates is None or i >= len(self.rates) else self.rates[i]

    @property
    def has_progress(self) -> bool:
        return self.overall is not None or (self.progress is not None and any(p is not None for p in self.progress))

    @property
    def items(self) -> tuple[int, int | None]:
        """Items done by every worker that reports (or the run's own count), and of how many
        (None: some total not known)."""
        if self.overall is not None:
            return self.overall
        known = [p for p in self.progress or () if p is not None]
        totals = [t for _, t in known]
        return sum(d for d, _ in known), (None if None in totals else sum(totals))

    @property
    def items_rate(self) -> float:
        """The whole run's items a second, over its whole time."""
        return self.items[0] / self.elapsed if self.elapsed > 0 else 0.0

    def eta(self, i: int | None = None) -> float | None:
        """Seconds left for worker i (None: the run, its slowest worker), at its rate so far."""
        if i is None and self.overall is not None:
            done, total = self.overall
            rate = self.items_rate
            return None if total is None or not rate else max(total - done, 0) / rate
        if i is None:
            etas = [self.eta(k) for k in range(len(self.progress or ())) if self.position(k) is not None]
            return None if not etas or None in etas else max(etas)
        position, rate = self.position(i), self.rate(i)
        if position is None or position[1] is None:
            return None
        left = max(position[1] - position[0], 0)
        if left == 0:
            return 0.0
        return left / rate if rate else None

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

    def state(self, worker: int) -> str:
        """ "running", "done" (finished, or the run ended well), "failed" (it raised) or "stopped"
        (still running when the run was interrupted or timed out)."""
        if worker in self.failed:
            return "failed"
        if self.busy is not None and worker < len(self.busy) and not self.busy[worker]:
            return "done"
        if self.done:
            return "stopped" if self.outcome == "stopped" else "done"
        return "running"


class Tracker:
    """Turns successive readings of the workers' CPU clocks into Status snapshots."""

    def __init__(
        self,
        n_workers: int,
        cores: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        label: str = "%%parallel",
        per_worker: bool = True,
        ids: Sequence[int] | None = None,
    ):
        self.n_workers = n_workers
        self.ids = None if ids is None else tuple(ids)
        self.cores = cores or os.cpu_count() or 1
        self.label = label
        self.per_worker = per_worker
        self._clock = clock
        self._start = self._last_time = clock()
        self._last_cpu = (0.0,) * n_workers
        self._first: dict[int, tuple[float, int, int | None]] = {}  # per worker: (time, done, total) first seen

    def _rates(self, now: float, progress: Sequence | None) -> tuple[float | None, ...] | None:
        """Each worker's items a second since its progress was first seen (a new one, with
        fewer done or another total, starts again)."""
        if progress is None:
            return None
        rates = []
        for i, position in enumerate(progress):
            first = self._first.get(i)
            if position is None:
                rates.append(None)
                continue
            done, total = position
            if first is None or done < first[1] or total != first[2]:
                # Seen first now: counted from the run's start if it is the run's first reading.
                first = self._first[i] = (self._start, 0, total) if first is None else (now, done, total)
            t0, d0, _ = first
            rates.append((done - d0) / (now - t0) if now - t0 >= 0.05 and done > d0 else None)
        return tuple(rates)

    def sample(
        self,
        cpu: Sequence[float],
        done: bool = False,
        busy: Sequence[bool] | None = None,
        outcome: str | None = None,
        failed: Sequence[int] = (),
        progress: Sequence[tuple[int, int | None] | None] | None = None,
        overall: tuple[int, int | None] | None = None,
    ) -> Status:
        now = self._clock()
        cpu = tuple(cpu)
        interval = now - self._last_time
        top = 1.0 if self.per_worker else float(self.cores)  # a thread cannot use more than a core
        if interval > 0:
            recent = tuple(min(max((c - p) / interval, 0.0), top) for c, p in zip(cpu, self._last_cpu))
        else:
            recent = (0.0,) * len(cpu)
        self._last_time, self._last_cpu = now, cpu
        return Status(
            self.n_workers,
            self.cores,
            now - self._start,
            cpu,
            recent,
            done,
            self.label,
            self.per_worker,
            None if busy is None else tuple(bool(b) for b in busy),
            outcome,
            tuple(sorted(set(failed))),
            self.ids,
            None if progress is None else tuple(progress),
            self._rates(now, progress),
            overall,
        )


# -- text (terminal, text/plain) ---------------------------------------------------------------
# Only characters one column wide in every terminal font: no emoji, nothing East Asian "wide".

_TEXT_STATE = {"done": "✓ done", "failed": "✗ raised", "stopped": "■ stopped"}
_TEXT_MARK = {"done": "✓", "failed": "✗", "stopped": "■"}


def _spark(fraction: float) -> str:
    return _SPARKS[min(int(max(fraction, 0.0) * len(_SPARKS)), len(_SPARKS) - 1)]


def _workers(n: int) -> str:
    return "1 worker" if n == 1 else f"{n} workers"


def _header_rest(s: Status) -> str:
    """The live header after the label."""
    who = f" · {_workers(s.n_workers)}" if s.per_worker else ""
    return f"{who} · {s.elapsed:.1f} s · {s.recent_percent:.0f}% CPU of {100 * s.cores}% on {s.cores} cores"


def _header(s: Status) -> str:
    return s.label + _header_rest(s)


def _count(n: float) -> str:
    """A count or a rate, short, as tqdm shows them: 950, 9.5k, 12.3M."""
    for unit in ("", "k", "M", "G", "T"):
        if abs(n) < 999.5:
            return f"{n:.0f}" if not unit else f"{n:.3g}{unit}"
        n /= 1000
    return f"{n:.3g}P"


def _duration(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour on."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _fraction(position: tuple[int, int | None]) -> float | None:
    done, total = position
    if total is None:
        return None
    return 1.0 if total == 0 else min(done / total, 1.0)


def _progress_words(done: int, total: int | None, rate: float | None, eta: float | None) -> str:
    """ "5.7M/10M 1.9M/s ETA 0:02": what a bar says beside it."""
    words = [_count(done) if total is None else f"{_count(done)}/{_count(total)}"]
    if rate:
        words.append(f"{_count(rate)}/s")
    if eta is not None:
        words.append(f"ETA {_duration(eta)}")
    return " ".join(words)


def _worker_progress(s: Status, i: int) -> str:
    done, total = s.position(i)
    return _progress_words(done, total, s.rate(i), s.eta(i) if s.state(i) == "running" else None)


def _run_progress(s: Status) -> tuple[float | None, str]:
    """The whole run's progress: its fraction (None: a total not known) and what it says."""
    done, total = s.items
    return _fraction((done, total)), _progress_words(done, total, s.items_rate or None, None if s.done else s.eta())


def _fair_share(s: Status) -> float:
    # A worker's CPU use is drawn against its fair share of the cores, so that 20 workers keeping
    # 2 cores busy show full blocks, not 10% slivers.
    return min(1.0, s.cores / s.n_workers) if s.n_workers else 1.0


def format_lines(s: Status, width: int = 80) -> list[str]:
    """The live display as text lines: a header, then a bar per worker ("✓ done" for one that has
    finished), or a sparkline character each when there are many."""
    lines = [_header(s)]
    if not s.per_worker:
        bar_width = max(10, min(40, width - 20))
        lines.append(f"[all] {text_bar(sum(s.recent) / s.cores, bar_width)} {s.recent_percent:4.0f}%")
    elif s.n_workers <= _MAX_BARS:
        bar_width = max(10, min(30, width - 30))
        for i, (u, c) in enumerate(zip(s.recent, s.cpu)):
            state, position = s.state(i), s.position(i)
            if position is not None:  # its bar is how far it has come, its CPU use a figure beside
                fraction = _fraction(position)
                if state != "running":
                    head = _TEXT_STATE[state].ljust(bar_width + 5)
                elif fraction is None:
                    head = f"{text_bar(u, bar_width)} {100 * u:3.0f}%"
                else:
                    head = f"{text_bar(fraction, bar_width)} {100 * fraction:3.0f}%"
                cpu = f"{100 * u:3.0f}% CPU" if state == "running" else f"{c:.2f} s CPU"
                lines.append(f"[{s.worker_id(i)}] {head}  {_worker_progress(s, i)} · {cpu}")
            elif state == "running":
                lines.append(f"[{s.worker_id(i)}] {text_bar(u, bar_width)} {100 * u:3.0f}%  {c:7.2f} s CPU")
            else:  # not a 0% bar: a finished worker must not look like a stuck one
                lines.append(f"[{s.worker_id(i)}] {_TEXT_STATE[state].ljust(bar_width)}       {c:7.2f} s CPU")
    else:
        share = _fair_share(s)
        per_line = max(10, width - 12)
        for lo in range(0, s.n_workers, per_line):
            hi = min(lo + per_line, s.n_workers) - 1
            lines.append(
                f"[{s.worker_id(lo)}-{s.worker_id(hi)}] "
                + "".join(
                    _spark(s.recent[i] / share) if s.state(i) == "running" else _TEXT_MARK[s.state(i)]
                    for i in range(lo, hi + 1)
                )
            )
    if s.per_worker and (s.overall is not None or (s.n_workers > _MAX_BARS and s.has_progress)):
        fraction, words = _run_progress(s)
        bar = "" if fraction is None else f"{text_bar(fraction, 20)} {100 * fraction:3.0f}%  "
        lines.append(f"[all] {bar}{words}")
    return lines


def _outcome_text(s: Status) -> str:
    """How the run ended, in words ("" when not said or it went well)."""
    if s.outcome == "failed":
        if not s.failed or not s.per_worker:
            return "failed"
        if s.n_workers == 1:
            return "the worker raised"
        return f"{len(s.failed)} of {s.n_workers} workers raised"
    return "stopped" if s.outcome == "stopped" else ""


def _summary_base(s: Status) -> str:
    who = f"{_workers(s.n_workers)}, " if s.per_worker else ""
    items = ""
    if s.has_progress:
        done, total = s.items
        counted = _count(done) if total is None or done == total else f"{_count(done)} of {_count(total)}"
        items = f", {counted} items at {_count(s.items_rate)}/s"
    return (
        f"{s.label}: {who}{s.elapsed:.2f} s wall, {s.total_cpu:.2f} s CPU, "
        f"{s.average_percent:.0f}% CPU of {100 * s.cores}% on {s.cores} cores{items}"
    )


def format_summary(s: Status) -> str:
    """The one line left when a run ends, with its outcome last (" · ✓", " · ✗ 2 of 4 workers
    raised", " · stopped") so that the line still starts with the label."""
    marks = {"ok": "✓", "failed": "✗ " + _outcome_text(s), "stopped": "stopped"}
    mark = marks.get(s.outcome)
    return _summary_base(s) + (f" · {mark}" if mark else "")


# -- HTML (notebooks) ---------------------------------------------------------------------------
# Inline styles only, and only properties and values JupyterLab's sanitizer keeps when it renders
# an untrusted notebook (hex/rgba colours, px/em/% lengths, display block/inline-block: no flex
# gap, no ch units; a CSS variable only after a plain declaration of the same property, which is
# what remains when the sanitizer drops the variable), so a saved notebook and nbconvert show the same.
# Fills are mid-tone (Material 600, between the 700s of JupyterLab's light theme and the 500s of
# its dark one, the colours tqdm.notebook's bars take); text keeps the theme's colour.

_COLOUR = {"running": "#1e88e5", "done": "#43a047", "failed": "#e53935", "stopped": "#fb8c00"}
_TRACK = "rgba(128,128,128,0.22)"  # the empty part of a bar: visible on white and on black
_NEUTRAL = "rgba(128,128,128,0.5)"
_MARK = {"done": "✓", "failed": "✗", "stopped": "■"}
_HTML_STATE = {"done": "done", "failed": "raised", "stopped": "stopped"}
_OUTCOME_STATE = {"ok": "done", "failed": "failed", "stopped": "stopped"}
# <pre> for the monospace font and so that, where styles are stripped (GitHub), each row still
# stands on its own line. Line height and padding leave room below the baseline: the overflow:auto
# that JupyterLab gives output <pre>s clipped underscores at line-height 1.15.
# The font is named: nbconvert's lab template gives output <pre>s the prose font, and the columns
# are sized for a monospace one (0.6em a character).
_ROOT = (
    "margin:0;padding:0.3em 0.6em 0.4em 0.6em;line-height:1.5;white-space:nowrap;word-break:normal;overflow-x:auto;"
    "font-family:Menlo,Consolas,'DejaVu Sans Mono',monospace;font-family:var(--jp-code-font-family,monospace);"
    "font-size:13px;font-size:var(--jp-code-font-size,13px);"
    "background-color:transparent;border-left:3px solid {accent}"
)
_ROW = '<span style="display:block"{title}>{body}</span>'
# The header and summary wrap in a narrow output area rather than hide their end behind a scrollbar
# (word-break:normal on the root: JupyterLab breaks output <pre>s anywhere, mid-word).
_LINE = '<span style="display:block;white-space:normal">{body}</span>'
# The notebook display before it has anything to show: renders as nothing (but an empty output
# strip) everywhere, a blank line in jupyter console.
_EMPTY = {"text/plain": "", "text/html": ""}


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _root(accent: str, rows: list[str]) -> str:
    # No whitespace right after <pre> (textContent starts with the header) and rows joined by "\n":
    # white-space:nowrap drops it between blocks, and it breaks the lines where styles are stripped.
    return f'<pre class="ipy-parallel-monitor" style="{_ROOT.format(accent=accent)}">' + "\n".join(rows) + "</pre>"


def _mark(state: str) -> str:
    return f'<b style="color:{_COLOUR[state]}">{_MARK[state]}</b>'


def _html_bar(fraction: float, colour: str, width_em: float) -> str:
    percent = max(0.0, min(fraction, 1.0)) * 100
    return (
        f'<span style="display:inline-block;width:{width_em:g}em;height:0.8em;vertical-align:middle;'
        f'background-color:{_TRACK};border-radius:3px;overflow:hidden">'
        f'<span style="display:block;height:100%;width:{percent:.1f}%;background-color:{colour}"></span></span>'
    )


def _cell(text: str, width_em: float, align: str = "right", extra: str = "") -> str:
    return f'<span style="display:inline-block;min-width:{width_em:g}em;text-align:{align}{extra}">{text}</span>'


def _worker_row(s: Status, i: int, id_em: float) -> str:
    state = s.state(i)
    u, c = s.recent[i], s.cpu[i]
    position = s.position(i)
    if position is not None:
        return _progress_row(s, i, id_em, state, position)
    if state == "running":
        bar, what = _html_bar(u, _COLOUR["running"], 14), f"{100 * u:.0f}%"
        title = f"worker {s.worker_id(i)}: {100 * u:.0f}% of a core now, {c:.2f} s CPU in this run"
    else:  # a full bar in the state's colour: finished is not the same as stuck at 0%
        bar, what = _html_bar(1.0, _COLOUR[state], 14), f"{_mark(state)} {_HTML_STATE[state]}"
        title = f"worker {s.worker_id(i)}: {_HTML_STATE[state]}, {c:.2f} s CPU in this run"
    # The spaces between the cells are there for textContent and copying ("[0] 99% 1.20 s CPU").
    body = " ".join([_cell(f"[{s.worker_id(i)}]", id_em, "left"), bar, _cell(what, 5.2), _cell(f"{c:.2f} s CPU", 7.5)])
    return _ROW.format(title=f' title="{_esc(title)}"', body=body)


def _progress_row(s: Status, i: int, id_em: float, state: str, position: tuple[int, int | None]) -> str:
    """A worker with a progress: its bar is how far it has come (its CPU use while it runs when
    its total is not known), then done/total, rate, ETA and its CPU."""
    u, c = s.recent[i], s.cpu[i]
    fraction = _fraction(position)
    words = _esc(_worker_progress(s, i))
    if state == "running":
        shown = u if fraction is None else fraction
        bar, what = _html_bar(shown, _COLOUR["running"], 14), f"{100 * shown:.0f}%"
        cpu = f"{100 * u:.0f}% CPU"
    else:
        bar = _html_bar(1.0 if fraction is None else fraction, _COLOUR[state], 14)
        what, cpu = f"{_mark(state)} {_HTML_STATE[state]}", f"{c:.2f} s CPU"
    title = f"worker {s.worker_id(i)}: {_worker_progress(s, i)}, {100 * u:.0f}% of a core now, {c:.2f} s CPU"
    body = " ".join([_cell(f"[{s.worker_id(i)}]", id_em, "left"), bar, _cell(what, 5.2), words, "·", cpu])
    return _ROW.format(title=f' title="{_esc(title)}"', body=body)


def _run_progress_row(s: Status) -> str:
    fraction, words = _run_progress(s)
    bar = (
        ""
        if fraction is None
        else _html_bar(fraction, _COLOUR["running"], 14) + " " + _cell(f"{100 * fraction:.0f}%", 5.2)
    )
    return _ROW.format(title="", body=" ".join(x for x in (_cell("[all]", 3.2, "left"), bar, _esc(words)) if x))


def _grid(s: Status) -> str:
    """Many workers: a small square each, its tint the worker's use of its fair share."""
    share = _fair_share(s)
    squares = []
    for i in range(s.n_workers):
        state = s.state(i)
        if state == "running":
            use = max(0.0, min(s.recent[i] / share, 1.0))
            # Idle: the grey of an empty bar; else the running blue, from a light tint to full (#rrggbbaa).
            colour = f"{_COLOUR['running']}{round(255 * (0.3 + 0.7 * use)):02x}" if use >= 0.02 else _TRACK
            title = f"[{s.worker_id(i)}] {100 * s.recent[i]:.0f}% of a core, {s.cpu[i]:.2f} s CPU"
        else:
            colour = _COLOUR[state]
            title = f"[{s.worker_id(i)}] {_HTML_STATE[state]}, {s.cpu[i]:.2f} s CPU"
        squares.append(
            f'<span title="{_esc(title)}" style="display:inline-block;width:10px;height:10px;'
            f'margin:0 2px 2px 0;vertical-align:top;border-radius:2px;background-color:{colour}"></span>'
        )
    # The squares wrap (white-space:normal); an 8px font makes each line 12px (1.5 x 8px) for 10px
    # squares, where the 13px text line would leave wide gaps.
    label = f"[{s.worker_id(0)}-{s.worker_id(s.n_workers - 1)}]"
    counts = ""
    if s.busy is not None or s.done:
        states = [s.state(i) for i in range(s.n_workers)]
        counts = " · ".join(
            f"{states.count(k)} {'busy' if k == 'running' else _HTML_STATE[k]}"
            for k in ("running", "done", "failed", "stopped")
            if states.count(k)
        )
        counts = "\n" + _ROW.format(title="", body=_esc(counts))
    return (
        _ROW.format(
            title="",
            body=_cell(label, 0.6 * len(label) + 0.6, "left", ";vertical-align:top")
            + '<span style="display:inline-block;white-space:normal;max-width:408px;font-size:8px;'
            'vertical-align:middle;padding-top:2px">' + "".join(squares) + "</span>",
        )
        + counts
    )


def _rows(s: Status) -> list[str]:
    if not s.per_worker:
        bar = _html_bar(sum(s.recent) / s.cores, _COLOUR["running"], 20)
        return [
            _ROW.format(
                title="", body=" ".join([_cell("[all]", 3.2, "left"), bar, _cell(f"{s.recent_percent:.0f}%", 4)])
            )
        ]
    if s.n_workers <= _MAX_BARS:
        id_em = 0.6 * len(f"[{max(s.worker_id(i) for i in range(s.n_workers))}]") + 0.4
        rows = [_worker_row(s, i, id_em) for i in range(s.n_workers)]
    else:
        rows = [_grid(s)]
    if s.overall is not None or (s.n_workers > _MAX_BARS and s.has_progress):
        rows.append(_run_progress_row(s))
    return rows


def _summary_html(s: Status, text: str | None = None) -> str:
    state = _OUTCOME_STATE.get(s.outcome)
    accent = _COLOUR[state] if state else _NEUTRAL
    line = _esc(text if text is not None else _summary_base(s))
    words = _outcome_text(s)
    if words and text is None:
        line += f" · <b>{_esc(words)}</b>"
    rows = [_LINE.format(body=(_mark(state) + " " if state else "") + line)]
    # A run that went well stays one line; one that did not shows each worker's fate (failed
    # workers' bars red), as long as there are workers to tell apart.
    if text is None and s.outcome in ("failed", "stopped") and s.per_worker:
        rows += _rows(s)
    return _root(accent, rows)


def format_html(s: Status) -> str:
    """The display as HTML: while running a header and a coloured bar per worker (a grid of small
    squares when there are many); when done, the summary line marked by the outcome."""
    if s.done:
        return _summary_html(s)
    header = _LINE.format(body=f"<b>{_esc(s.label)}</b>{_esc(_header_rest(s))}")
    return _root(_COLOUR["running"], [header] + _rows(s))


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
    least SHOW_AFTER seconds (a plain script, piped output), or of any background run.
    Subclasses draw live.

    ``background``: the run goes on after its cell has returned, so there is no point in waiting
    SHOW_AFTER before showing it, and its end must always be reported."""

    def __init__(
        self,
        tracker: Tracker,
        summary: bool = True,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        background: bool = False,
    ):
        self.tracker = tracker
        self.summary = summary
        self.background = background
        self._stdout = stdout
        self._stderr = stderr
        self._last_draw = float("-inf")
        self._busy: tuple[bool, ...] | None = None  # the latest, for the final status of a stopped run
        self._progress: tuple | None = None  # the workers' latest positions, likewise
        self._overall: tuple[int, int | None] | None = None  # and the run's own count
        self.updates = 0  # live redraws made, for tests and curiosity

    @property
    def stdout(self) -> TextIO:
        return self._stdout or sys.stdout

    @property
    def stderr(self) -> TextIO:
        return self._stderr or sys.stderr

    def begin(self) -> None:
        """The run has started. A background run's display appears now, before its cell returns
        (a notebook's; the others have nothing to show yet)."""

    def update(
        self,
        cpu: Sequence[float],
        busy: Sequence[bool] | None = None,
        progress: Sequence[tuple[int, int | None] | None] | None = None,
        overall: tuple[int, int | None] | None = None,
    ) -> None:
        """Feed the workers' CPU clocks and, if known, which workers still run and how far they
        have come (Run.progress()), or how far the run has (``overall``: an executor's map);
        redraws at most every REFRESH seconds, and only once the run has lasted SHOW_AFTER
        seconds (at once for a background run)."""
        if busy is not None:
            self._busy = tuple(bool(b) for b in busy)
        self._keep(progress, overall)
        now = time.monotonic()
        if now - self._last_draw < REFRESH:
            return
        status = self.tracker.sample(cpu, busy=self._busy, progress=self._progress, overall=self._overall)
        if status.elapsed < SHOW_AFTER and not self.background:
            return
        self._last_draw = now
        self.updates += 1
        self._draw(status)

    def write(self, stream: str, text: str) -> None:
        """Worker output; in a terminal it goes above the live display, in a notebook below it."""
        out = self.stderr if stream == "stderr" else self.stdout
        out.write(text)
        out.flush()

    def close(
        self,
        cpu: Sequence[float],
        text: str | None = None,
        outcome: Outcome = Outcome.OK,
        failed: Sequence[int] = (),
        progress: Sequence[tuple[int, int | None] | None] | None = None,
        overall: tuple[int, int | None] | None = None,
    ) -> Status:
        """End the display: it becomes ``text``, or the summary line (with ``outcome``, and for
        FAILED the ids of the workers that raised in ``failed``; with the items done, given the
        workers' last ``progress`` or the run's ``overall``) of a run that lasted at least
        SHOW_AFTER seconds or ran in the background (nothing for a shorter one)."""
        self._keep(progress, overall)
        status = self.tracker.sample(
            cpu,
            done=True,
            busy=self._busy,
            outcome=outcome,
            failed=failed,
            progress=self._progress,
            overall=self._overall,
        )
        show = text is not None or (self.summary and (self.background or status.elapsed >= SHOW_AFTER))
        self._finish(status, text, show)
        return status

    def _keep(self, progress: Sequence | None, overall: tuple[int, int | None] | None) -> None:
        """The latest known positions, for the frames and the summary that follow."""
        if progress is not None and any(p is not None for p in progress):
            self._progress = tuple(progress)
        if overall is not None:
            self._overall = overall

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

    def _finish(self, status: Status, text: str | None, show: bool) -> None:
        """``text``: the caller's, or None for the summary."""
        if show:
            print(text if text is not None else format_summary(status), file=self.stdout, flush=True)


class TerminalMonitor(Monitor):
    """Redraws its lines in place with ANSI escapes (terminal IPython, a cell that holds the prompt)."""

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

    def _finish(self, status: Status, text: str | None, show: bool) -> None:
        self._erase()
        self.stdout.flush()
        super()._finish(status, text, show)


class NotebookMonitor(Monitor):
    """One display in the notebook (ipykernel), updated in place, and always the cell's first
    output: created (empty) before the first worker output is written, or with the first live
    frame once the run has lasted SHOW_AFTER seconds, whichever comes first; replaced by the
    summary at the end, or left empty after a short run. A background run shows it at once.

    Created no earlier than needed: a display that stays empty still takes a blank strip of the
    output area, and a short cell that prints nothing should leave no trace at all."""

    def __init__(self, tracker: Tracker, **kwargs):
        super().__init__(tracker, **kwargs)
        self._handle = None
        self._shown = False  # the display holds something, not the empty placeholder

    def begin(self) -> None:
        if self.background:
            # Now, while the cell that started the run still executes: its later updates (from
            # another thread) only replace what this display shows.
            self._last_draw = time.monotonic()
            self.updates += 1
            self._draw(self.tracker.sample((0.0,) * self.tracker.n_workers))

    def _show(self, bundle: dict) -> None:
        if self._handle is None:
            from IPython.display import display

            self._handle = display(bundle, raw=True, display_id=True)
            if self._handle is None:  # no IPython shell running: display() printed it and keeps no handle
                self._handle = False
        elif self._handle:
            self._handle.update(bundle, raw=True)

    def write(self, stream: str, text: str) -> None:
        if self._handle is None:
            self._show(_EMPTY)  # hold the display's place above the output
        super().write(stream, text)

    def _draw(self, status: Status) -> None:
        self._show({"text/plain": "\n".join(format_lines(status)), "text/html": format_html(status)})
        self._shown = True

    def _finish(self, status: Status, text: str | None, show: bool) -> None:
        if show:
            plain = text if text is not None else format_summary(status)
            self._show({"text/plain": plain, "text/html": _summary_html(status, text)})
        elif self._shown:
            self._show(_EMPTY)
        self._shown = show


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 80


def make_monitor(
    n_workers: int,
    enabled: bool = True,
    shell=None,
    label: str = "%%parallel",
    per_worker: bool = True,
    background: bool = False,
    ids: Sequence[int] | None = None,
) -> Monitor:
    """The front end for where we are: a notebook kernel, a terminal, or neither (summary only).
    ``enabled=False`` shows nothing at all. ``background=True``: the run goes on after the cell
    returned; in a terminal the prompt is then live, so no redrawing, only the summary at the end."""
    tracker = Tracker(n_workers, label=label, per_worker=per_worker, ids=ids)
    kind = type(shell).__name__ if shell is not None else ""
    # xeus-python (0.19.0) publishes nothing written from another thread: a background run's
    # display would freeze at its first frame, so there it has none.
    if not enabled or (background and kind == "XPythonShell"):
        return Monitor(tracker, summary=False)
    if in_notebook(shell):
        return NotebookMonitor(tracker, background=background)
    if kind == "TerminalInteractiveShell" and _isatty(sys.stdout) and not background:
        return TerminalMonitor(tracker)
    return Monitor(tracker, background=background)


def in_notebook(shell) -> bool:
    """True for a shell whose displays reach a notebook front end, rich outputs and all: ipykernel's
    or xeus-python's (known by class name, so that neither needs importing)."""
    return type(shell).__name__ in ("ZMQInteractiveShell", "XPythonShell")


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
