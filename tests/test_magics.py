"""The magics in an in-process IPython shell: every option, errors, UsageErrors, unload and reload."""

import os
import re
import time

import pytest
from IPython.core.error import UsageError

from helpers import bound, cell, magics_of
from ipy_parallel.exceptions import CellSyntaxError, ParallelError
from ipy_parallel import Pool


def pool_of(ip, backend="subinterpreter"):
    return magics_of(ip).pools.of(backend)


def test_values_and_default_worker_count(ip):
    assert cell(ip, "", "worker_id * 10") == [10 * i for i in range(os.cpu_count())]
    assert cell(ip, "3", "(worker_id, n_workers)") == [(0, 3), (1, 3), (2, 3)]


def test_result_feeds_out_and_underscore(ip):
    result = ip.run_cell("%%parallel 2\nworker_id + 1")
    assert result.success and result.result == [1, 2]
    assert ip.user_ns["_"] == [1, 2]


def test_statements_only_give_no_result(ip):
    assert cell(ip, "2", "x = 5") is None


def test_output_labelled_per_worker(ip, capsys):
    cell(
        ip,
        "2",
        "import sys\nprint('out', worker_id)\nprint('err', worker_id, file=sys.stderr)\nprint('no newline', end='')",
    )
    captured = capsys.readouterr()
    assert sorted(captured.out.splitlines()) == ["[0] no newline", "[0] out 0", "[1] no newline", "[1] out 1"]
    assert sorted(captured.err.splitlines()) == ["[0] err 0", "[1] err 1"]
    for w in (0, 1):  # order within one worker is kept
        lines = [ln for ln in captured.out.splitlines() if ln.startswith(f"[{w}]")]
        assert lines == [f"[{w}] out {w}", f"[{w}] no newline"]


def test_namespace_persists_and_pool_is_reused(ip):
    cell(ip, "2", "counter = 0")
    pool = pool_of(ip)
    cell(ip, "2", "counter += 1")
    assert cell(ip, "2", "counter") == [1, 1]
    assert pool_of(ip) is pool


def test_pool_resized_when_n_changes_keeping_its_interpreters(ip):
    from helpers import CURRENT_INTERPRETER

    first = cell(ip, "2", CURRENT_INTERPRETER)
    cell(ip, "2", "a = 1")
    old = pool_of(ip)
    grown = cell(ip, "3", CURRENT_INTERPRETER)
    assert grown[:2] == first and len(set(grown)) == 3  # two kept, one new
    assert pool_of(ip) is old and old.size == 3
    assert cell(ip, "3", "worker_id, n_workers, 'a' in globals()") == [(0, 3, False), (1, 3, False), (2, 3, False)]


def test_push(ip):
    ip.user_ns.update(a=2, b=[1, 2, 3], f=lambda x: x * 100)
    assert cell(ip, "2 --push a,b,f", "f(a) + sum(b) + worker_id") == [206, 207]
    assert cell(ip, "2 -i a", "a") == [2, 2]


def test_push_missing_name_is_a_usage_error(ip):
    with pytest.raises(UsageError, match="--push nope: there is no variable 'nope'"):
        cell(ip, "2 --push nope", "1")


def test_push_unpicklable_is_a_usage_error(ip):
    import threading

    ip.user_ns["lock"] = threading.Lock()
    with pytest.raises(UsageError, match="'lock' .* cannot be sent to the workers"):
        cell(ip, "2 --push lock", "1")


def test_scatter_contiguous_chunks(ip):
    ip.user_ns["items"] = list(range(10))
    assert cell(ip, "3 --scatter items", "items") == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    ip.user_ns["word"] = "abcdef"
    assert cell(ip, "2 --scatter word", "word") == ["abc", "def"]
    ip.user_ns["r"] = range(4)
    assert cell(ip, "2 --scatter r", "list(r)") == [[0, 1], [2, 3]]


