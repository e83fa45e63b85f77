"""The live display: the status model, its pure formatters, and the terminal/notebook/summary front ends."""

import io
import re
from dataclasses import replace
from html.parser import HTMLParser

import pytest

from helpers import terminal_ipython, terminal_text

from ipy_parallel.ipython import display
from ipy_parallel.ipython.display import (
    LabelledOutput,
    Monitor,
    NotebookMonitor,
    Status,
    TerminalMonitor,
    Tracker,
    format_html,
    format_lines,
    format_summary,
    make_monitor,
)

GREEN, RED, AMBER, BLUE = (display._COLOUR[k] for k in ("done", "failed", "stopped", "running"))


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
    assert [ln.split()[0] for ln in wide[1:]] == ["[0-67]", "[68-135]", "[136-199]"]


def test_tracker_passes_busy_and_outcome_through():
    tracker = Tracker(3, cores=2, clock=FakeClock())
    s = tracker.sample([0.1, 0.2, 0.3], busy=[1, 0, True])
    assert s.busy == (True, False, True) and s.outcome is None and s.failed == ()
    assert [s.state(i) for i in range(3)] == ["running", "done", "running"]
    s = tracker.sample([0.1, 0.2, 0.3], done=True, busy=s.busy, outcome="failed", failed=[2, 0, 2])
    assert s.done and s.outcome == "failed" and s.failed == (0, 2)
    assert [s.state(i) for i in range(3)] == ["failed", "done", "failed"]
    s = tracker.sample([0.1, 0.2, 0.3], done=True, busy=(True, False, True), outcome="stopped")
    assert [s.state(i) for i in range(3)] == ["stopped", "done", "stopped"]


def test_lines_show_a_finished_worker_as_done_not_as_0_percent():
    s = Status(2, 2, 1.0, (0.9, 0.3), (0.9, 0.0), busy=(True, False))
    lines = format_lines(s, width=60)
    assert lines[2].startswith("[1] ✓ done ") and "%" not in lines[2] and "█" not in lines[2]
    # Same columns as a running worker's line: the CPU seconds line up.
    assert lines[2].endswith("   0.30 s CPU") and len(lines[2]) == len(lines[1])
    unknown = format_lines(Status(2, 2, 1.0, (0.9, 0.3), (0.9, 0.0)), width=60)  # busy not known: a bar each
    assert unknown[2].startswith("[1] ··········") and unknown[2].endswith("  0%     0.30 s CPU")
    many = format_lines(Status(10, 2, 1.0, (0.1,) * 10, (0.2,) * 10, busy=(False,) * 2 + (True,) * 8))
    assert many[1] == "[0-9] ✓✓" + "█" * 8


def test_one_worker_is_singular():
    s = Status(1, 2, 1.0, (0.5,), (0.5,))
    assert format_lines(s)[0].startswith("%%parallel · 1 worker · 1.0 s")
    assert format_summary(Status(1, 2, 1.0, (0.5,), (0.0,), done=True)).startswith("%%parallel: 1 worker, 1.00 s wall")
    assert "1 worker ·" in text_of(format_html(s)) and "1 workers" not in format_html(s)
    failed = Status(1, 2, 1.0, (0.5,), (0.0,), done=True, outcome="failed", failed=(0,))
    assert format_summary(failed).endswith(" · ✗ the worker raised")


def test_summary_says_how_the_run_ended():
    base = "%%parallel: 4 workers, 2.00 s wall, 3.96 s CPU, 198% CPU of 200% on 2 cores"
    s = Status(4, 2, 2.0, (1.0, 1.0, 1.0, 0.96), (0.0,) * 4, done=True)
    assert format_summary(s) == base  # outcome not said: as before
    for outcome, failed, end in (
        ("ok", (), " · ✓"),
        ("failed", (1, 3), " · ✗ 2 of 4 workers raised"),
        ("stopped", (), " · stopped"),
        ("failed", (), " · ✗ failed"),
    ):
        assert format_summary(replace(s, outcome=outcome, failed=failed)) == base + end


