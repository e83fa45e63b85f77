"""The benchmark runners and %native_bench's report: every method computes the seed values; CPU is measured."""

import itertools
import math
import multiprocessing
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import bound

from ipy_parallel import _engine, bench
from ipy_parallel.bench import compare

NS = [30_000, 20_000]


def expected():
    return [bench.seed_task(n) for n in NS]


def test_seed_task_matches_the_original_formula():
    k = 1
    for i in range(1000, 1, -1):
        k = (k * i) % 1000000007
    assert bench.seed_task(1000) == k
    assert [bench.seed_task(n) for n in (0, 1, 2, 3)] == [1, 1, 2, 6]


@pytest.mark.parametrize(
    "runner",
    [
        bench.serial,
        bench.threads,
        bench.native,
        lambda ns: bench.multiprocessing_pool(ns, "spawn"),
        lambda ns: bench.process_pool_executor(ns, "spawn"),
    ],
    ids=["serial", "threads", "native", "mp-spawn", "ppe-spawn"],
)
def test_runners_agree(runner):
    assert runner(NS) == expected()


def test_pool_and_stdlib_runners_agree():
    for backend in ("subinterpreter", "threads"):
        with bench.warm_pool(2, backend) as pool:
            assert bench.pool_seed(pool, NS) == expected()
    stdlib = bench.StdlibInterpreters(2)
    try:
        assert stdlib.seed(NS) == expected()
    finally:
        stdlib.close()


def test_native_kernel_limits():
    with pytest.raises(ValueError, match="between 0 and 10000000000"):
        _engine.seed_kernel([5, -1])
    assert _engine.seed_kernel([]) == []


def _spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_process_tree_cpu_counts_running_children():
    before = bench.process_tree_cpu()
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_spin, args=(1.0,))
    child.start()
    time.sleep(0.8)
    during = bench.process_tree_cpu() - before  # the child is still running: read from /proc
    child.join()
    assert during > 0.3, f"only {during:.2f} s of CPU seen while a child spun for 0.8 s"


def test_native_bench_report():
    report = bench.native_bench(2, 20_000, 3)
    names = [r.method for r in report.rows]
    assert names == [
        "serial",
        "threads",
        "multiprocessing fork",
        "multiprocessing spawn",
        "sub-interpreters (ipy_parallel)",
        "threads backend (ipy_parallel)",
        "C++ kernel, GIL released",
    ]
    assert report.agree and all(r.values == [bench.seed_task(20_000)] * 2 for r in report.rows)
    assert all(len(r.times) == 3 for r in report.rows)
    assert report.speedup("serial") == 1.0
    assert report.efficiency("serial") == pytest.approx(0.5)
    table = report.table()
    assert table.startswith("native_bench: 2 tasks of n=20,000") and "median of 3 rounds, methods interleaved" in table
    assert "every method computed the same values" in table
    if bench.free_threaded():  # 3.14t: the threads row is the free-threaded one, nothing is skipped
        assert "free-threaded: no GIL" in table and "not run" not in table and "warm pool, no GIL" in table
    else:
        assert "free threads: not run" in table and "warm pool, one GIL: turns" in table
    assert repr(report) == table


def _report(times: dict[str, list[float]], serial_cpu: float = 1.0) -> bench.BenchReport:
    rows = [
        bench.MethodResult(name, "", t, [serial_cpu * x if name == "serial" else 2 * x for x in t], [1])
        for name, t in times.items()
    ]
    return bench.BenchReport(2, 1000, len(rows[0].times), 2, rows)


def test_a_speedup_above_the_core_ceiling_is_flagged_not_stated():
    report = _report(
        {
            "serial": [3.0, 2.9, 3.1],
            "sub-interpreters (ipy_parallel)": [1.0, 1.0, 1.02],
            "C++ kernel, GIL released": [0.01, 0.01, 0.01],
        }
    )
    assert report.above_ceiling("sub-interpreters (ipy_parallel)")  # 3x on 2 cores
    assert not report.above_ceiling("C++ kernel, GIL released")  # other code: no ceiling
    table = report.table()
    assert "3.00x!" in table and "above the ceiling of 2x" in table and "Rerun" in table


def test_noisy_rounds_and_a_busy_machine_are_flagged():
    report = _report({"serial": [1.0, 1.0, 1.0], "threads": [1.0, 1.6, 1.0]}, serial_cpu=0.6)
    assert report.noisy("threads") and not report.noisy("serial") and report.busy
    table = report.table()
    assert "~ noisy: the rounds of threads" in table and "serial got only 60% of one core" in table
    clean = _report({"serial": [1.0, 1.01, 1.0], "threads": [1.0, 1.02, 1.01]})
    assert clean.warnings == []