def test_scatter_of_a_buffer_gives_each_worker_a_view_of_its_slice(ip):
    data = ip.user_ns["data"] = bytearray(range(10))
    assert cell(ip, "2 --scatter data", "(type(data).__name__, data.readonly, data.tolist())") == [
        ("memoryview", True, [0, 1, 2, 3, 4]),
        ("memoryview", True, [5, 6, 7, 8, 9]),
    ]
    data[7] = 70  # the workers' slices are views of this very memory
    assert cell(ip, "2", "data.tolist()") == [[0, 1, 2, 3, 4], [5, 6, 70, 8, 9]]
    cell(ip, "2", "del data")


@pytest.mark.parametrize(
    "value, message",
    [
        (42, "a int is not a sequence"),
        ({"a": 1, "b": 2}, "a dict is not a sequence"),
        ([1], "1 items cannot give each of the 2 workers a chunk"),
    ],
)
def test_scatter_bad_values(ip, value, message):
    ip.user_ns["thing"] = value
    with pytest.raises(UsageError, match=message):
        cell(ip, "2 --scatter thing", "1")


def test_out_stores_values(ip):
    assert cell(ip, "2 -o vals", "worker_id * 2") is None
    assert ip.user_ns["vals"] == [0, 2]
    cell(ip, "2 --out none_vals", "x = 1")
    assert ip.user_ns["none_vals"] == [None, None]


def test_pull(ip):
    cell(ip, "2 --pull x,y", "x = worker_id\ny = str(worker_id) * 2")
    assert ip.user_ns["x"] == [0, 1] and ip.user_ns["y"] == ["00", "11"]


def test_pull_missing_in_some_workers(ip):
    with pytest.raises(UsageError, match="--pull: worker 1 has no variable 'z'"):
        cell(ip, "2 --pull z", "if worker_id == 0:\n    z = 1")


def test_identical_errors_shown_once_for_all_workers(ip, capsys):
    result = ip.run_cell("%%parallel 20\nx = 1\n1 / 0", store_history=True)
    assert not result.success
    assert isinstance(result.error_in_exec, ParallelError)
    out = capsys.readouterr().out
    assert out.count("ZeroDivisionError: division by zero") == 1
    assert "[workers 0-19] Traceback" in out
    assert f'File "<parallel In[{result.execution_count}]>", line 2, in <module>' in out
    assert "cell.py" not in out and "magics.py" not in out  # only the workers' frames


def test_distinct_errors_each_shown(ip, capsys):
    result = ip.run_cell("%%parallel 4\nif worker_id % 2:\n    raise ValueError('odd')\nraise KeyError('even')")
    assert not result.success
    out = capsys.readouterr().out
    assert "[workers 0, 2] Traceback" in out and "[workers 1, 3] Traceback" in out
    assert out.count("ValueError: odd") == 1 and out.count("KeyError: 'even'") == 1


def test_errors_that_differ_only_in_their_markers_are_one(ip, capsys):
    # the ~~~^^^ under the line point at different parts of it: the same error all the same
    result = ip.run_cell(
        "%%parallel 2\ndef f(k):\n    raise KeyError('k')\nx = 1 if worker_id else 2\n"
        "y = (f(1) + 1) if worker_id else (1 + f(1))"
    )
    assert not result.success
    out = capsys.readouterr().out
    assert "distinct" not in str(result.error_in_exec) and "[workers 0-1] Traceback" in out, out


def test_some_workers_fail_others_values_kept_on_the_error(ip):
    result = ip.run_cell("%%parallel 3\nif worker_id == 1:\n    raise RuntimeError('one')\nworker_id")
    error = result.error_in_exec
    assert [r.value for r in error.results] == [0, None, 2]
    assert "1 of 3 workers raised; first: RuntimeError: one" in str(error)


def test_syntax_error_reported_once_before_running(ip, capsys):
    cell(ip, "2", "ran = 0")
    runs = pool_of(ip).runs
    result = ip.run_cell("%%parallel 2\nran = 1\nx = = 1")
    assert isinstance(result.error_in_exec, CellSyntaxError)
    out = capsys.readouterr().out
    assert out.count("SyntaxError: invalid syntax") == 1 and "line 2" in out  # line of the body
    assert "Traceback" not in out
    assert pool_of(ip).runs == runs