def text_of(markup: str) -> str:
    """What a browser's textContent gives (tests/test_jupyterlab.py matches the display by it)."""
    parts = []
    parser = HTMLParser(convert_charrefs=True)
    parser.handle_data = parts.append
    parser.feed(markup)
    parser.close()
    return "".join(parts)


def rows(markup: str) -> list[str]:
    return markup.split("\n")  # format_html puts each line of the display on a line of its own


def test_html_running_workers_have_coloured_bars():
    s = Status(2, 2, 1.25, (1.2, 0.6), (0.99, 0.5))
    markup = format_html(s)
    assert markup.startswith('<pre class="ipy-parallel-monitor" ')  # tests/test_jupyterlab.py finds it so
    text = text_of(markup)
    assert text.startswith("%%parallel · 2 workers · 1.2 s · 149% CPU of 200% on 2 cores")
    assert re.search(r"\[0\] .*%\s+\d+\.\d\d s CPU", text)  # what tests/test_jupyterlab.py reads
    _, first, second = rows(markup)
    assert f"width:99.0%;background-color:{BLUE}" in first and " 99%<" not in first and ">99%<" in first
    assert f"width:50.0%;background-color:{BLUE}" in second and ">0.60 s CPU<" in second
    assert "✓" not in markup and "done" not in markup


def test_html_shows_a_finished_worker_as_done():
    s = Status(3, 2, 1.0, (0.9, 0.3, 0.8), (0.9, 0.0, 0.0), busy=(True, False, True))
    _, running, done, stuck = rows(format_html(s))
    assert f"width:100.0%;background-color:{GREEN}" in done and "✓" in done and "done" in text_of(done)
    assert "0%" not in text_of(done) and "0.30 s CPU" in text_of(done)
    assert f"width:0.0%;background-color:{BLUE}" in stuck and "0%" in text_of(stuck)  # a stuck one still is 0%
    assert "done" not in running


def test_html_summary_of_a_run_that_went_well_is_one_green_line():
    s = Status(2, 2, 2.0, (1.0, 1.0), (0.0, 0.0), done=True, outcome="ok")
    markup = format_html(s)
    assert len(rows(markup)) == 1 and f"border-left:3px solid {GREEN}" in markup
    assert f'<b style="color:{GREEN}">✓</b>' in markup
    assert text_of(markup) == "✓ %%parallel: 2 workers, 2.00 s wall, 2.00 s CPU, 100% CPU of 200% on 2 cores"


def test_html_summary_of_a_failed_run_marks_the_workers_that_raised():
    s = Status(4, 2, 2.0, (1.0, 0.5, 1.0, 0.2), (0.0,) * 4, done=True, outcome="failed", failed=(1, 3))
    markup = format_html(s)
    summary, *workers = rows(markup)
    assert f"border-left:3px solid {RED}" in markup and f'<b style="color:{RED}">✗</b>' in summary
    assert "2 of 4 workers raised" in text_of(summary) and GREEN not in summary
    assert len(workers) == 4
    for i in (1, 3):
        assert f"background-color:{RED}" in workers[i] and "raised" in text_of(workers[i])
    for i in (0, 2):
        assert f"background-color:{GREEN}" in workers[i] and RED not in workers[i] and "done" in text_of(workers[i])
    # Still what tests/test_jupyterlab.py and tests/test_kernel.py look for in a summary.
    assert re.search(r"%%parallel: 4 workers, \d+\.\d\d s wall, .*% CPU of \d+% on \d+ cores", text_of(markup))
    assert not text_of(markup).startswith("%%parallel · ")


def test_html_summary_of_a_stopped_run_is_amber():
    s = Status(2, 2, 2.0, (1.0, 0.5), (0.0,) * 2, done=True, outcome="stopped", busy=(True, False))
    summary, stopped, done = rows(format_html(s))
    assert f'<b style="color:{AMBER}">■</b>' in summary and text_of(summary).endswith(" · stopped")
    assert f"background-color:{AMBER}" in stopped and "stopped" in text_of(stopped)
    assert f"background-color:{GREEN}" in done and "done" in text_of(done)


