"""The backend contract: one set of tests that every backend (sub-interpreters, processes, an ipyparallel cluster) must pass."""

import gc
import io
import math
import sys
import threading
import time

import pytest

from helpers import bound, ctrl_c_after, interrupt_busy, values

from ipy_parallel import ParallelError, ParallelInterrupted, ParallelTimeout
from ipy_parallel.backends import open_pool
from ipy_parallel.ipython.cell import CellOptions, run_cell
from ipy_parallel.ipython.display import Monitor, Tracker


# Backends whose workers share the caller's interpreter: values come back as the objects
# themselves, so a value that pickle refuses (or whose pickling raises) is no failure there.
BY_REFERENCE = {"threads"}


# -- values and inputs --------------------------------------------------------------------


def test_values_identity_and_persistence(any_pool):
    results = any_pool.run("(worker_id, n_workers)")
    assert values(results) == [(0, 2), (1, 2)] and [r.worker_id for r in results] == [0, 1]
    assert values(any_pool.run("y = 1")) == [None, None]
    any_pool.run("counter = worker_id * 10\ndef square(v):\n    return v * v\nclass Box:\n    size = 3")
    assert values(any_pool.run("counter += 1\ncounter")) == [1, 11]
    assert values(any_pool.run("square(Box.size) + counter")) == [10, 20]  # functions and classes stay too
    assert any_pool.size == 2 and any_pool.state == "idle" and not any_pool.closed


def test_inputs_and_worker_inputs(any_pool):
    factor = 2  # a closure: the lambda travels by value with what it closes over
    results = any_pool.run(
        "f(base + part)",
        inputs={"base": 100, "f": lambda x: x * factor},
        worker_inputs=[{"part": 1}, {"part": 2, "base": 0}],
    )
    assert values(results) == [202, 4]
    with pytest.raises(ValueError, match="worker_inputs has 1 entries; this pool has 2 workers"):
        any_pool.run("0", worker_inputs=[{}])


def test_targets_run_on_a_subset_in_their_order(any_pool):
    any_pool.run("mark = None")
    results = any_pool.run(
        "mark = f(part)\nworker_id, n_workers, mark",
        inputs={"f": lambda x: x * 2},
        worker_inputs=[{"part": 21}],
        targets=[1],
    )
    assert [r.worker_id for r in results] == [1] and values(results) == [(1, 2, 42)]
    assert values(any_pool.run("mark")) == [None, 42]  # worker 0 ran nothing
    assert values(any_pool.run("worker_id", targets=[1, 0])) == [1, 0]
    assert any_pool.pull("mark", targets=[1]) == {"mark": [42]}
    run = any_pool.submit("worker_id", targets=[1])
    assert run.workers == [1] and values(run.results()) == [1] and len(run.cpu_times()) == 1
    with pytest.raises(ValueError, match="worker_inputs has 2 entries; the run has 1 targets"):
        any_pool.run("0", worker_inputs=[{}, {}], targets=[0])
    with pytest.raises(ValueError, match="targets: 2 is not a worker"):
        any_pool.run("0", targets=[2])
    with pytest.raises(ValueError, match="names a worker twice"):
        any_pool.run("0", targets=[0, 0])


def test_unpicklable_input_is_named_before_anything_runs(any_pool):
    any_pool.run("ran = 0")
    if any_pool.backend in BY_REFERENCE:  # nothing is pickled: every worker binds the lock itself
        lock = threading.Lock()
        assert values(any_pool.run("ran += 1\nlock", {"lock": lock})) == [lock, lock]
        return
    with pytest.raises(TypeError, match=r"'lock' \(a lock\) cannot be sent to the workers"):
        any_pool.run("ran += 1", {"fine": 1, "lock": threading.Lock()})
    with pytest.raises(TypeError, match=r"'lock' \(a lock\) cannot be sent to the workers"):
        any_pool.submit("ran += 1", inputs={"lock": threading.Lock()})
    assert values(any_pool.run("ran")) == [0, 0]


def test_a_target_that_raises_is_reported_alone(any_pool):
    results = any_pool.run("1 / 0", targets=[1])
    assert len(results) == 1 and results[0].worker_id == 1 and results[0].error.type_name == "ZeroDivisionError"


