"""The threads backend beyond the contract: inputs by reference, output routed by thread, the kernel's streams and time.sleep left whole."""

import io
import subprocess
import sys
import sysconfig
import threading
import time
import warnings

import pytest

from helpers import bound, cell, python

from ipy_parallel.backends import open_pool
from ipy_parallel.backends.threads import TAKING_TURNS, takes_turns


@pytest.fixture
def pool():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the GIL build's note
        pool = open_pool("threads", 2)
    try:
        yield pool
    finally:
        pool.close()


def test_inputs_and_values_are_the_objects_themselves(pool):
    data = [1, 2, 3]
    results = pool.run("data.append(worker_id)\ndata", {"data": data})
    assert all(r.value is data for r in results) and sorted(data[3:]) == [0, 1]


def test_the_callers_own_output_is_not_a_workers(pool, capsys):
    run = pool.submit("import time\nprint('worker', worker_id)\ntime.sleep(0.3)")
    time.sleep(0.1)
    print("from the caller")  # while the workers run: to the caller's stream
    results = run.results()
    assert [r.stdout for r in results] == ["worker 0\n", "worker 1\n"]
    assert "from the caller" in capsys.readouterr().out


def test_a_stream_that_replaced_the_router_is_wrapped_and_kept(pool):
    saved = sys.stdout
    captured = io.StringIO()
    sys.stdout = captured  # as IPython's capture_output does
    try:
        results = pool.run("print('w')")
        print("captured")
    finally:
        sys.stdout = saved
    assert [r.stdout for r in results] == ["w\n", "w\n"] and captured.getvalue() == "captured\n"


def test_a_cell_that_closes_or_replaces_stdout_leaves_the_process_whole(pool):
    pool.run("0")
    before = sys.stdout  # routed by thread now
    pool.run("import sys, io\nsys.stdout.close()\nsys.stdout = io.StringIO()")
    assert sys.stdout is before and not sys.stdout.closed
    assert [r.stdout for r in pool.run("print('again')")] == ["again\n", "again\n"]


def test_sleep_is_routed_by_thread_and_restored_at_close():
    original = time.sleep
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        pool = open_pool("threads", 1)
    try:
        assert time.sleep is not original
        time.sleep(0.01)  # the caller's sleep still sleeps
        other = threading.Thread(target=time.sleep, args=(0.01,))
        other.start()
        other.join()
        assert pool.run("import time\ntime.sleep(-1)")[0].error.type_name == "ValueError"  # as time.sleep
    finally:
        pool.close()
    assert time.sleep is original and type(sys.stdout).__name__ != "_Router"


def test_stops_within_ms_in_sleep_and_loops(pool):
    for source in ("import time\ntime.sleep(100)", "while True:\n    pass"):
        run = pool.submit(source)
        time.sleep(0.1)
        start = time.perf_counter()
        assert pool.interrupt() == [0, 1]
        assert run.wait(2.0)
        assert time.perf_counter() - start < 0.5
        assert [r.error.type_name for r in run.results()] == ["KeyboardInterrupt"] * 2


# Cells that end at once, sleep, print, loop, or catch the interrupt and sleep on.
RACED = [
    "sum(range(2000))",
    "import time\ntime.sleep(0.001)",
    "print(worker_id)",
    "try:\n    while True: pass\nexcept KeyboardInterrupt:\n    import time\n    time.sleep(10)",
]


def test_interrupts_at_random_instants_lose_no_task_and_leave_no_lock_held(pool):
    # An interrupt lands anywhere in a worker thread: before its cell began, inside the engine's
    # own locks, after its record was in. Every run must still end, and the pool stay whole.
    deadline, runs = time.monotonic() + 3.0, 0
    while time.monotonic() < deadline:
        run = pool.submit(RACED[runs % len(RACED)])
        time.sleep((runs % 7) * 0.0003)
        pool.interrupt()
        assert run.wait(5.0), f"run {runs} never ended: workers {run.busy_workers()} are stuck"
        run.results()
        runs += 1
    assert [r.value for r in pool.run("worker_id")] == [0, 1]


def test_the_display_and_status_say_whether_the_threads_take_turns(ip, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the GIL build's note, said once per process
        assert cell(ip, "2 --backend threads", "import time\ntime.sleep(0.4)\nworker_id") == [0, 1]
    summary = capsys.readouterr().out
    ip.run_line_magic("parallel_status", "")
    status = capsys.readouterr().out
    assert "threads pool: 2 workers, idle" in status
    if takes_turns():  # a GIL build (or 3.14t with the GIL turned back on): said, not hidden
        assert f"%%parallel [threads · {TAKING_TURNS}]: 2 workers," in summary and TAKING_TURNS in status
    else:
        assert "%%parallel [threads]: 2 workers," in summary and TAKING_TURNS not in status


@pytest.mark.skipif(not sysconfig.get_config_var("Py_GIL_DISABLED"), reason="a CPython with a GIL: no GIL to turn on")
def test_an_extension_that_turns_the_gil_on_in_a_cell_is_named_once(tmp_path):
    # A single-phase extension module without Py_mod_gil, built here: importing it turns the GIL
    # on for the whole process (so in a process of its own). The pool says so once, naming it.
    source = tmp_path / "needs_the_gil.c"
    source.write_text(
        "#include <Python.h>\n"
        'static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "needs_the_gil", NULL, -1, NULL};\n'
        "PyMODINIT_FUNC PyInit_needs_the_gil(void) { return PyModule_Create(&def); }\n"
    )
    built = tmp_path / ("needs_the_gil" + sysconfig.get_config_var("EXT_SUFFIX"))
    include = sysconfig.get_paths()["include"]
    subprocess.run(["cc", "-shared", "-fPIC", f"-I{include}", str(source), "-o", str(built)], check=True)
    code = f"""
import sys, warnings
sys.path.insert(0, {str(tmp_path)!r})
warnings.simplefilter("always")
from ipy_parallel import ThreadPool
with ThreadPool(2) as pool, warnings.catch_warnings(record=True) as said:
    pool.run("1")
    print("GIL before:", sys._is_gil_enabled())
    pool.run("import needs_the_gil")
    pool.run("2")
    pool.run("3")
print("GIL after:", sys._is_gil_enabled())
for w in said:
    if "ipy_parallel" in str(w.message):
        print("said:", w.message)
"""
    out = python("-c", code, timeout=bound(60)).stdout
    assert "GIL before: False" in out and "GIL after: True" in out, out
    said = [line for line in out.splitlines() if line.startswith("said:")]
    assert said == [
        "said: ipy_parallel: the GIL is enabled again since this run (needs_the_gil): the ThreadPool's "
        "workers now take turns instead of running in parallel"
    ], out