def test_html_for_many_workers_is_a_grid_of_squares():
    n = 20
    s = Status(n, 2, 1.0, (0.1,) * n, (0.0,) * 5 + (0.05,) * 5 + (0.1,) * 10, busy=(True,) * 18 + (False,) * 2)
    markup = format_html(s)
    assert "width:14em" not in markup  # no bars
    squares = re.findall(r'<span title="\[(\d+)\] ([^"]*)" style="[^"]*background-color:([^;"]+)"', markup)
    assert [int(i) for i, _, _ in squares] == list(range(n))
    colours = [c for _, _, c in squares]
    assert colours[0] == display._TRACK  # idle
    assert colours[5] == BLUE + "a6" and colours[10] == BLUE + "ff"  # half and all of a fair share (2 cores / 20)
    assert colours[18:] == [GREEN, GREEN] and "18 busy · 2 done" in text_of(markup)
    failed = Status(n, 2, 1.0, (0.1,) * n, (0.0,) * n, done=True, outcome="failed", failed=(3,))
    assert f"background-color:{RED}" in format_html(failed) and "1 of 20 workers raised" in text_of(format_html(failed))


def test_html_escapes_every_text():
    s = Status(2, 2, 1.0, (0.5, 0.5), (0.5, 0.5), label='<script>&"x"')
    for status in (s, replace(s, done=True, outcome="failed", failed=(0,))):
        markup = format_html(status)
        assert "<script>" not in markup and '&"x"' not in markup and "&lt;script&gt;&amp;" in markup
        assert '<script>&"x"' in text_of(markup)
    bench = display._summary_html(Status(1, 2, 1.0, (1.0,), (0.0,), done=True, outcome="ok"), "a <b> & c")
    assert "a &lt;b&gt; &amp; c" in bench and text_of(bench) == "✓ a <b> & c"


STATES = [
    Status(2, 2, 1.0, (0.5, 0.5), (0.5, 0.0), busy=(True, False)),
    Status(20, 2, 1.0, (0.5,) * 20, (0.05,) * 20),
    Status(1, 2, 1.0, (1.5,), (1.5,), per_worker=False, label="native_bench"),
    Status(4, 2, 1.0, (0.5,) * 4, (0.0,) * 4, done=True, outcome="ok"),
    Status(4, 2, 1.0, (0.5,) * 4, (0.0,) * 4, done=True, outcome="failed", failed=(0,)),
    Status(4, 2, 1.0, (0.5,) * 4, (0.0,) * 4, done=True, outcome="stopped", busy=(True,) * 4),
    Status(2, 2, 1.0, (0.5, 0.5), (0.5, 0.0), busy=(True, False), progress=((5, 10), (3, None)), rates=(5.0, None)),
    Status(20, 2, 1.0, (0.5,) * 20, (0.05,) * 20, progress=((5, 10),) * 20),
]
# What JupyterLab's sanitizer keeps in an untrusted notebook (apputils/src/sanitizer.ts), of what we need.
KEPT = {
    "background-color",
    "border-left",
    "border-radius",
    "display",
    "font-family",
    "font-size",
    "font-weight",
    "height",
    "line-height",
    "margin",
    "max-width",
    "min-width",
    "overflow",
    "overflow-x",
    "padding",
    "padding-top",
    "text-align",
    "vertical-align",
    "white-space",
    "width",
    "word-break",
    "color",
}