@pytest.mark.parametrize("name", ["worker_id", "n_workers", "__builtins__"])
def test_reserved_names_cannot_be_inputs(any_pool, name):
    with pytest.raises(ValueError, match=f"'{name}' is set by ipy_parallel in every worker"):
        any_pool.run("0", {name: 5})
    assert values(any_pool.run("worker_id")) == [0, 1]


@pytest.mark.parametrize("timeout", [math.nan, -1.0])
def test_a_bad_timeout_is_refused(any_pool, timeout):
    with pytest.raises(ValueError, match="timeout must be a number of seconds >= 0"):
        any_pool.run("1", timeout=timeout)


def test_deep_values_travel_by_pickle_when_marshal_cannot(any_pool):
    source = "v = []\nfor _ in range(3000):\n    v = [v]\nv"  # deeper than marshal's limit, plain types
    for r in any_pool.run(source):
        if sys.version_info < (3, 13) and any_pool.backend not in BY_REFERENCE:
            # 3.12's pickle stops at the recursion limit: a clear error then (threads: not pickled)
            assert r.error.type_name == "PicklingError" and "maximum recursion depth" in r.error.message
            continue
        value, depth = r.value, 0
        while value:
            value, depth = value[0], depth + 1
        assert depth == 3000


# -- errors -------------------------------------------------------------------------------


def test_errors_stay_in_their_worker_with_the_cells_traceback(any_pool):
    results = any_pool.run(
        "x = 1\n\ndef inner():\n    return 1 / 0\n\nif worker_id:\n    inner()\nworker_id", filename="<my cell>"
    )
    assert results[0].ok and results[0].value == 0
    error = results[1].error
    assert error.type_name == "ZeroDivisionError" and isinstance(error.exception, ZeroDivisionError)
    assert 'File "<my cell>", line 7, in <module>' in error.traceback
    assert 'File "<my cell>", line 4, in inner' in error.traceback and "return 1 / 0" in error.traceback
    assert "ipy_parallel" not in error.traceback  # none of the runtime's frames
    assert values(any_pool.run("worker_id + 1")) == [1, 2]


@pytest.mark.parametrize(
    "source, type_name", [("raise SystemExit(3)", "SystemExit"), ("raise KeyboardInterrupt", "KeyboardInterrupt")]
)
def test_base_exceptions_raised_by_a_cell_stay_in_the_worker(any_pool, source, type_name):
    assert [r.error.type_name for r in any_pool.run(source)] == [type_name] * 2
    assert values(any_pool.run("worker_id")) == [0, 1]


def test_an_unpicklable_result_fails_for_that_worker_only(any_pool):
    results = any_pool.run("(i for i in range(3)) if worker_id == 0 else worker_id")
    if any_pool.backend in BY_REFERENCE:
        assert list(results[0].value) == [0, 1, 2] and results[1].value == 1
        return
    assert results[0].error.type_name == "PicklingError" and "of type generator" in results[0].error.message
    assert results[1].ok and results[1].value == 1


def test_a_message_with_lone_surrogates_keeps_its_type_and_traceback(any_pool):
    [a, b] = any_pool.run("raise ValueError('bad \\udc80 byte')")
    assert a.error.type_name == "ValueError" and isinstance(a.error.exception, ValueError)
    assert a.error.message == "bad \\udc80 byte" and "ValueError: bad \\udc80 byte" in a.error.traceback
    assert str(a.error.exception) == "bad \udc80 byte"  # the exception itself is untouched


BOMB = "class Bomb:\n    def __reduce__(self):\n        return (exec, ({!r},))\nBomb() if worker_id == 0 else 'fine'"


def test_a_base_exception_while_a_result_is_rebuilt_fails_that_result_only(any_pool):
    [bomb, fine] = any_pool.run(BOMB.format("raise SystemExit('from a result')"))
    if any_pool.backend in BY_REFERENCE:  # nothing is rebuilt: the object itself
        assert type(bomb.value).__name__ == "Bomb" and fine.value == "fine"
        return
    assert "cannot be rebuilt in the main interpreter" in bomb.error.message
    assert bomb.error.type_name == "SystemExit"
    assert fine.value == "fine"
    assert values(any_pool.run("worker_id")) == [0, 1]  # the run was released


