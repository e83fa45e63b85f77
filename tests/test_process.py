"""The process backend (ProcessPool) beyond the contract: numpy, deaths and replacements, signals, sys.path and cwd, no orphans."""

import io
import os
import signal
import sys
import time
import warnings

import pytest

from helpers import all_gone, bound, children, ctrl_c_after, gone, interrupt_busy

from ipy_parallel import ParallelInterrupted, ParallelTimeout, ProcessPool, WorkerDied
from ipy_parallel.ipython.cell import CellOptions, run_cell
from ipy_parallel.ipython.display import Monitor, Tracker


@pytest.fixture(scope="module")
def shared():
    """One warm pool for the tests that leave it as they found it (starting one costs ~70 ms)."""
    with ProcessPool(2) as p:
        yield p


@pytest.fixture
def ppool():
    """A fresh 2-process pool, closed after the test."""
    with ProcessPool(2) as p:
        yield p


def worker_pids(pool):
    return [r.value for r in pool.run("import os\nos.getpid()")]


def test_each_worker_sees_its_id_and_the_pool_size(shared):
    results = shared.run("print('hello from', worker_id)\n(worker_id, n_workers)")
    assert [r.value for r in results] == [(0, 2), (1, 2)]
    assert [r.stdout for r in results] == ["hello from 0\n", "hello from 1\n"]
    assert all(r.ok and 0 < r.wall_time < bound(1) for r in results)
    assert len(set(worker_pids(shared))) == 2 and os.getpid() not in worker_pids(shared)
    assert shared.size == 2 and shared.state == "idle" and not shared.closed
    assert repr(shared).startswith("<ipy_parallel.ProcessPool 2 worker processes, idle,")


def test_numpy_imports_and_computes_in_the_workers(shared):
    results = shared.run(
        "import numpy as np\na = np.arange(1_000_000, dtype=np.float64) * (worker_id + 1)\nfloat(a.sum()), a[:3]"
    )
    import numpy as np

    for r in results:
        total, head = r.value
        assert total == (r.worker_id + 1) * 999_999 * 1_000_000 / 2
        assert isinstance(head, np.ndarray) and head.tolist() == [0.0, r.worker_id + 1, 2 * (r.worker_id + 1)]
    # an array sent in comes back changed; numpy stays imported for the next run
    back = shared.run("m @ m + worker_id", inputs={"m": np.eye(3)})
    assert [r.value.tolist()[0] for r in back] == [[1.0, 0.0, 0.0], [2.0, 1.0, 1.0]]


@pytest.mark.alone
def test_cpu_times_of_the_pool_and_of_a_run(ppool):
    before = ppool.cpu_times()
    # Half a CPU second each, however many other processes share the cores meanwhile.
    run = ppool.submit("import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end:\n    pass")
    time.sleep(0.3)
    busy = run.busy_workers()
    assert busy == [0, 1] and ppool.state == "busy"
    run.results()
    spent = run.cpu_times()
    assert all(0.3 < t < 1.0 for t in spent), spent  # /proc ticks: 10 ms resolution
    assert all(a >= b + 0.3 for a, b in zip(ppool.cpu_times(), before))
    assert ppool.state == "idle" and run.busy_workers() == []


def test_interrupt_stops_workers_in_numpy(shared):
    source = "import numpy as np\nwhile True:\n    np.sort(np.random.rand(10000))"
    shared.run("keep = worker_id + 5")
    run = shared.submit(source)
    time.sleep(0.3)
    assert interrupt_busy(shared, run, 2, f"interrupt latency ({source.splitlines()[-1].strip()})") < 1.0
    assert [r.value for r in shared.run("keep")] == [5, 6]  # same processes, variables kept


def test_idle_workers_survive_sigint(shared):
    # What Ctrl-C in a terminal or jupyter_client's interrupt (a signal to the whole process
    # group) does to workers that have nothing to run.
    pids = worker_pids(shared)
    for _ in range(3):
        for pid in pids:
            os.kill(pid, signal.SIGINT)
        time.sleep(0.05)
    assert shared.interrupt() == []
    assert worker_pids(shared) == pids