@pytest.mark.parametrize(
    "s", STATES, ids=["live", "grid", "bench", "ok", "failed", "stopped", "progress", "grid-progress"]
)
def test_html_is_inline_styles_that_sanitizers_keep_with_room_for_descenders(s):
    markup = format_html(s)
    assert "<style" not in markup and "<script" not in markup and " class=" not in markup.split(">", 1)[1]
    heights = [float(h) for h in re.findall(r"line-height:([0-9.]+)", markup)]
    assert heights and min(heights) >= 1.35  # underscores were clipped at 1.15
    assert re.search(r"padding:[^;]*\d", markup)
    for style in re.findall(r'style="([^"]*)"', markup):
        declarations = [d.split(":", 1) for d in style.split(";")]
        for k, (name, value) in enumerate(declarations):
            assert name in KEPT, name
            assert not re.search(r"\d(ch|vw|vh)\b", value), value
            if "var(" in value:  # dropped by the sanitizer: a plain declaration must come before it
                assert any(n == name and "var(" not in v for n, v in declarations[:k]), style


def test_labelled_output_keeps_lines_whole():
    got = []
    out = LabelledOutput(lambda stream, text: got.append((stream, text)))
    out.feed(0, "stdout", "par")
    out.feed(1, "stdout", "other\n")
    out.feed(0, "stdout", "tial\nnext")
    out.feed(0, "stderr", "e1\ne2\n")
    out.flush()
    assert got == [
        ("stdout", "[1] other\n"),
        ("stdout", "[0] partial\n"),
        ("stderr", "[0] e1\n[0] e2\n"),
        ("stdout", "[0] next\n"),
    ]


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


def test_plain_monitor_of_a_background_run_always_ends_with_the_summary():
    out = io.StringIO()
    m = Monitor(Tracker(2, cores=2, clock=FakeClock()), stdout=out, background=True)
    m.close([0.0, 0.0])  # at once: shorter than SHOW_AFTER
    assert out.getvalue().startswith("%%parallel: 2 workers, 0.00 s wall") and out.getvalue().endswith(" · ✓\n")
    quiet = io.StringIO()
    Monitor(Tracker(2, cores=2, clock=FakeClock()), stdout=quiet).close([0.0, 0.0])
    assert quiet.getvalue() == ""


def test_monitor_close_reports_the_outcome_and_the_last_known_busy_workers(instant):
    out = io.StringIO()
    clock = FakeClock()
    m = Monitor(Tracker(3, cores=2, clock=clock), stdout=out)
    clock.now += 1
    m.update([0.5, 0.2, 0.5], busy=[True, False, True])
    m.update([0.5, 0.2, 0.5])  # busy not given: the last known stays
    status = m.close([0.6, 0.2, 0.6], outcome="stopped")
    assert status.outcome == "stopped" and [status.state(i) for i in range(3)] == ["stopped", "done", "stopped"]
    assert out.getvalue().endswith(" · stopped\n")
    m = Monitor(Tracker(3, cores=2, clock=clock), stdout=out)
    clock.now += 1
    status = m.close([1.0, 1.0, 1.0], outcome="failed", failed=[2])
    assert status.failed == (2,) and out.getvalue().endswith(" · ✗ 1 of 3 workers raised\n")


class FakeDisplay:
    """IPython.display.display with display_id=True, recording what the notebook would get."""

    def __init__(self, events: list):
        self.events = events

    def __call__(self, bundle, raw=False, display_id=None):
        assert raw and display_id is True
        self.events.append(("display", bundle))
        return self

    def update(self, bundle, raw=False):
        assert raw
        self.events.append(("update", bundle))


class Recorded(io.StringIO):
    def __init__(self, events: list):
        super().__init__()
        self.events = events

    def write(self, text):
        self.events.append(("stdout", text))
        return super().write(text)


@pytest.fixture
def notebook(monkeypatch):
    """A NotebookMonitor factory on a fake clock, its displays and output recorded in one list."""
    import IPython.display

    events: list = []
    monkeypatch.setattr(IPython.display, "display", FakeDisplay(events))
    monkeypatch.setattr(display, "REFRESH", 0.0)
    clock = FakeClock()

    def make(n=2, **kwargs):
        out = Recorded(events)
        return NotebookMonitor(Tracker(n, cores=2, clock=clock), stdout=out, stderr=out, **kwargs)

    make.events, make.clock = events, clock
    return make


