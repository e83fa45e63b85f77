"""The live display: the status model, its pure formatters, and the terminal/notebook/summary front ends."""

import io

import pytest

from ipy_parallel.ipython import display
from ipy_parallel.ipython.display import (LabelledOutput, Monitor, NotebookMonitor, Status, TerminalMonitor, Tracker,
                                  format_html, format_lines, format_summary, make_monitor)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_tracker_computes_recent_and_total_use():
    clock = FakeClock()
    tracker = Tracker(2, cores=2, clock=clock)
    clock.now += 0.5
    s = tracker.sample([0.5, 0.25])
    assert s.elapsed == pytest.approx(0.5) and s.recent == pytest.approx((1.0, 0.5))
    clock.now += 0.5
    s = tracker.sample([0.9, 0.75])
    assert s.recent == pytest.approx((0.8, 1.0)) and s.recent_percent == pytest.approx(180)
    assert s.total_cpu == pytest.approx(1.65) and s.average_percent == pytest.approx(165)


def test_lines_for_few_workers_have_a_bar_each():
    s = Status(2, 2, 1.25, (1.2, 0.6), (0.99, 0.5))
    lines = format_lines(s, width=60)
    assert lines[0] == "%%parallel · 2 workers · 1.2 s · 149% CPU of 200% on 2 cores"
    assert lines[1].startswith("[0] ██████████") and lines[1].endswith(" 99%     1.20 s CPU")
    assert lines[2].startswith("[1] ███") and "·" in lines[2] and lines[2].endswith(" 50%     0.60 s CPU")


def test_lines_for_many_workers_are_sparklines_of_their_fair_share():
    s = Status(20, 2, 2.0, (0.2,) * 20, (0.0,) * 10 + (0.05,) * 5 + (0.1,) * 5)
    lines = format_lines(s, width=80)
    assert len(lines) == 2
    # 20 workers on 2 cores: a fair share is 10% of a core, which draws as a full block.
    assert lines[1] == "[0-19] " + "▁" * 10 + "▅" * 5 + "█" * 5
    wide = format_lines(Status(200, 2, 1.0, (0.0,) * 200, (0.0,) * 200), width=80)
    assert [l.split()[0] for l in wide[1:]] == ["[0-67]", "[68-135]", "[136-199]"]


def test_summary_and_html():
    s = Status(4, 2, 2.0, (1.0, 1.0, 1.0, 0.96), (0.0,) * 4, done=True)
    assert format_summary(s) == "%%parallel: 4 workers, 2.00 s wall, 3.96 s CPU, 198% CPU of 200% on 2 cores"
    assert format_html(s) == f'<pre class="ipy-parallel-monitor" style="line-height:1.15">{format_summary(s)}</pre>'


def test_labelled_output_keeps_lines_whole():
    got = []
    out = LabelledOutput(lambda stream, text: got.append((stream, text)))
    out.feed(0, "stdout", "par")
    out.feed(1, "stdout", "other\n")
    out.feed(0, "stdout", "tial\nnext")
    out.feed(0, "stderr", "e1\ne2\n")
    out.flush()
    assert got == [("stdout", "[1] other\n"), ("stdout", "[0] partial\n"), ("stderr", "[0] e1\n[0] e2\n"),
                   ("stdout", "[0] next\n")]


@pytest.fixture
def instant(monkeypatch):
    """No waiting before the first draw or between draws."""
    monkeypatch.setattr(display, "SHOW_AFTER", 0.0)
    monkeypatch.setattr(display, "REFRESH", 0.0)


def test_terminal_monitor_redraws_in_place(instant):
    out = io.StringIO()
    clock = FakeClock()
    m = TerminalMonitor(Tracker(2, cores=2, clock=clock), stdout=out, stderr=out)
    clock.now += 1
    m.update([1.0, 1.0])
    first = out.getvalue()
    assert first.count("\n") == 3 and "\x1b[" not in first
    m.write("stdout", "[0] hello\n")
    clock.now += 1
    m.update([2.0, 1.5])
    text = out.getvalue()
    assert text.count("\x1b[3F\x1b[J") == 2  # erased before the output and before the redraw
    assert "[0] hello\n" in text
    status = m.close([2.0, 1.5])
    assert out.getvalue().endswith("\x1b[3F\x1b[J" + format_summary(status) + "\n")
    assert m.updates == 2


def test_plain_monitor_prints_only_the_summary(instant):
    out = io.StringIO()
    clock = FakeClock()
    m = Monitor(Tracker(2, cores=2, clock=clock), stdout=out)
    clock.now += 1
    m.update([1.0, 1.0])
    assert out.getvalue() == ""
    m.close([1.0, 1.0])
    assert out.getvalue().startswith("%%parallel: 2 workers, 1.00 s wall, 2.00 s CPU, 200% CPU")


def test_short_runs_show_nothing():
    out = io.StringIO()
    m = TerminalMonitor(Tracker(2), stdout=out)
    m.update([0.0, 0.0])
    m.close([0.0, 0.0])
    assert out.getvalue() == ""


def test_disabled_monitor_is_silent(instant):
    out = io.StringIO()
    m = make_monitor(2, enabled=False)
    m._stdout = out
    m.update([1.0, 1.0])
    m.close([1.0, 1.0])
    assert out.getvalue() == ""


def test_front_end_chosen_by_shell():
    class ZMQInteractiveShell:
        pass

    class TerminalInteractiveShell:
        pass

    class XPythonShell:  # xeus-python's
        pass

    assert type(make_monitor(2, shell=ZMQInteractiveShell())) is NotebookMonitor
    assert type(make_monitor(2, shell=XPythonShell())) is NotebookMonitor
    # Under pytest stdout is not a terminal: the terminal shell falls back to the summary only.
    assert type(make_monitor(2, shell=TerminalInteractiveShell())) is Monitor
    assert type(make_monitor(2, shell=None)) is Monitor