def test_a_ctrl_c_while_results_are_rebuilt_stops_the_run_with_every_result(any_pool):
    # As a stop button pressed while a slow value is unpickled: the run is interrupted, not failed.
    if any_pool.backend in BY_REFERENCE:  # nothing is unpickled: the object itself
        assert type(any_pool.run(BOMB.format("raise KeyboardInterrupt"))[0].value).__name__ == "Bomb"
        return
    with pytest.raises(ParallelInterrupted, match="interrupted while its results were rebuilt") as stopped:
        any_pool.run(BOMB.format("raise KeyboardInterrupt"))
    [bomb, fine] = stopped.value.results
    assert bomb.error.type_name == "KeyboardInterrupt" and "while it was rebuilt" in bomb.error.message
    assert fine.value == "fine"
    assert values(any_pool.run("worker_id")) == [0, 1]


# -- output -------------------------------------------------------------------------------


def test_output_streams_while_the_workers_run(any_pool):
    run = any_pool.submit(
        "import sys, time\nprint('early', worker_id, flush=True)\nprint('err', file=sys.stderr)\n"
        "time.sleep(0.8)\nprint('late')",
        stream=True,
    )
    seen, deadline = [], time.monotonic() + bound(0.6)
    while sum(1 for _, s, t in seen if "early" in t) < 2 and time.monotonic() < deadline:
        seen += run.output()
        time.sleep(0.01)
    assert not run.done, "the output came only at the end"
    results = run.results()
    seen += run.output()
    for k in (0, 1):
        assert "".join(t for w, s, t in seen if w == k and s == "stdout") == f"early {k}\nlate\n"
        assert "".join(t for w, s, t in seen if w == k and s == "stderr") == "err\n"
    assert [r.stdout for r in results] == ["early 0\nlate\n", "early 1\nlate\n"]


def test_output_is_bounded_per_stream_and_task(any_pool):
    results = any_pool.run("print('é' * (9 << 20))")  # 9 Mi characters, 18 MiB of UTF-8
    for r in results:
        assert r.stdout.startswith("é" * 1000) and len(r.stdout) < (8 << 20) + 200
        assert r.stdout.endswith(
            "1048577 more characters of stdout were dropped; a task keeps at most 8 Mi characters of each stream]\n"
        )
    assert [r.stdout for r in any_pool.run("print('small')")] == ["small\n", "small\n"]


# -- stopping -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source", ["x = 0\nwhile True:\n    x += 1", "import time\ntime.sleep(1000)"], ids=["python loop", "time.sleep"]
)
def test_interrupt_stops_busy_workers(any_pool, source):
    any_pool.run("kept = worker_id + 5")
    run = any_pool.submit(source)
    time.sleep(0.3)
    assert run.busy_workers() == [0, 1] and any_pool.state == "busy"
    interrupt_busy(any_pool, run, bound(5), f"{any_pool.backend}: interrupt() to stopped ({source.splitlines()[-1]})")
    assert values(any_pool.run("kept")) == [5, 6]  # the same workers, their variables kept


def test_an_interrupt_when_idle_or_late_hits_no_later_run(any_pool):
    assert any_pool.interrupt() == []
    for _ in range(30):  # interrupts racing the end of short runs
        run = any_pool.submit("sum(range(2000))")
        any_pool.interrupt()
        run.results()
    assert values(any_pool.run("import time\ntime.sleep(0.05)\nsum(range(10))")) == [45, 45]


def test_timeout_stops_the_late_workers_only(any_pool):
    start = time.perf_counter()
    with pytest.raises(ParallelTimeout, match="did not finish within 0.3 s: stopped worker 1") as info:
        any_pool.run("if worker_id == 1:\n    while True: pass\nworker_id", timeout=0.3)
    assert time.perf_counter() - start < bound(2.5)
    error = info.value
    assert isinstance(error, TimeoutError) and error.late == [1] and error.stuck == []
    assert error.results[0].value == 0 and error.results[1].error.type_name == "KeyboardInterrupt"
    assert values(any_pool.run("worker_id")) == [0, 1]