@pytest.mark.parametrize(
    "death, how",
    [
        ("os._exit(3)", "exit code 3"),
        ("os.kill(os.getpid(), signal.SIGKILL)", "killed by SIGKILL"),
        ("ctypes.string_at(0)", "killed by SIGSEGV"),
    ],
)
def test_a_dying_worker_is_reported_and_replaced(ppool, death, how):
    ppool.run("kept = 'mine'")
    old = worker_pids(ppool)
    source = f"import os, signal, ctypes\nprint('before', flush=True)\nif worker_id == 1:\n    {death}\nworker_id"
    results = ppool.run(source)
    assert results[0].value == 0 and results[0].ok
    error = results[1].error
    if "libasan" in os.environ.get("LD_PRELOAD", "") and how.endswith("SIGSEGV"):
        how = "killed by SIGABRT"  # make sanitize: ASan's handler takes the fault and aborts (abort_on_error)
    assert error.type_name == "ipy_parallel.WorkerDied" and how in error.message
    assert isinstance(error.exception, WorkerDied)
    assert results[1].stdout == "before\n"  # what it wrote and flushed before dying is kept
    with pytest.warns(RuntimeWarning, match=f"worker 1's process had died \\({how}\\).*variables"):
        after = ppool.run("globals().get('kept')")
    assert [r.value for r in after] == ["mine", None]
    new = worker_pids(ppool)
    assert new[0] == old[0] and new[1] != old[1] and gone(old[1])
    assert [r.value for r in ppool.run("(worker_id, n_workers)")] == [(0, 2), (1, 2)]


def test_a_worker_killed_while_idle_is_replaced(ppool):
    pid = worker_pids(ppool)[0]
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    with pytest.warns(RuntimeWarning, match="worker 0's process had died"):
        assert [r.value for r in ppool.run("worker_id")] == [0, 1]


def test_workers_follow_sys_path_and_cwd(shared, tmp_path, monkeypatch):
    (tmp_path / "helper_mod_for_process.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    results = shared.run("import os, helper_mod_for_process\n(helper_mod_for_process.VALUE, os.getcwd())")
    assert [r.value for r in results] == [(42, str(tmp_path))] * 2


def test_close_leaves_no_child_processes():
    before = children()
    pool = ProcessPool(3)
    pids = worker_pids(pool)
    assert set(pids) <= children()
    run = pool.submit("import time\ntime.sleep(100)")  # close() stops a run in progress too
    time.sleep(0.1)
    start = time.perf_counter()
    pool.close()
    assert time.perf_counter() - start < 1.5
    pool.close()  # harmless twice
    assert all(gone(pid) for pid in pids) and children() <= before
    assert pool.state == "closed" and run.wait(1)
    with pytest.raises(RuntimeError, match="closed"):
        pool.run("0")


def test_close_kills_a_worker_that_ignores_its_interrupt():
    pool = ProcessPool(1)
    [pid] = worker_pids(pool)
    pool.submit("import signal, time\nsignal.signal(signal.SIGURG, signal.SIG_IGN)\ntime.sleep(100)")
    time.sleep(0.2)
    start = time.perf_counter()
    pool.close()
    assert time.perf_counter() - start < 3.0 and gone(pid)


EXIT_SCRIPT = """
import sys, time
from ipy_parallel import ProcessPool
pool = ProcessPool(2)
print(*[r.value for r in pool.run("import os\\nos.getpid()")], flush=True)
{tail}
"""


@pytest.mark.parametrize("tail", ["", "pool.submit('import time\\ntime.sleep(100)')"], ids=["idle", "running"])
def test_no_orphans_after_interpreter_exit(run_script, tail):
    proc, seconds = run_script(EXIT_SCRIPT.format(tail=tail))
    assert proc.returncode == 0, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2 and seconds < 10
    # A worker still busy learns of the exit from its lifeline a moment after the parent is gone.
    assert all_gone(pids, bound(5))


# SIGKILL of the parent: no atexit, no finalizer; only the lifeline pipe is left. A kernel
# restart kills the kernel's whole process group: a worker busy in C code that holds its GIL
# cannot read its lifeline until that ends, so the group's SIGKILL must reach it.
@pytest.mark.parametrize(
    "work, kill, seconds",
    [
        ("while True: pass", lambda parent: parent.kill(), 3),
        ("sum(range(10**11))", lambda parent: os.killpg(parent.pid, signal.SIGKILL), bound(3)),
    ],
    ids=["parent", "process-group-busy-in-c"],
)
def test_no_orphans_when_the_parent_is_killed(tmp_path, work, kill, seconds):
    import subprocess

    script = tmp_path / "parent.py"
    script.write_text(EXIT_SCRIPT.format(tail=f"pool.submit({work!r})\ntime.sleep(100)"))
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )  # its own group, as a kernel has: not ours
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2
    time.sleep(0.3)
    kill(parent)
    parent.wait()
    assert all_gone(pids, seconds), "worker processes outlived their parent"


def test_bad_sizes_rejected():
    with pytest.raises(ValueError):
        ProcessPool(0)
    with pytest.raises(TypeError):
        ProcessPool(2.0)