@pytest.mark.parametrize("line", ["abc", "0", "-1", "257", "2.5", "1e3"])
def test_bad_worker_counts(ip, line):
    with pytest.raises(UsageError, match="an integer from 1 to 256, got"):
        cell(ip, line, "1")


@pytest.mark.parametrize(
    "line, message",
    [
        ("2 --frobnicate", "unrecognized arguments"),
        ("2 --push 'a b'", "is not a variable name"),
        ("2 -o 1x", "is not a variable name"),
        ("2 -o class", "is not a variable name"),
    ],
)
def test_bad_options(ip, line, message):
    with pytest.raises(UsageError, match=message):
        cell(ip, line, "1")


def test_empty_cell(ip):
    with pytest.raises(UsageError, match="the cell is empty"):
        cell(ip, "2", "   \n")


def test_usage_errors_leave_the_kernel_and_pool_usable(ip):
    for line in ("0", "2 --push missing", "2 --bogus"):
        assert not ip.run_cell(f"%%parallel {line}\n1").success
    assert cell(ip, "2", "worker_id") == [0, 1]


def test_summary_line_for_long_cells_and_no_monitor(ip, capsys):
    cell(ip, "2", "import time\ntime.sleep(0.4)")
    assert "%%parallel: 2 workers," in capsys.readouterr().out
    cell(ip, "2 --no-monitor", "import time\ntime.sleep(0.4)")
    assert "%%parallel:" not in capsys.readouterr().out
    cell(ip, "2", "pass")
    assert capsys.readouterr().out == ""  # short cells stay quiet


def test_parallel_status_and_reset(ip, capsys):
    ip.run_line_magic("parallel_status", "")  # the pool %load_ext started, ready for the first cell
    assert f"subinterpreter pool: {os.cpu_count()} workers, idle, 1 runs" in capsys.readouterr().out  # its warm-up
    cell(ip, "2", "kept = 1")
    ip.run_line_magic("parallel_status", "")
    out = capsys.readouterr().out
    assert re.search(r"2 workers, idle, \d+ runs", out) and "[1]" in out
    ip.run_line_magic("parallel_reset", "")
    assert "cleared the variables of the 2 workers of the subinterpreter pool" in capsys.readouterr().out
    assert cell(ip, "2", "'kept' in globals(), worker_id") == [(False, 0), (False, 1)]


def test_parallel_status_timeline_shows_the_last_cells_run(ip, capsys):
    # --pull runs on the pool after the cell: the timeline is still the cell's.
    source = "import time\nend = time.thread_time() + (0.05 if worker_id == 0 else 0.3)\nwhile time.thread_time() < end: pass"
    cell(ip, "2 --no-monitor --pull end", source)
    ip.run_line_magic("parallel_status", "--timeline")
    out = capsys.readouterr().out
    assert "the last cell's run, on the subinterpreter pool:" in out and "efficiency" in out
    cpu = float(re.search(r"timeline: 2 workers, [\d.]+ s wall, ([\d.]+) s CPU", out).group(1))
    assert cpu >= 0.3, out  # the cell's CPU, not the pull's
    assert re.search(r"\[0\] \S+  done at [\d.]+ s, [\d.]+ s CPU", out) and "[1]" in out
    with pytest.raises(UsageError):
        ip.run_line_magic("parallel_status", "--timelines")


def test_parallel_reset_fresh_gives_new_interpreters_which_import_anew(ip, capsys):
    from helpers import CURRENT_INTERPRETER

    before = set(cell(ip, "2", "import colorsys\n" + CURRENT_INTERPRETER))
    ip.run_line_magic("parallel_reset", "")  # variables only: the same interpreters, colorsys still imported
    assert cell(ip, "2", "'colorsys' in __import__('sys').modules") == [True, True]
    capsys.readouterr()
    ip.run_line_magic("parallel_reset", "--fresh")
    out = capsys.readouterr().out
    assert "closed the 2 workers of the subinterpreter pool" in out and "the next cell starts new workers" in out
    assert Pool.reserve()["kept"] == 0
    assert cell(ip, "2", "'colorsys' in __import__('sys').modules") == [False, False]
    assert not set(cell(ip, "2", CURRENT_INTERPRETER)) & before
    with pytest.raises(UsageError, match="unrecognized arguments: --fersh"):
        ip.run_line_magic("parallel_reset", "--fersh")