def kinds(events):
    return [kind for kind, _ in events]


def test_notebook_display_of_a_long_run_is_first_updated_and_ends_as_the_summary(notebook):
    m = notebook()
    notebook.clock.now += 0.1
    m.update([0.1, 0.1])  # before SHOW_AFTER: nothing yet
    assert notebook.events == []
    m.write("stdout", "[0] early\n")  # the display takes its place above the output first, empty
    notebook.clock.now += 0.5
    m.update([0.5, 0.6], busy=[True, False])
    notebook.clock.now += 0.5
    m.write("stdout", "[0] later\n")
    m.update([1.0, 0.6])
    status = m.close([1.1, 0.6])
    events = notebook.events
    assert kinds(events) == ["display", "stdout", "update", "stdout", "update", "update"]
    assert events[0][1] == {"text/plain": "", "text/html": ""}
    live = events[2][1]
    assert live["text/plain"].startswith("%%parallel · 2 workers · 0.6 s") and "[1] ✓ done" in live["text/plain"]
    assert text_of(live["text/html"]).startswith("%%parallel · 2 workers · 0.6 s")
    assert f"width:100.0%;background-color:{GREEN}" in live["text/html"]  # worker 1, done
    final = events[-1][1]
    assert final["text/plain"] == format_summary(status) and final["text/plain"].endswith(" · ✓")
    assert text_of(final["text/html"]).startswith("✓ %%parallel: 2 workers, 1.10 s wall")
    assert m.updates == 2


def test_notebook_display_of_a_quiet_long_run_starts_with_the_live_frame(notebook):
    m = notebook()
    notebook.clock.now += 0.5
    m.update([0.5, 0.5])
    m.close([0.6, 0.6], outcome="failed", failed=[1])
    assert kinds(notebook.events) == ["display", "update"]
    assert notebook.events[0][1]["text/plain"].startswith("%%parallel · 2 workers · 0.5 s")
    final = notebook.events[1][1]
    assert final["text/plain"].endswith(" · ✗ 1 of 2 workers raised") and RED in final["text/html"]


def test_notebook_display_of_a_short_run_stays_empty_above_its_output(notebook):
    m = notebook()
    m.write("stdout", "[0] hi\n")
    notebook.clock.now += 0.1
    m.update([0.1, 0.1])
    m.close([0.1, 0.1])
    assert notebook.events == [("display", {"text/plain": "", "text/html": ""}), ("stdout", "[0] hi\n")]
    quiet = notebook()  # a short cell that prints nothing leaves no output at all
    quiet.update([0.0, 0.0])
    quiet.close([0.0, 0.0])
    assert len(notebook.events) == 2


def test_notebook_display_of_a_background_run_shows_at_once_and_ends_as_the_summary(notebook):
    m = make_monitor(2, shell=type("ZMQInteractiveShell", (), {})(), background=True)
    assert type(m) is NotebookMonitor and m.background
    assert kinds(notebook.events) == []  # nothing until the run has started (the cell may be refused)
    m.begin()
    assert kinds(notebook.events) == ["display"]  # once it has, while the cell still runs
    assert notebook.events[0][1]["text/plain"].startswith("%%parallel · 2 workers · 0.0 s")
    notebook.events.clear()
    m = notebook(background=True)
    m.begin()
    notebook.clock.now += 0.06
    m.update([0.05, 0.05])  # no SHOW_AFTER wait
    m.close([0.1, 0.1], outcome="stopped")  # and the summary, however short the run
    assert kinds(notebook.events) == ["display", "update", "update"]
    assert notebook.events[1][1]["text/plain"].startswith("%%parallel · 2 workers · 0.1 s")
    assert notebook.events[-1][1]["text/plain"].endswith(" · stopped")