def test_native_bench_leaves_the_pools_of_this_process_alone(pool):
    pool.run("kept = worker_id * 10")
    bench.native_bench(2, 1000, 1)  # its multiprocessing fork row forks elsewhere
    assert [r.value for r in pool.run("kept")] == [0, 10]


def test_disagreement_is_an_error(monkeypatch):
    methods, skipped = bench.bench_methods(2)
    methods["C++ kernel, GIL released"] = (lambda ns: [0] * len(ns), "broken on purpose")
    monkeypatch.setattr(compare, "bench_methods", lambda tasks: (methods, skipped))
    with pytest.raises(bench.BenchmarkError, match="other values than serial: C\\+\\+ kernel"):
        bench.native_bench(2, 1000, 1)


def test_plot_draws_a_bar_per_method():
    import matplotlib

    matplotlib.use("Agg")
    report = bench.native_bench(2, 1000, 1)
    ax = report.plot()
    assert len(ax.patches) == len(report.rows)


# -- the report: our row, the bars, the flags; the chart ---------------------------------------

PNG = b"\x89PNG\r\n\x1a\n"


def _varied() -> bench.BenchReport:
    """A clean report whose speedups all differ: 0.95x, 1.25x, 1.90x and a compiled 100x."""
    return _report(
        {
            "serial": [2.0, 2.0, 2.01],
            "threads": [2.1, 2.1, 2.11],
            "multiprocessing spawn": [1.6, 1.6, 1.6],
            bench.OURS: [1.05, 1.05, 1.06],
            "C++ kernel, GIL released": [0.02, 0.02, 0.02],
        }
    )


def _html_rows(page: str) -> dict[str, str]:
    """method -> the HTML of its table row."""
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return {re.search(r"<td[^>]*>([^<]*)</td>", row).group(1): row for row in body.split("<tr")[1:]}


def _html_bar_length(row: str) -> float:
    """The drawn length of a row's speedup bar in em: its fill up to the ceiling plus past it."""
    return sum(float(w) for w in re.findall(r"width:([\d.]+)em;height:100%", row))


def test_the_html_highlights_our_row_and_orders_the_bars_as_the_speedups():
    report = _varied()
    page = report._repr_html_()
    rows = _html_rows(page)
    assert list(rows) == [r.method for r in report.rows]
    highlighted = [m for m, row in rows.items() if bench.OURS_TINT in row and "◀ ipy_parallel" in row]
    assert highlighted == [bench.OURS] and "font-weight:bold" in rows[bench.OURS].split(">", 1)[0]
    by_speedup = sorted(rows, key=report.speedup)
    lengths = [_html_bar_length(rows[m]) for m in by_speedup]
    assert all(a < b for a, b in itertools.pairwise(lengths)), list(zip(by_speedup, lengths))
    serial, ours = _html_bar_length(rows["serial"]), _html_bar_length(rows[bench.OURS])
    assert ours / serial == pytest.approx(report.speedup(bench.OURS), rel=0.01)  # proportional to the speedup
    assert "»" in rows["C++ kernel, GIL released"] and "»" not in rows[bench.OURS]  # cut, and says so
    assert "every method computed the same values" in page and "~" not in page.split("</table>")[0]
    assert "<pre" not in page and all(float(h) >= 1.3 for h in re.findall(r"line-height:([\d.]+)", page))


def test_the_html_escapes_every_text():
    report = _varied()
    report.rows[1].note = "<b>a & b</b>"
    report.skipped = {"free <threads>": "why & how"}
    page = report._repr_html_()
    assert "&lt;b&gt;a &amp; b&lt;/b&gt;" in page and "<b>a" not in page
    assert "free &lt;threads&gt;: not run (why &amp; how)" in page


def test_the_text_bars_grow_with_the_speedup_up_to_a_mark_at_the_ceiling():
    report = _varied()
    table = report.table()
    lines = table.splitlines()
    rows = {r.method: next(line for line in lines if r.method in line and "x " in line) for r in report.rows}
    assert [line.startswith("▶ ") for line in rows.values()] == [r.method == bench.OURS for r in report.rows]
    bars = {m: line.split("x ", 1)[1].split("|", 1)[0].strip() for m, line in rows.items()}
    eighths = {m: sum(8 if c == "█" else "▏▎▍▌▋▊▉".index(c) + 1 for c in bar.rstrip("·")) for m, bar in bars.items()}
    assert eighths["threads"] < eighths["serial"] < eighths["multiprocessing spawn"] < eighths[bench.OURS]
    assert eighths["C++ kernel, GIL released"] == 8 * bench.BAR_WIDTH and eighths["serial"] == 4 * bench.BAR_WIDTH
    assert eighths[bench.OURS] == round(8 * bench.BAR_WIDTH * report.efficiency(bench.OURS))
    ticks = {line.index("|") for line in rows.values()}
    assert len(ticks) == 1 and lines[2].index("|") in ticks  # the heading's scale marks the same column
    assert rows["C++ kernel, GIL released"].split("|", 1)[1].startswith("»")
    assert max(len(line) for line in lines) <= 115