def test_help_shows_usage_and_examples(ip):
    doc = ip.magics_manager.magics["cell"]["parallel"].__doc__
    for part in ("--push", "--scatter", "--pull", "--out", "--no-monitor", "Examples", "%%parallel 4"):
        assert part in doc


def test_unload_removes_magics_and_closes_pool(ip):
    cell(ip, "2", "1")
    pool = pool_of(ip)
    ip.run_line_magic("unload_ext", "ipy_parallel")
    assert pool.closed
    assert "parallel" not in ip.magics_manager.magics["cell"]
    assert "parallel_status" not in ip.magics_manager.magics["line"]
    with pytest.raises(UsageError):
        ip.run_cell_magic("parallel", "2", "1")
    ip.run_line_magic("load_ext", "ipy_parallel")  # the fixture unloads again
    assert cell(ip, "2", "worker_id") == [0, 1]


def test_reload_ext(ip):
    cell(ip, "2", "1")
    pool = pool_of(ip)
    ip.run_line_magic("reload_ext", "ipy_parallel")
    assert pool.closed
    assert cell(ip, "2", "worker_id") == [0, 1]


def test_load_twice_is_harmless(ip):
    ip.run_line_magic("load_ext", "ipy_parallel")
    assert cell(ip, "1", "7") == [7]


def test_native_bench_prints_the_table_and_stores_the_report(ip, capsys):
    ip.run_line_magic("native_bench", "-n 2 --size 20000 --repeat 1 -o rep")
    out = capsys.readouterr().out
    assert "native_bench: 2 tasks of n=20,000" in out and "every method computed the same values" in out
    assert "native_bench: " in out.splitlines()[0]  # the monitor's closing line comes first
    rep = ip.user_ns["rep"]
    assert rep.agree and rep.tasks == 2 and rep.size == 20_000


@pytest.mark.parametrize(
    "line, message",
    [
        ("-n 0", "-n/--tasks must be from 1"),
        ("--repeat 0", "--repeat must be"),
        ("--size -5", "--size must be from 0"),
        ("-o 9x", "is not a variable name"),
        ("--bogus", "unrecognized arguments"),
    ],
)
def test_native_bench_usage_errors(ip, line, message):
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("native_bench", line)