def test_ctrl_c_in_the_main_thread_stops_the_workers(any_pool):
    ctrl_c_after(0.3)
    start = time.perf_counter()
    with pytest.raises(ParallelInterrupted, match="the run was interrupted: stopped workers 0-1") as info:
        any_pool.run("while True:\n    pass")
    assert time.perf_counter() - start < bound(2.5)
    assert isinstance(info.value, KeyboardInterrupt)
    assert [r.error.type_name for r in info.value.results] == ["KeyboardInterrupt"] * 2
    assert values(any_pool.run("worker_id")) == [0, 1]


# A worker that cannot be stopped for a while: blocked in C code where no interrupt reaches it
# (a sub-interpreter), or with its interrupt signal ignored (a process, an ipyparallel engine).
STUCK = {
    "subinterpreter": "import select\nselect.select([], [], [], {seconds})\n'late'",
}
STUCK["threads"] = STUCK["subinterpreter"]  # an async exception waits for the C call to return
STUCK["process"] = STUCK["ipyparallel"] = (  # both interrupt with SIGURG
    "import signal, time\nsignal.signal(signal.SIGURG, signal.SIG_IGN)\ntime.sleep({seconds})\n'late'"
)


def test_a_worker_that_cannot_be_stopped_is_named_and_the_next_run_says_it_waits(any_pool, capsys):
    with pytest.raises(ParallelTimeout, match="workers 0-1 could not be stopped") as info:
        any_pool.run(STUCK[any_pool.backend].format(seconds=2.0), timeout=0.2)
    assert info.value.stuck == [0, 1] and info.value.results is None
    assert "stopped workers" not in str(info.value), "workers that could not be stopped are not 'stopped'"
    start = time.perf_counter()
    assert values(any_pool.run("worker_id")) == [0, 1]  # waits for the stuck run, then runs
    assert time.perf_counter() - start < bound(2.5)
    note = "ipy_parallel: waiting for workers 0-1, still busy with an earlier run that was stopped"
    assert note in capsys.readouterr().err
    run = any_pool.submit("while True:\n    pass")  # the cell that ignored the interrupt did not disarm it
    time.sleep(0.2)
    any_pool.interrupt()
    assert run.wait(bound(5)), "a cell that replaced the interrupt's handler left its worker unstoppable"
    assert [r.error.type_name for r in run.results()] == ["KeyboardInterrupt"] * 2


def test_a_timeout_bounds_the_wait_for_an_earlier_run_too(any_pool):
    with pytest.raises(ParallelTimeout):
        any_pool.run(STUCK[any_pool.backend].format(seconds=3.0), timeout=0.2)
    start = time.perf_counter()
    with pytest.raises(ParallelTimeout, match="did not start within 0.5 s: workers 0-1 are still busy") as info:
        any_pool.run("worker_id", timeout=0.5)
    assert time.perf_counter() - start < bound(1.5) and info.value.stuck == [0, 1]
    assert values(any_pool.run("worker_id")) == [0, 1]  # once the stuck run has ended


def test_runs_take_turns_and_an_earlier_run_keeps_its_results(any_pool):
    first = any_pool.submit("import time\ntime.sleep(0.3)\nslow = worker_id\n'first'")
    assert values(any_pool.run("slow")) == [0, 1]  # waited for the first run to finish
    assert values(first.results()) == ["first", "first"]  # collected on its behalf


def test_a_dropped_run_does_not_block_the_pool(any_pool):
    any_pool.submit("import time\ntime.sleep(0.2)\ndone = True")  # the Run is dropped at once
    assert values(any_pool.run("done")) == [True, True]


# -- the workers' environment -----------------------------------------------------------------