def test_noisy_and_above_ceiling_figures_are_flagged_on_the_figure_in_text_and_html():
    report = _report({"serial": [3.0, 2.9, 3.1], "threads": [1.6, 2.4, 1.6], bench.OURS: [1.0, 1.0, 1.02]})
    assert report.noisy("threads") and report.above_ceiling(bench.OURS) and not report.above_ceiling("threads")
    table = report.table()
    ours = next(line for line in table.splitlines() if line.startswith("▶ "))
    threads = next(line for line in table.splitlines() if line.lstrip().startswith("threads"))
    assert "3.00x!" in ours and "150%!" in ours and "|»" in ours and "~" not in ours
    assert re.search(r"\d+%~", threads) and "!" not in threads
    page = report._repr_html_()
    rows = _html_rows(page)
    flags = {m: re.findall(r'title="([^"]*)"[^>]*>([~!])</span>', row) for m, row in rows.items()}
    assert [mark for _, mark in flags[bench.OURS]] == ["!", "!"]  # the speedup and the efficiency
    assert all("above the ceiling of 2x" in why for why, _ in flags[bench.OURS])
    assert [mark for _, mark in flags["threads"]] == ["~"] and "noisy" in flags["threads"][0][0]
    assert flags["serial"] == []
    warnings = re.findall(r"<li>(.*?)</li>", page)
    assert len(warnings) == len(report.warnings) == 2
    assert warnings[0].startswith("! above the ceiling") and warnings[1].startswith("~ noisy: the rounds of threads")
    assert "<li>" not in _varied()._repr_html_()