def test_native_bench_plot_outside_a_notebook_saves_a_png_and_says_where(ip, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ip.run_line_magic("native_bench", "-n 2 --size 1000 --repeat 1 --plot --no-monitor")
    saved = list(tmp_path.glob("native_bench-*.png"))
    assert len(saved) == 1 and saved[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"native_bench: chart saved to {saved[0]}" in capsys.readouterr().out


def test_chdir_in_a_worker_moves_the_whole_process_and_says_so_once(ip, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(os.getcwd())  # put back after the test: the worker moves this process
    body = f"import os\nos.chdir({str(tmp_path)!r})\nos.getcwd()"
    assert cell(ip, "2", body) == [str(tmp_path)] * 2
    assert os.getcwd() == str(tmp_path)  # the notebook's too: one process
    shown = capsys.readouterr()
    assert "os.chdir() in a worker changes the working directory of the whole process" in shown.out + shown.err
    cell(ip, "2", body)
    shown = capsys.readouterr()
    assert "os.chdir()" not in shown.out + shown.err  # once per worker


def test_timeout_option(ip, capsys):
    result = ip.run_cell("%%parallel 2 --timeout 0.3\nimport time\nif worker_id:\n    time.sleep(60)\nworker_id")
    assert not result.success
    error = result.error_in_exec
    assert isinstance(error, TimeoutError) and error.late == [1]
    out = capsys.readouterr().out
    assert out.count("ParallelTimeout: %%parallel did not finish within 0.3 s: stopped worker 1") == 1
    assert cell(ip, "2", "worker_id") == [0, 1]


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_bad_timeout(ip, value):
    with pytest.raises(UsageError, match="--timeout must be a positive number"):
        cell(ip, f"2 --timeout {value}", "1")


def test_native_bench_plot_without_matplotlib_says_so_before_running(ip, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # as if not installed
    started = time.monotonic()
    with pytest.raises(UsageError, match="needs matplotlib: pip install matplotlib"):
        ip.run_line_magic("native_bench", "--plot")
    assert time.monotonic() - started < bound(1), "it ran the benchmark first"


def test_native_bench_in_an_ipy_script_ends(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "bench.ipy"
    script.write_text("%load_ext ipy_parallel\n%native_bench -n 2 --size 20000 --repeat 1 --no-monitor\n")
    ipython = [sys.executable, "-m", "IPython", "--no-banner", "--quick", str(script)]
    proc = subprocess.run(ipython, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "every method computed the same values" in proc.stdout


def test_native_bench_keeps_the_parallel_workers_and_their_variables(ip, recwarn):
    cell(ip, "2", "kept = worker_id + 1")
    ip.run_line_magic("native_bench", "-n 2 --size 1000 --repeat 1 --no-monitor")
    assert cell(ip, "2", "kept") == [1, 2]
    assert not [w for w in recwarn if "restarted" in str(w.message)]


# -- --targets --------------------------------------------------------------------------------


def test_targets_run_on_those_workers_in_their_order(ip):
    assert cell(ip, "4 --targets 3,1", "worker_id, n_workers") == [(3, 4), (1, 4)]
    assert cell(ip, "4 -t 0-2", "worker_id") == [0, 1, 2]
    assert cell(ip, "4 --targets 0,2-3", "worker_id") == [0, 2, 3]
    cell(ip, "4 --targets 1", "only = 'here'")
    assert cell(ip, "4", "'only' in globals()") == [False, True, False, False]


def test_a_barrier_in_a_cell_with_targets_waits_for_those_workers_only(ip):
    body = "from ipy_parallel import worker\nworker.barrier()\nworker_id"
    assert cell(ip, "4 --targets 0,2", body) == [0, 2]
    assert cell(ip, "4 --targets 3", body) == [3]


def test_targets_with_scatter_out_and_pull(ip, capsys):
    ip.user_ns["items"] = list(range(10))
    cell(ip, "4 --targets 1,3 --scatter items -o sums --pull part", "part = items\nsum(items)")
    assert ip.user_ns["sums"] == [sum(range(5)), sum(range(5, 10))]
    assert ip.user_ns["part"] == [list(range(5)), list(range(5, 10))]
    cell(ip, "4 --targets 2", "print('from', worker_id)")
    assert capsys.readouterr().out.splitlines()[-1] == "[2] from 2"


@pytest.mark.parametrize(
    "targets, message",
    [
        ("7", r"the pool has 4 workers \(0-3\), so there is no worker 7"),
        ("1,x", "give worker ids like 1,3 or 0-3"),
        ("3-1", "give worker ids like 1,3 or 0-3"),
        ("1,1", "names a worker twice"),
        ("-1", "give worker ids like 1,3 or 0-3"),
        ("0-100000000", "a pool has at most 256 workers"),
        ("0-" + "9" * 30, "a pool has at most 256 workers"),
        ("0-" + "9" * 5000, "a pool has at most 256 workers"),  # past int()'s 4,300 digits
        ("1_0", "give worker ids like 1,3 or 0-3"),
        ("\u0661", "give worker ids like 1,3 or 0-3"),  # an Arabic-Indic 1: int() takes it, we do not
    ],
)
def test_bad_targets_are_usage_errors(ip, targets, message):
    started = time.monotonic()
    with pytest.raises(UsageError, match=message):
        cell(ip, f"4 --targets={targets}", "1")
    assert time.monotonic() - started < bound(5), "a huge range must be refused without walking it"


@pytest.mark.parametrize(
    "line, body",
    [
        ("2 --targets 3", "1"),
        ("3", "x = ("),
        ("3 --push no_such_name", "1"),
        ("3 -o 1abc", "1"),
        ("3 --scatter short", "1"),
        ("3 --bg --scatter short", "1"),
        ("--targets {cores}", "1"),  # no N: the default, os.cpu_count(), workers
        ("--scatter one", "1"),
    ],
)
def test_a_refused_cell_leaves_the_pool_as_it_was(ip, line, body):
    cell(ip, "4", "state = worker_id * 11")
    pool = pool_of(ip)
    ip.user_ns["short"], ip.user_ns["one"] = [1, 2], [1] * (os.cpu_count() - 1)
    with pytest.raises((UsageError, CellSyntaxError)):
        cell(ip, line.format(cores=os.cpu_count()), body)
    assert pool_of(ip) is pool and pool.size == 4
    assert cell(ip, "4", "state") == [0, 11, 22, 33]


def test_targets_failures_name_the_worker(ip):
    with pytest.raises(ParallelError, match="1 of 1 worker raised"):
        cell(ip, "4 --targets 2", "1 / 0")
    with pytest.raises(ParallelError) as info:
        cell(ip, "4 --targets 2,3", "1 / (worker_id - 2)")
    assert "[worker 2]" in info.value.render() and [r.worker_id for r in info.value.results] == [2, 3]


# -- %parallel, the line magic --------------------------------------------------------------


def test_line_magic_runs_one_statement_on_the_default_pool(ip):
    assert ip.run_line_magic("parallel", "worker_id * 2") == [2 * i for i in range(os.cpu_count())]
    assert ip.run_line_magic("parallel", "import math") is None
    assert ip.run_line_magic("parallel", "math.factorial(4)") == [24] * os.cpu_count()
    result = ip.run_cell("%parallel worker_id + 100")
    assert result.success and result.result == [100 + i for i in range(os.cpu_count())]


def test_line_magic_follows_the_session_defaults(ip):
    ip.run_line_magic("parallel_config", "-n 3")
    assert ip.run_line_magic("parallel", "n_workers") == [3, 3, 3]


def test_line_magic_without_a_statement_says_what_to_give(ip):
    with pytest.raises(UsageError, match="give the statement to run in every worker: %parallel STATEMENT"):
        ip.run_line_magic("parallel", "  ")


def test_line_magic_with_options_says_it_takes_none(ip):
    with pytest.raises(UsageError, match="--bg: the line magic takes no options.*%%parallel OPTIONS"):
        ip.run_line_magic("parallel", "--bg worker_id")
    assert ip.run_line_magic("parallel", "-worker_id") == [-i for i in range(os.cpu_count())]  # an expression


def test_parallel_help_mentions_every_option_and_the_line_form(ip):
    doc = ip.find_magic("parallel", "cell").__doc__
    for option in ("--targets", "--bg", "--wait", "%parallel STATEMENT", "%parallel_wait", "%parallel_stop"):
        assert option in doc


# -- hints where users trip -------------------------------------------------------------------


@pytest.mark.parametrize("body", ["%time x = 1", "!ls", "x = 1\nlen?", "  %timeit sum(range(9))"])
def test_ipython_syntax_in_a_cell_gives_a_one_line_hint(ip, capsys, body):
    result = ip.run_cell(f"%%parallel 2\n{body}")
    assert isinstance(result.error_in_exec, CellSyntaxError)
    out = capsys.readouterr().out
    hints = [line for line in out.splitlines() if line.startswith("hint: workers run plain Python")]
    assert len(hints) == 1 and "IPython syntax" in hints[0]


def test_a_plain_syntax_error_gets_no_hint(ip, capsys):
    ip.run_cell("%%parallel 2\nx = (")
    assert "hint:" not in capsys.readouterr().out