def test_reset_clears_variables_but_not_identity(any_pool):
    any_pool.run("x = 1\ndef f():\n    pass\nimport json")
    any_pool.reset()
    for name in ("x", "f", "json"):  # variables, functions and the names of imported modules
        assert [r.error.type_name for r in any_pool.run(name)] == ["NameError"] * 2, name
    assert values(any_pool.run("(worker_id, n_workers)")) == [(0, 2), (1, 2)]


HOSTILE = {
    "closes stdout": "import sys\nsys.stdout.close()",
    "replaces stderr": "import sys, io\nsys.stderr = io.StringIO()",
    "shadows builtins": "list = [1, 2]\nglobals = {}\ndict = None\nsorted = len = 0",
    "replaces __builtins__": "__builtins__ = {}",
    "rebinds its identity": "worker_id = 'me'\nn_workers = -1",
}


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_cell_breaks_neither_later_cells_nor_reset_nor_pull(any_pool, source):
    any_pool.run("kept = worker_id * 2")
    any_pool.run(source)
    results = any_pool.run("import sys\nprint('out', worker_id)\nprint('err', file=sys.stderr)\n(worker_id, n_workers)")
    assert values(results) == [(0, 2), (1, 2)]
    assert [(r.stdout, r.stderr) for r in results] == [("out 0\n", "err\n"), ("out 1\n", "err\n")]
    assert any_pool.pull("kept") == {"kept": [0, 2]}
    any_pool.reset()
    assert [r.error.type_name for r in any_pool.run("kept")] == ["NameError"] * 2


# Not on ipyparallel: an engine's builtins are ipyparallel's and IPython's too, and patching them
# breaks the engine itself before any code of ours runs again (README, Limits).
@pytest.mark.parametrize("backend", ["subinterpreter", "process"])
def test_reset_undoes_what_cells_did_to_builtins(backend, request):
    # New interpreters: in a kept one an earlier cell may have imported what the error report needs.
    with open_pool(backend, 2, **({"fresh": True} if backend == "subinterpreter" else {})) as pool:
        pool.run("import builtins\nbuiltins.len = builtins.list = None\nbuiltins.mine = 1")
        # The stdlib code an error report needs is broken now, not the worker: it says so, and lives.
        [error] = {r.error.message for r in pool.run("1 / 0")}
        assert error.startswith("the worker could not run the task: TypeError") and "%parallel_reset" in error
        pool.reset()
        assert [r.error.type_name for r in pool.run("1 / 0")] == ["ZeroDivisionError"] * 2
        assert values(pool.run("len([1, 2]), 'mine' in dir(__import__('builtins'))")) == [(2, False)] * 2


def test_pull_names_what_is_missing_and_what_cannot_travel(any_pool):
    any_pool.run("a = worker_id\nif worker_id:\n    b = 1\ngen = (i for i in range(3))")
    assert any_pool.pull("a") == {"a": [0, 1]}
    with pytest.raises(NameError, match="worker 0 has no variable 'b'"):
        any_pool.pull("a", "b")
    if any_pool.backend in BY_REFERENCE:
        assert [list(g) for g in any_pool.pull("gen")["gen"]] == [[0, 1, 2]] * 2
        return
    with pytest.raises(Exception, match="the variable 'gen', of type generator, cannot be sent back"):
        any_pool.pull("a", "gen")


def test_cells_under_ever_new_names_do_not_grow_the_workers(any_pool):
    for i in range(1000):
        any_pool.run(f"x = {i}", filename=f"<parallel In[{i}]>")
    sizes = values(any_pool.run("import linecache\nsum(1 for f in linecache.cache if f.startswith('<parallel In['))"))
    assert all(size <= 128 for size in sizes), sizes


def test_big_cells_under_ever_new_names_keep_a_bounded_memory_in_the_workers(any_pool):
    # A 200 KB cell run 100 times used to leave 100 copies of its lines in every worker (65 MiB
    # with 2 workers); 40 runs are past the bound.
    cell = "".join(f"value_{i} = {i}  # a line of a long generated cell, like a pasted table\n" for i in range(2600))
    assert 190_000 < len(cell) < 210_000
    for i in range(40):
        any_pool.run(cell, filename=f"<parallel In[{i}]>")
    kept = values(
        any_pool.run(
            "import linecache, sys\n"
            "sum(sys.getsizeof(line) for f, entry in linecache.cache.items() "
            "if f.startswith('<parallel In[') for line in entry[2])"
        )
    )
    assert all(size < 4 * 2**20 for size in kept), kept