def test_plot_draws_speedups_with_our_bar_the_ceiling_and_the_flags_marked():
    from matplotlib.figure import Figure

    report = _report(
        {
            "serial": [3.0, 2.9, 3.1],
            "threads": [1.6, 2.4, 1.6],
            bench.OURS: [1.0, 1.0, 1.02],
            "C++ kernel, GIL released": [0.01, 0.01, 0.01],
        }
    )
    ax = report.plot(Figure().subplots())
    bars = dict(zip([t.get_text() for t in ax.get_yticklabels()], ax.patches))
    assert list(bars)[::-1] == [r.method for r in report.rows]  # the table's first row on top
    for name in ("serial", "threads", bench.OURS):
        assert bars[name].get_width() == pytest.approx(report.speedup(name))
    assert bars["C++ kernel, GIL released"].get_width() == pytest.approx(ax.get_xlim()[1])  # cut at the edge
    colours = {name: bar.get_facecolor() for name, bar in bars.items()}
    assert colours[bench.OURS] != colours["serial"] == colours["threads"]
    assert bars["serial"].get_hatch() is None and bars["threads"].get_hatch() and bars[bench.OURS].get_hatch()
    assert bars["threads"].get_hatch() != bars[bench.OURS].get_hatch()  # noisy, and above the ceiling
    assert [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--"] == [report.ceiling]


def test_save_plot_writes_a_png_named_by_the_time_here_by_default(tmp_path, monkeypatch):
    report = _varied()
    chosen = report.save_plot(tmp_path / "chart")
    assert chosen == tmp_path / "chart.png" and chosen.read_bytes()[:8] == PNG
    monkeypatch.chdir(tmp_path)
    default = report.save_plot()
    assert default.parent == tmp_path and re.fullmatch(r"native_bench-\d{8}-\d{6}\.png", default.name)
    assert default.read_bytes()[:8] == PNG


@pytest.mark.parametrize("option", ["--plot", "--plot-file sub/chart.png"])
def test_plot_in_a_terminal_saves_a_png_and_says_where(ip, tmp_path, monkeypatch, capsys, option):
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    plt.close("all")
    ip.run_line_magic("native_bench", f"-n 2 --size 1000 --repeat 1 --no-monitor {option}")
    out = capsys.readouterr().out
    said = re.findall(r"^native_bench: chart saved to (.+)$", out, re.MULTILINE)
    saved = list(tmp_path.rglob("*.png"))
    assert len(said) == 1 and saved == [Path(said[0])], out
    assert saved[0].read_bytes()[:8] == PNG
    assert "every method computed the same values" in out  # the table, printed
    assert not plt.get_fignums()  # no figure left behind that nothing shows


def test_plot_file_in_a_missing_directory_is_a_usage_error_before_the_run(ip, tmp_path):
    from IPython.core.error import UsageError

    start = time.perf_counter()
    with pytest.raises(UsageError, match="no such directory"):
        ip.run_line_magic("native_bench", f"--plot-file {tmp_path}/nowhere/chart.png")
    assert time.perf_counter() - start < bound(1)


def test_in_a_notebook_the_magic_displays_the_report_rich(ip, monkeypatch):
    from IPython.utils.capture import capture_output

    # ipykernel's shell, as far as the magic can tell: by its class's name.
    monkeypatch.setattr(ip, "__class__", type("ZMQInteractiveShell", (type(ip),), {}))
    with capture_output() as captured:
        ip.run_line_magic("native_bench", "-n 2 --size 1000 --repeat 1 --no-monitor -o rep")
    report = ip.user_ns["rep"]
    rich = [o.data for o in captured.outputs if "text/html" in o.data]
    assert len(rich) == 1 and rich[0]["text/html"] == report._repr_html_()
    assert rich[0]["text/plain"] == report.table()
    assert bench.OURS_TINT in _html_rows(rich[0]["text/html"])[bench.OURS]
    assert "every method computed the same values" not in captured.stdout  # displayed, not printed too


def test_the_benchmarks_and_the_engine_load_without_ipython():
    # The arrows point down: bench/ and the backends never import the extension, or IPython.
    code = (
        "import pkgutil, sys, importlib, ipy_parallel, ipy_parallel.bench, ipy_parallel.backends\n"
        "for pkg in (ipy_parallel.bench, ipy_parallel.backends):\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if not info.name.startswith('ipy_parallel.backends.ipyparallel') and not info.name.endswith('__main__'):\n"
        "            importlib.import_module(info.name)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('IPython', 'ipy_parallel.ipython'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_ctrl_c_that_threading_turned_into_runtime_error_stops_native_bench_with_one_line(monkeypatch):
    # A Ctrl-C between Condition.wait's release and its try leaves the lock free, and the with
    # statement's exit raises RuntimeError with the interrupt as its context (CI run 11, under the
    # sanitizer): %native_bench must still end as a stop, with its one line.
    import threading

    from ipy_parallel.exceptions import ParallelInterrupted
    from ipy_parallel.ipython.display import make_monitor

    def interrupted(*args, **kwargs):
        lock = threading.Lock()
        try:
            raise KeyboardInterrupt
        finally:
            lock.release()  # RuntimeError: release unlocked lock, its context the interrupt

    monkeypatch.setattr(compare, "native_bench", interrupted)
    with pytest.raises(ParallelInterrupted, match="nothing measured is shown"):
        compare.run_native_bench(2, 1000, 1, make_monitor(1, enabled=False, label="native_bench", per_worker=False))


@pytest.mark.parametrize("backend", ["subinterpreter", "threads"])
def test_the_progress_overhead_runner_times_both_loops_and_checks_every_item_was_counted(backend):
    import warnings

    from ipy_parallel.backends import open_pool

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # threads with a GIL take turns: said once
        pool = open_pool(backend, 2)
    with pool:
        figures = bench.progress_overhead(pool, 20_000, 6)
    assert set(figures) == set(bench.PROGRESS_LOOPS)
    for f in figures.values():
        assert 0 < f.plain < bound(10) and 0 < f.tracked < bound(10) and len(f.ratios) == 6, figures
        low, high = f.interval  # 6 rounds: the whole range of the ratios
        assert low == min(f.ratios) - 1 <= f.overhead <= high == max(f.ratios) - 1, figures


def test_the_median_interval_is_the_binomial_one_and_says_when_there_are_too_few():
    assert bench.median_interval(range(1, 101)) == (40, 61)  # the textbook figures for 100 values
    assert bench.median_interval(range(1, 41)) == (14, 27)
    assert bench.median_interval([5, 1, 4, 2, 6, 3]) == (1, 6)  # 1 - 2/64 = 96.9% still holds
    assert bench.median_interval([1, 2, 3, 4, 5]) == (-math.inf, math.inf)  # 5 values cannot hold 95%
    assert bench.median_interval(range(1, 101), confidence=0.99) == (37, 64)


def test_the_joblib_runner_times_our_backend_beside_loky_with_the_same_answers():
    pytest.importorskip("joblib", reason="joblib is in the [test] extra")
    trivial = bench.notebook_function(bench.TRIVIAL_SOURCE, "trivial")
    assert trivial.__module__ == "__main__"  # sent by value, as a notebook's function is
    rows, first = bench.joblib_side_by_side(trivial, list(range(2_000)), 2, 2)
    assert [m.method for m in rows] == ["serial", "joblib ipy_parallel", "joblib loky"]
    assert all(m.values == list(range(1, 2_001)) and len(m.times) == 2 for m in rows)
    assert set(first) == set(bench.JOBLIB_BACKENDS) and all(t > 0 for t in first.values())