def test_notebook_display_given_a_text_shows_it_with_the_outcome_mark(notebook):
    m = notebook(1)
    m.close([0.0], text="native_bench: 0.1 s in all")
    ((kind, bundle),) = notebook.events
    assert kind == "display" and bundle["text/plain"] == "native_bench: 0.1 s in all"
    assert text_of(bundle["text/html"]) == "✓ native_bench: 0.1 s in all"


def test_notebook_monitor_without_a_running_ipython_does_not_fail(monkeypatch, capsys):
    import IPython.display

    calls = []
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: calls.append(a))  # returns None, as then
    m = NotebookMonitor(Tracker(2, cores=2, clock=FakeClock()), stdout=io.StringIO(), stderr=io.StringIO())
    m.write("stdout", "x\n")
    m.write("stdout", "y\n")
    m.close([0.0, 0.0])
    assert len(calls) == 1


def test_background_run_in_a_terminal_gets_no_redrawing(monkeypatch):
    class TerminalInteractiveShell:
        pass

    monkeypatch.setattr(display, "_isatty", lambda stream: True)
    assert type(make_monitor(2, shell=TerminalInteractiveShell())) is TerminalMonitor
    m = make_monitor(2, shell=TerminalInteractiveShell(), background=True)
    assert type(m) is Monitor and m.background and m.summary
    assert type(make_monitor(2, shell=TerminalInteractiveShell(), enabled=False, background=True)) is Monitor


def test_a_run_on_some_targets_names_its_workers_by_id():
    tracker = Tracker(2, cores=2, clock=iter([0.0, 1.0, 2.0]).__next__, ids=(1, 3))
    tracker.sample([0.0, 0.0])
    status = tracker.sample([0.5, 1.0], busy=(True, False))
    lines = format_lines(status)
    assert [line.split()[0] for line in lines[1:]] == ["[1]", "[3]"]
    assert "done" in lines[2]
    html_text = format_html(status)
    assert ">[1]<" in html_text and ">[3]<" in html_text and ">[0]<" not in html_text


def test_no_display_for_a_background_run_in_xeus_python_which_drops_what_threads_publish(notebook):
    m = make_monitor(2, shell=type("XPythonShell", (), {})(), background=True)
    m.begin()
    assert type(m) is Monitor and not m.summary and notebook.events == []
    assert type(make_monitor(2, shell=type("XPythonShell", (), {})())) is NotebookMonitor  # a plain cell has one


# -- progress ------------------------------------------------------------------------------------


def test_tracker_gives_each_worker_its_rate_since_its_progress_was_first_seen():
    clock = FakeClock()
    tracker = Tracker(2, cores=2, clock=clock)
    clock.now += 1.0
    s = tracker.sample([1.0, 1.0], progress=[(1000, 4000), None])
    assert s.rate(0) == pytest.approx(1000) and s.rate(1) is None  # its first reading: since the run began
    clock.now += 1.0
    s = tracker.sample([2.0, 2.0], progress=[(3000, 4000), (50, None)])
    assert s.rate(0) == pytest.approx(1500) and s.eta(0) == pytest.approx(1000 / 1500)
    assert s.eta(1) is None  # no total: no ETA
    assert s.items == (3050, None) and s.items_rate == pytest.approx(3050 / 2)
    clock.now += 1.0
    s = tracker.sample([3.0, 3.0], progress=[(10, 20), (150, None)])  # worker 0 began another progress
    assert s.rate(0) is None and s.rate(1) == pytest.approx(150 / 3)  # its first reading: since the start


def test_lines_show_a_progress_bar_with_done_total_rate_and_eta():
    s = Status(
        3, 2, 2.0, (1.9, 1.8, 0.1), (1.0, 0.5, 0.0),
        busy=(True, True, False),
        progress=((800_000, 1_000_000), (22_345, None), (1000, 1000)),
        rates=(400_000.0, 11_200.0, 500.0),
    )  # fmt: skip
    lines = format_lines(s, width=80)
    assert lines[1].startswith("[0] " + "█" * 24 + "······  80%  800k/1M 400k/s ETA 0:00 · 100% CPU")
    # No total: the bar is its CPU use, and no ETA is made up.
    assert lines[2].startswith("[1] ███") and lines[2].endswith(" 50%  22.3k 11.2k/s ·  50% CPU")
    assert lines[3].startswith("[2] ✓ done ") and lines[3].endswith("1k/1k 500/s · 0.10 s CPU")