def test_a_result_the_user_drops_is_not_kept_by_the_pool(any_pool):
    # A pool used to keep its last run's results (its Run, and on sub-interpreters the engine's
    # records, which hold a big bytes value itself) until the next run: `del` freed nothing.
    # Counted in references, not in RSS, which each allocator gives back in its own time.
    results = any_pool.run(f"b'x' * {2**20} if worker_id == 0 else None")
    value = results[0].value
    del results
    gc.collect()
    alone = bytes(8)  # a value held by one local name, as `value` must now be
    assert sys.getrefcount(value) == sys.getrefcount(alone), "the pool keeps the last run's results"
    assert values(any_pool.run("worker_id")) == [0, 1]


@pytest.mark.alone
def test_cpu_times_of_a_busy_run(any_pool):
    # 0.8 CPU seconds each (the worker's own thread), however many others share the cores meanwhile.
    run = any_pool.submit("import time\nend = time.thread_time() + 0.8\nwhile time.thread_time() < end: pass")
    time.sleep(0.6)
    live = run.cpu_times()
    results = run.results()
    assert all(c > 0.1 for c in live), live
    assert all(0.3 < r.cpu_time < bound(5) for r in results)
    assert all(c >= r.cpu_time * 0.9 for c, r in zip(run.cpu_times(), results))


@pytest.mark.alone
def test_a_runs_timeline_shows_the_worker_that_finished_early_idle(any_pool):
    # Worker 0 works 0.2 CPU seconds, worker 1 0.6: a run where one worker got most of the work.
    run = any_pool.submit(
        "import time\nend = time.thread_time() + (0.2 if worker_id == 0 else 0.6)\nwhile time.thread_time() < end: pass"
    )
    assert run.timeline is None  # not before its results
    results = run.results()
    timeline = run.timeline
    assert any_pool.last_timeline is timeline
    assert timeline.workers == (0, 1) and timeline.states == ("ok", "ok")
    assert timeline.ends[0] < timeline.ends[1] <= timeline.wall
    assert [round(e, 6) for e in timeline.ends] == [round(r.wall_time, 6) for r in results]
    assert all(total >= r.cpu_time * 0.9 for total, r in zip(timeline.cpu[-1], results))
    # Not a bound on efficiency: whatever else runs on the machine lowers it.
    assert timeline.efficiency == pytest.approx(timeline.cpu_time / (timeline.wall * timeline.usable))
    assert timeline.usable == (2 if any_pool.backend == "ipyparallel" else min(2, timeline.cores))
    assert 0.0 < timeline.efficiency <= 1.05, timeline
    first, second = timeline.busy(4)
    assert first[-1] == 0.0 and second[-1] > 0.02, timeline  # the last quarter: 0 idle, 1 busy
    rows = str(timeline).splitlines()
    assert rows[1].startswith("  [0]") and "done at" in rows[1] and rows[1].split()[1].endswith("·" * 5), timeline


def test_a_stopped_runs_timeline_says_which_workers_were_stopped(any_pool):
    run = any_pool.submit("import time\nif worker_id == 1:\n    time.sleep(60)")
    deadline = time.monotonic() + bound(30)
    while run.busy_workers() != [1] and time.monotonic() < deadline:  # worker 0 has finished
        time.sleep(0.01)
    stuck, results = run.stop()
    assert not stuck and run.timeline.states == ("ok", "stopped")
    assert "stopped at" in str(run.timeline)


# -- worker.progress ---------------------------------------------------------------------------

_PROGRESS_CELL = """
from ipy_parallel import worker
import time
gate = time.monotonic() + {hold}
for i in worker.progress(range({n})):
    if i == {pause_at}:
        while time.monotonic() < gate:  # held here, part way, until the test has seen it
            time.sleep(0.005)
'done'
"""


