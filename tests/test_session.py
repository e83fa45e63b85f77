"""Backends from the magics: --backend process, %parallel_config defaults, the fallback to processes, status of every pool."""

import os
import sys

import pytest
from IPython.core.error import UsageError

from helpers import bound, cell
from ipy_parallel.ipython.session import Config, not_isolated_modules
from ipy_parallel.exceptions import ParallelError

NUMPY_CELL = "import numpy as np\nint(np.arange(worker_id, 100, n_workers).sum())"
NUMPY_VALUES = [sum(range(0, 100, 2)), sum(range(1, 100, 2))]


def config(ip, line=""):
    ip.run_line_magic("parallel_config", line)


def pools(ip):
    from ipy_parallel.ipython.magics import _loaded

    return _loaded[id(ip)].pools


def test_process_backend_runs_numpy_with_the_same_syntax(ip, capsys):
    ip.user_ns["offset"] = 1000
    assert cell(ip, "2 --backend process --push offset", "print('hi', worker_id)\n" + NUMPY_CELL + " + offset") == [
        v + 1000 for v in NUMPY_VALUES
    ]
    # The summary line, if the run took long enough to get one (a loaded machine), is not the workers' output.
    printed = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("%%parallel")]
    assert sorted(printed) == ["[0] hi 0", "[1] hi 1"]
    cell(ip, "2 -b process", "kept = worker_id")  # a warm pool: variables stay, like sub-interpreters'
    assert cell(ip, "2 -b process", "kept") == [0, 1]


def test_process_backend_errors_are_grouped(ip):
    with pytest.raises(ParallelError, match="2 of 2 workers raised; first: ZeroDivisionError"):
        cell(ip, "2 --backend process", "1 / 0")


def test_without_fallback_numpy_fails_saying_what_to_do(ip):
    with pytest.raises(ParallelError) as info:
        cell(ip, "2", NUMPY_CELL)
    assert "%%parallel --backend process" in info.value.render()
    assert not_isolated_modules(info.value) == ["numpy"]


def test_fallback_reruns_on_processes_with_a_note(ip, capsys):
    config(ip, "--fallback on")
    assert cell(ip, "2", NUMPY_CELL) == NUMPY_VALUES
    out = capsys.readouterr().out
    assert "numpy cannot be imported in a sub-interpreter; running the cell again on the process backend" in out
    assert pools(ip).of("process").size == 2


def test_fallback_leaves_other_errors_alone(ip):
    config(ip, "--fallback on")
    with pytest.raises(ParallelError, match="ZeroDivisionError"):
        cell(ip, "2", "1 / 0")
    assert pools(ip).of("process") is None  # nothing re-ran


def test_config_sets_defaults_and_shows_them(ip, capsys):
    config(ip, "--backend process -n 3 --monitor off")
    assert "backend='process', n=3, monitor=False" in capsys.readouterr().out
    pids, sizes = zip(*cell(ip, "", "import os\nos.getpid(), n_workers"))
    assert sizes == (3, 3, 3) and len(set(pids)) == 3 and os.getpid() not in pids
    assert pools(ip).of("process").size == 3 and pools(ip).of("subinterpreter").runs == 1  # warmed, unused
    assert cell(ip, "2 --backend subinterpreter", "n_workers") == [2, 2]  # a cell's options win
    config(ip, "--reset")
    assert "backend='subinterpreter', n=None, monitor=True, fallback=False" in capsys.readouterr().out


def test_the_default_backend_fits_this_cpython_and_the_environment_can_name_another(monkeypatch):
    import sysconfig
    import warnings

    monkeypatch.delenv("IPY_PARALLEL_BACKEND")  # the suite's own choice (conftest.py)
    gil_off = bool(sysconfig.get_config_var("Py_GIL_DISABLED")) and not sys._is_gil_enabled()
    assert Config().backend == ("threads" if gil_off else "subinterpreter")
    monkeypatch.setenv("IPY_PARALLEL_BACKEND", " process ")
    assert Config().backend == "process"
    monkeypatch.setenv("IPY_PARALLEL_BACKEND", "fibers")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert Config().backend == ("threads" if gil_off else "subinterpreter")
    assert [str(w.message) for w in said] == [
        "ipy_parallel: IPY_PARALLEL_BACKEND='fibers' names no backend (choose one of subinterpreter, process, "
        f"ipyparallel, threads); cells run on {'threads' if gil_off else 'subinterpreter'}"
    ]


def test_config_monitor_off_silences_the_summary(ip, capsys):
    config(ip, "--monitor off")
    capsys.readouterr()
    cell(ip, "2", "import time\ntime.sleep(0.4)")
    assert "%%parallel:" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "line, message",
    [
        ("-n 0", "an integer from 1 to 256"),
        ("--backend fibers", "invalid choice: 'fibers'"),  # threads is a backend now
        ("--fallback maybe", "invalid choice: 'maybe'"),
    ],
)
def test_config_misuse_is_a_usage_error(ip, line, message):
    with pytest.raises(UsageError, match=message):
        config(ip, line)


def test_cluster_options_need_the_ipyparallel_backend(ip):
    with pytest.raises(UsageError, match="add --backend ipyparallel"):
        cell(ip, "2 --profile default", "1")


def test_status_and_reset_cover_every_backend(ip, capsys):
    cell(ip, "2", "a = 1")
    cell(ip, "2 --backend process", "a = 1")
    capsys.readouterr()
    ip.run_line_magic("parallel_status", "")
    out = capsys.readouterr().out
    assert "subinterpreter pool: 2 workers" in out and "process pool: 2 workers" in out
    ip.run_line_magic("parallel_reset", "")
    assert cell(ip, "2 --backend process", "'a' in globals()") == [False, False]
    assert cell(ip, "2", "'a' in globals()") == [False, False]