def test_many_workers_get_one_line_of_the_whole_runs_progress():
    s = Status(12, 2, 1.0, (0.1,) * 12, (0.1,) * 12, progress=tuple((i * 10, 100) for i in range(12)))
    lines = format_lines(s, width=80)
    assert lines[-1].startswith("[all] ") and "55%  660/1.2k 660/s" in lines[-1]


def test_summary_gives_the_items_and_the_whole_runs_rate():
    base = Status(2, 2, 2.0, (1.9, 1.9), (0.0, 0.0), done=True, outcome="ok")
    assert "items" not in format_summary(base)
    s = replace(base, progress=((5_000_000, 5_000_000), (5_000_000, 5_000_000)))
    assert format_summary(s).endswith("on 2 cores, 10M items at 5M/s · ✓")
    s = replace(base, progress=((5_000_000, 5_000_000), (1_000, 10_000)), outcome="stopped")
    assert ", 5M of 5.01M items at 2.5M/s · stopped" in format_summary(s)
    assert "5M of 5.01M items" in format_html(s)


def test_html_rows_of_workers_with_progress():
    s = Status(
        2, 2, 2.0, (1.9, 0.1), (1.0, 0.0), busy=(True, False),
        progress=((250, 1000), (7, 7)), rates=(125.0, 3.5),
    )  # fmt: skip
    html = format_html(s)
    assert "width:25.0%" in html and "250/1k 125/s ETA 0:06" in html  # its bar is how far it has come
    assert "7/7" in html and "raised" not in html


def test_terminal_ipython_draws_the_progress_bars_in_place_and_ends_with_the_items():
    """Real terminal IPython in a pty: the bars move, redrawn in place, and one summary line stays."""
    with terminal_ipython() as child:
        child.send("%load_ext ipy_parallel\r")
        child.expect(r"In \[2\]:")
        child.send(
            "%parallel from ipy_parallel import worker; import time; "
            "[time.sleep(0.001) for _ in worker.progress(range(1500))]\r"
        )
        child.expect(r"In \[3\]:")
    text = terminal_text(child)
    frames = re.findall(r"\[0\] [█▏▎▍▌▋▊▉·]+ +(\d+)%  [\d.k]+/1.5k [\d.k]+/s ETA \d:\d\d", text)
    assert len(frames) >= 3 and [int(p) for p in frames] == sorted(int(p) for p in frames), text
    summary = re.search(r"%parallel: (\d+) workers?, .*, ([\d.]+)k items at [\d.k]+/s · ✓", text)
    assert summary and float(summary[2]) == 1.5 * int(summary[1]), text  # the default pool: one per core
    assert "\x1b[" in child.logfile_read.getvalue()  # redrawn in place, not printed frame after frame


def test_terminal_ipython_draws_an_executor_maps_progress_and_its_summary():
    with terminal_ipython() as child:
        child.send(
            "import time; from ipy_parallel import SubinterpreterExecutor; ex = SubinterpreterExecutor(2); "
            "r = list(ex.map(time.sleep, [0.005] * 300, chunksize=1, progress=True)); time.sleep(0.5); ex.shutdown()\r"
        )
        child.expect(r"In \[2\]:")
    text = terminal_text(child)
    assert len(re.findall(r"\[all\] [█▏▎▍▌▋▊▉·]+ +\d+%  \d+/300 [\d.k]+/s ETA \d:\d\d", text)) >= 2, text
    assert re.search(r"SubinterpreterExecutor\.map: 2 workers, .*, 300 items at [\d.k]+/s · ✓", text), text