def _positions_until(run, wanted, timeout):
    """Run.progress() read as a display would, every 0.1 s, until wanted(positions) or the end."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        positions = run.progress()
        seen.append(positions)
        if wanted(positions):
            return positions, seen
        if run.wait(0.1):
            break
    return run.progress(), seen


def test_progress_is_read_live_and_at_the_end(any_pool):
    n, pause_at = 100_000, 40_000
    run = any_pool.submit(_PROGRESS_CELL.format(n=n, pause_at=pause_at, hold=bound(3)))
    positions, seen = _positions_until(run, lambda ps: all(p is not None and p[0] >= pause_at for p in ps), bound(20))
    assert all(p is not None and pause_at <= p[0] <= pause_at + 1 and p[1] == n for p in positions), seen
    assert values(run.results()) == ["done", "done"]
    assert run.progress() == [(n, n), (n, n)]  # the last position, sent as the task ended


def test_progress_of_an_iterator_without_a_length_and_by_hand(any_pool):
    cell = (
        "from ipy_parallel import worker\n"
        "items = worker.progress(x for x in range(1000 + worker_id))\n"
        "n = sum(1 for _ in items)\n"
        "bar = worker.progress(total=50)\n"
        "bar.update(7)\nbar.update(3)\n"
        "try:\n    len(items)\nexcept TypeError as e:\n    said = str(e)\n"
        "(n, said)"
    )
    run = any_pool.submit(cell)
    results = values(run.results())
    assert [r[0] for r in results] == [1000, 1001]
    assert "not known" in results[0][1] and "total=" in results[0][1]
    assert run.progress() == [(10, 50), (10, 50)]  # the latest progress() of a task is the one shown


def test_a_task_without_progress_reports_none_and_a_new_run_forgets_the_last(any_pool):
    run = any_pool.submit("from ipy_parallel import worker\nfor _ in worker.progress([1, 2, 3]): pass")
    run.results()
    assert run.progress() == [(3, 3), (3, 3)]
    run = any_pool.submit("worker_id")
    assert values(run.results()) == [0, 1]
    assert run.progress() == [None, None]


def test_reading_progress_never_stops_or_slows_an_interrupt(any_pool):
    # A worker in a long progress loop, asked for its position many times, still stops at once.
    run = any_pool.submit("from ipy_parallel import worker\nfor i in worker.progress(range(10**12)): pass")
    deadline = time.monotonic() + bound(10)
    while not all(p is not None and p[0] > 0 for p in run.progress()) and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(50):
        run.progress()
    stuck, results = run.stop(bound(5))
    assert not stuck
    assert [r.error.type_name for r in results] == ["KeyboardInterrupt", "KeyboardInterrupt"]
    assert values(any_pool.run("worker_id")) == [0, 1]


# -- %%parallel's runner ----------------------------------------------------------------------


def test_run_cell_end_to_end_with_a_monitor(any_pool):
    out = io.StringIO()
    monitor = Monitor(Tracker(2, cores=2), stdout=out, stderr=out)
    user_ns = {"data": list(range(10)), "scale": 3}
    opts = CellOptions(n=2, push=["scale"], scatter="data", pull=["part"])
    source = (
        "import time\npart = [v * scale for v in data]\nprint('chunk', data[0], data[-1])\ntime.sleep(0.5)\nsum(part)"
    )
    assert run_cell(any_pool, source, opts, user_ns, monitor) == [sum(range(5)) * 3, sum(range(5, 10)) * 3]
    assert user_ns["part"] == [[0, 3, 6, 9, 12], [15, 18, 21, 24, 27]]
    text = out.getvalue()
    assert "[0] chunk 0 4\n" in text and "[1] chunk 5 9\n" in text
    assert "2 workers" in text  # the summary line of a run longer than 0.3 s

    with pytest.raises(ParallelError) as info:
        run_cell(
            any_pool,
            "if worker_id:\n    1 / 0\n'ok'",
            CellOptions(n=2),
            {},
            Monitor(Tracker(2), summary=False, stdout=io.StringIO()),
        )
    [(workers, error)] = info.value.groups
    assert workers == [1] and error.type_name == "ZeroDivisionError"
    assert info.value.results[0].value == "ok"
