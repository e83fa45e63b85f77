"""On a free-threaded CPython (3.14t): the extension keeps the GIL off, and its workers run beside threads that run in parallel too."""

import os
import subprocess
import sys
import sysconfig
import textwrap

import pytest

from helpers import bound

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

NO_FREE_THREADING = f"CPython {sys.version.split()[0]} has a GIL: there is no free-threading to keep"


def _in_a_fresh_process(code: str) -> str:
    """Runs code in a new interpreter of this venv (the GIL state is per process, and this pytest
    process has imported much already); RuntimeWarning is an error there, as CPython says with
    one that an extension module turned the GIL on."""
    env = {k: v for k, v in os.environ.items() if k != "IPY_PARALLEL_BACKEND"}  # a user's default backend
    proc = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=bound(120),
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.skipif(not FREE_THREADED, reason=NO_FREE_THREADING)
def test_import_load_ext_and_cells_leave_the_gil_off():
    out = _in_a_fresh_process("""
        import sys
        assert not sys._is_gil_enabled(), "the GIL was on before anything of ours was imported"
        import ipy_parallel
        from ipy_parallel import _engine
        print("GIL after import:", sys._is_gil_enabled())
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "ipy_parallel")
        print("GIL after load_ext:", sys._is_gil_enabled())
        print("default backend:", ip.find_magic("parallel").__self__.defaults.backend)
        ip.user_ns["data"] = list(range(10))
        values = ip.run_cell_magic("parallel", "2 --no-monitor --push data", "sum(data) + worker_id")
        assert values == [45, 46], values
        values = ip.run_cell_magic("parallel", "2 --no-monitor", "import numpy as np\\nint(np.arange(4).sum()) + worker_id")
        assert values == [6, 7], values
        values = ip.run_cell_magic("parallel", "2 --no-monitor --backend subinterpreter --push data", "sum(data) - worker_id")
        assert values == [45, 44], values
        handle = ip.run_cell_magic("parallel", "2 --bg --no-monitor -o late", "worker_id * 2")
        ip.run_line_magic("parallel_wait", "")
        assert ip.user_ns["late"] == [0, 2], ip.user_ns.get("late")
        with ipy_parallel.SubinterpreterExecutor(2) as executor:
            assert list(executor.map(abs, [-1, -2])) == [1, 2]
        print("GIL after cells:", sys._is_gil_enabled())
        ip.run_line_magic("unload_ext", "ipy_parallel")
    """)
    said = [line for line in out.splitlines() if line.startswith(("GIL after", "default backend"))]
    assert said == [
        "GIL after import: False",
        "GIL after load_ext: False",
        "default backend: threads",
        "GIL after cells: False",
    ], out


def test_threads_sharing_one_pool_each_get_their_own_runs_results(pool):
    # Several threads of the main interpreter use one pool at once, as a background run, the live
    # display and the notebook's cells do. With a GIL, the GIL kept the engine's handle to one
    # caller at a time; on a free-threaded build only the engine's own locks do: each run still
    # gets its own values, whole, and nothing crashes (under the sanitizer build too).
    import threading

    runs, errors, done = 60, [], threading.Event()
    counts = [0] * 4

    def use(k):
        try:
            for i in range(runs):
                results = pool.run("worker_id * 1000 + k * 100 + i", {"k": k, "i": i})
                assert [r.value for r in results] == [w * 1000 + k * 100 + i for w in range(2)]
                counts[k] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below, with its thread
            errors.append((k, repr(exc)))

    def watch():  # what the live display reads while runs go on
        while not done.is_set():
            assert len(pool.cpu_times()) == 2

    users = [threading.Thread(target=use, args=(k,)) for k in range(4)]
    watcher = threading.Thread(target=watch)
    for t in (*users, watcher):
        t.start()
    for t in users:
        t.join(bound(120))
    done.set()
    watcher.join(bound(10))
    assert not any(t.is_alive() for t in (*users, watcher)), "a thread is stuck in the pool"
    assert not errors, errors
    assert counts == [runs] * 4