def test_unload_closes_the_pools_of_every_backend(ip):
    cell(ip, "2 --backend process", "1")
    process_pool = pools(ip).of("process")
    ip.run_line_magic("unload_ext", "ipy_parallel")
    assert process_pool.closed
    ip.run_line_magic("load_ext", "ipy_parallel")


def test_config_describes_itself():
    assert Config(backend="process").describe().startswith("backend='process', n=None")


# -- a warm start: %load_ext starts the default pool in the background ---------------------------


def test_load_ext_warms_the_default_pool_and_the_first_cell_uses_it(ip):
    from helpers import magics_of

    pools = magics_of(ip).pools
    warmed = pools.of("subinterpreter")  # waits for the background start, if still going
    assert warmed is not None and warmed.state == "idle" and warmed.size == (os.cpu_count() or 1)
    assert warmed.runs == 1  # started and warmed up by an empty run, nothing of the user's
    ip.run_cell_magic("parallel", "--no-monitor", "worker_id")
    assert pools.of("subinterpreter") is warmed and warmed.runs == 2


def test_a_pool_warmed_in_the_background_is_adopted_resized_or_closed():
    from ipy_parallel.ipython.session import Pools

    pools = Pools()
    pools.warm("subinterpreter", 2)
    pools.warm("subinterpreter", 2)  # once is enough
    pool = pools.get("subinterpreter", 2)
    assert pool.size == 2 and pools.get("subinterpreter", 2) is pool
    assert pools.get("subinterpreter", 3) is pool and pool.size == 3  # resized
    pools.warm("process", 1)
    pools.close()  # waits for it, then closes it
    assert pools.open() == {}


@pytest.mark.parametrize("backend", ["subinterpreter", "threads", "process"])
def test_a_pool_warmed_in_the_background_adds_no_module_from_its_thread(run_script, backend):
    # Without the GIL, a module added to sys.modules by the warm-up thread while the kernel
    # iterates over it as it starts kills the kernel (CI run 19, 3.14t). In a fresh process, where
    # nothing the start needs is loaded yet: what the start imports, prepare() imports first, and
    # warm() calls it before its thread starts.
    header = f"""
        import sys, warnings
        warnings.simplefilter("ignore", RuntimeWarning)  # a GIL build's ThreadPool: they take turns
        from ipy_parallel.backends import pool_class
        from ipy_parallel.ipython.session import Pools
        backend = {backend!r}
    """
    warmed, _ = run_script(
        header
        + """
        pools = Pools()
        pools.warm(backend, 2)
        before = set(sys.modules)  # the pool is still starting, in its thread
        pools.get(backend, 2)  # waits for it
        print(sorted(set(sys.modules) - before))
        pools.close()
    """
    )
    assert warmed.returncode == 0 and warmed.stdout.strip() == "[]", (warmed.stdout, warmed.stderr)
    prepared, _ = run_script(
        header
        + """
        pool_class(backend).prepare()
        before = set(sys.modules)
        with pool_class(backend)(2) as pool:
            pool.run("")
        print(sorted(set(sys.modules) - before))
    """
    )
    assert prepared.returncode == 0 and prepared.stdout.strip() == "[]", (prepared.stdout, prepared.stderr)


def test_fork_or_exit_while_a_pool_warms_is_safe(run_script):
    proc, _ = run_script("""
        import os
        from ipy_parallel.ipython.session import Pools

        for i in range(10):
            pools = Pools()
            pools.warm("subinterpreter", 2)
            pid = os.fork()  # the engine's fork hook waits for the pool, then ends it
            if pid == 0:
                os._exit(7)
            assert os.waitpid(pid, 0)[1] >> 8 == 7
            pools.get("subinterpreter", 2).run("0")
            pools.close()
        Pools().warm("subinterpreter", 2)  # still starting as the script ends
        print("done")
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr


def test_fallback_note_says_earlier_statements_ran_only_when_some_did(ip, capsys):
    config(ip, "--fallback on")
    cell(ip, "2", NUMPY_CELL)  # the import is the first statement
    assert "Statements before the import ran" not in capsys.readouterr().out
    assert cell(ip, "2", "ran_first = worker_id\n" + NUMPY_CELL) == NUMPY_VALUES
    assert "Statements before the import ran in the sub-interpreters too." in capsys.readouterr().out


@pytest.mark.parametrize("made", [False, True], ids=["before the thread is made", "as start() waits for it"])
def test_a_ctrl_c_inside_the_start_of_a_pools_thread_leaves_no_cell_waiting_for_it(ip, monkeypatch, made):
    # A Ctrl-C can land inside Thread.start() before the thread exists: the pool that thread was
    # to start or grow then never comes, and the next cell must not wait for it forever. Or it
    # lands as start() waits for the new thread to run (CI run 10, 3.13): the cell ends with the
    # one line that says the resize goes on, and the next cell gets the grown pool.
    import threading

    from ipy_parallel.exceptions import ParallelInterrupted

    assert cell(ip, "2", "worker_id") == [0, 1]
    real_start = threading.Thread.start

    def interrupted_start(thread):
        if thread.name.startswith("ipy_parallel-"):
            if made:
                real_start(thread)
            raise KeyboardInterrupt
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", interrupted_start)
    with pytest.raises(ParallelInterrupted, match="being resized; that goes on in the background"):
        ip.run_cell_magic("parallel", "3", "worker_id")  # grows the pool in a thread of its own
    monkeypatch.setattr(threading.Thread, "start", real_start)
    done = []
    runner = threading.Thread(target=lambda: done.append(cell(ip, "3", "worker_id")), daemon=True)
    real_start(runner)
    runner.join(bound(30))
    assert done == [[0, 1, 2]], "the next cell waited for a start that never began"