def test_run_cell_timeout_and_interrupt(shared):
    silent = Monitor(Tracker(2), summary=False, stdout=io.StringIO())
    with pytest.raises(ParallelTimeout):
        run_cell(shared, "import time\ntime.sleep(100)", CellOptions(n=2, timeout=0.3), {}, silent)
    ctrl_c_after(0.3)
    start = time.perf_counter()
    with pytest.raises(ParallelInterrupted):
        run_cell(shared, "while True:\n    pass", CellOptions(n=2), {}, silent)
    assert time.perf_counter() - start < 2.0
    assert run_cell(shared, "worker_id", CellOptions(n=2), {}, silent) == [0, 1]


IGNORES_INTERRUPT = "import signal, time\nsignal.signal(signal.SIGURG, signal.SIG_IGN)\ntime.sleep({})\n'late'"


def test_ctrl_c_while_waiting_for_stuck_workers_kills_them(ppool):
    ppool.run("kept = 1")
    with pytest.raises(ParallelTimeout):
        ppool.run(IGNORES_INTERRUPT.format(100), timeout=0.2)
    ctrl_c_after(0.3)
    with pytest.warns(RuntimeWarning, match="killed the processes of workers 0-1"):
        with pytest.raises(KeyboardInterrupt):
            ppool.run("worker_id")  # waits for the stuck run: Ctrl-C gives up on it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once above: no second warning as new processes replace them
        assert [r.value for r in ppool.run("globals().get('kept'), worker_id")] == [(None, 0), (None, 1)]


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_gets_workers_of_its_own(ppool):
    ppool.run("state = 'parent'")
    parent_pids = worker_pids(ppool)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its pool must not touch its parent's processes
        try:
            with pytest.warns(RuntimeWarning, match="forked"):
                values = [r.value for r in ppool.run("import os\nglobals().get('state'), os.getpid()")]
            ok = [v[0] for v in values] == [None, None] and not {v[1] for v in values} & set(parent_pids)
            ppool.close()
            os.write(write, b"ok" if ok else repr(values).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        answer = f.read()
    os.waitpid(pid, 0)
    assert answer == b"ok"
    assert worker_pids(ppool) == parent_pids and [r.value for r in ppool.run("state")] == ["parent"] * 2


GROUP_SCRIPT = """
import os, signal, sys, time
from ipy_parallel import ProcessPool
signal.signal(signal.SIGINT, lambda *a: None)  # this parent stands in for a kernel that handles it
pool = ProcessPool(2)
pool.run("x = worker_id")
os.killpg(0, signal.SIGINT)  # what jupyter_client's interrupt and a terminal's Ctrl-C do
time.sleep(0.2)
print([r.value for r in pool.run("x")])
run = pool.submit("import time\\nt = time.monotonic()\\nwhile time.monotonic() - t < 1:\\n    pass\\nworker_id")
time.sleep(0.3)
os.killpg(0, signal.SIGINT)  # not a stop for a run: workers ignore SIGINT (a --bg run goes on)
print([r.value for r in run.results(timeout=10)])
"""


def test_a_sigint_to_the_whole_process_group_stops_no_worker(tmp_path):
    import subprocess

    script = tmp_path / "group.py"
    script.write_text(GROUP_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, start_new_session=True
    )  # its own process group, so that we are not hit
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["[0, 1]", "[0, 1]"]


def test_close_during_a_run_that_stops_at_once_is_quick():
    pool = ProcessPool(2)
    run = pool.submit("import time\ntime.sleep(100)")
    time.sleep(0.2)
    start = time.perf_counter()
    pool.close()
    assert time.perf_counter() - start < bound(0.5)  # the interrupted workers answered: no waiting out the grace
    assert run.wait(1)
    with pytest.raises(RuntimeError, match="closed before the run finished: its results are lost"):
        run.results()


def test_processes_a_cell_starts_keep_the_usual_ctrl_c(shared):
    # Workers do not act on SIGINT (it is meant for the kernel), but must not pass that on.
    script = (
        "import signal, subprocess, sys\n"
        + "subprocess.run([sys.executable, '-c', 'import signal; print(signal.getsignal(signal.SIGINT))'], "
        + "capture_output=True, text=True).stdout.strip()"
    )
    assert [r.value for r in shared.run(script)] == ["<built-in function default_int_handler>"] * 2


def test_a_pool_dropped_without_close_ends_its_processes():
    # As a Ctrl-C can make it: the pool was made, the assignment never happened. Its reader
    # threads keep the engine alive, so only a finalizer of the pool itself ends the processes.
    before = children()
    ProcessPool(2)
    assert all_gone(children() - before, bound(5)), f"left: {children() - before}"
