"""Stopping runs: Pool.interrupt, timeouts, Ctrl-C in the main thread, workers stuck in C code."""

import signal
import threading
import time

import pytest

from ipy_parallel import Pool
from ipy_parallel.pool import ParallelInterrupted, ParallelTimeout

BUSY = {
    "a Python loop": "x = 0\nwhile True:\n    x += 1",
    "an empty loop": "while True:\n    pass",
    "time.sleep": "import time\ntime.sleep(1000)",
    "from time import sleep": "from time import sleep\nsleep(1000)",
}


@pytest.mark.parametrize("source", BUSY.values(), ids=BUSY.keys())
def test_interrupt_stops_busy_workers_quickly(pool, source):
    run = pool.submit(source)
    time.sleep(0.2)
    start = time.perf_counter()
    assert pool.interrupt() == [0, 1]
    assert run.wait(5), "the workers did not stop"
    latency = time.perf_counter() - start
    print(f"interrupt latency ({source.splitlines()[-1].strip()}): {latency * 1e3:.2f} ms")
    assert latency < 1.0
    assert [r.error.type_name for r in run.results()] == ["KeyboardInterrupt"] * 2
    assert [r.value for r in pool.run("worker_id")] == [0, 1]


def test_interrupt_when_idle_does_nothing(pool):
    assert pool.interrupt() == []
    assert [r.value for r in pool.run("worker_id")] == [0, 1]  # no stale interrupt fires here


def test_a_late_interrupt_does_not_hit_the_next_run(pool):
    for _ in range(50):  # interrupts racing the end of short runs
        run = pool.submit("sum(range(2000))")
        pool.interrupt()
        run.results()
    results = pool.run("import time\ntime.sleep(0.05)\nsum(range(10))")
    assert [r.value for r in results] == [45, 45]


def test_timeout_stops_the_late_workers_only(pool):
    start = time.perf_counter()
    with pytest.raises(ParallelTimeout, match="did not finish within 0.3 s: stopped worker 1") as info:
        pool.run("import time\nif worker_id == 1:\n    while True: pass\nworker_id", timeout=0.3)
    assert time.perf_counter() - start < 2.0
    error = info.value
    assert isinstance(error, TimeoutError) and error.late == [1] and error.stuck == []
    assert error.results[0].value == 0 and error.results[1].error.type_name == "KeyboardInterrupt"
    assert [r.value for r in pool.run("worker_id")] == [0, 1]


def test_worker_stuck_in_c_is_named_and_rejoins(pool):
    # select() blocks in C, where no interrupt reaches it; the run is left to finish alone.
    source = "import select\nselect.select([], [], [], 1.5)\n'late'"
    with pytest.raises(ParallelTimeout, match="workers 0-1 could not be stopped") as info:
        pool.run(source, timeout=0.2)
    assert info.value.stuck == [0, 1] and info.value.results is None
    start = time.perf_counter()
    assert [r.value for r in pool.run("worker_id")] == [0, 1]  # waits for the stuck run, then runs
    assert time.perf_counter() - start < 2.0


def test_ctrl_c_in_the_main_thread_stops_the_workers(pool):
    main = threading.get_ident()
    timer = threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT))
    timer.start()
    start = time.perf_counter()
    with pytest.raises(ParallelInterrupted, match="interrupted: stopped workers 0-1") as info:
        pool.run("while True:\n    pass")
    assert time.perf_counter() - start < 2.0
    assert isinstance(info.value, KeyboardInterrupt)
    assert [r.error.type_name for r in info.value.results] == ["KeyboardInterrupt"] * 2
    assert [r.value for r in pool.run("worker_id")] == [0, 1]


def test_user_code_that_catches_the_interrupt_keeps_running_until_stopped(pool):
    source = ("caught = 0\nwhile True:\n    try:\n        while True:\n            pass\n"
              "    except KeyboardInterrupt:\n        caught += 1\n        if caught == 2:\n            break\ncaught")
    run = pool.submit(source)
    time.sleep(0.1)
    pool.interrupt()
    time.sleep(0.1)
    assert run.busy_workers() == [0, 1]  # caught it, and loops again
    pool.interrupt()
    assert [r.value for r in run.results()] == [2, 2]


def test_an_interrupted_task_sleeps_no_more(pool):
    source = ("import time\ntry:\n    time.sleep(1000)\nexcept KeyboardInterrupt:\n    pass\n"
              "start = time.monotonic()\ntry:\n    time.sleep(1000)\nexcept KeyboardInterrupt:\n    pass\n"
              "time.monotonic() - start < 1")
    run = pool.submit(source)
    time.sleep(0.1)
    pool.interrupt()
    assert [r.value for r in run.results()] == [True, True]
    assert pool.run("import time\nt = time.monotonic()\ntime.sleep(0.2)\ntime.monotonic() - t >= 0.2")[0].value


def test_close_stops_running_workers(run_script):
    proc, seconds = run_script(
        """
        import ipy_parallel
        pool = ipy_parallel.Pool(2)
        run = pool.submit("import time\\ntime.sleep(1000)")
        print("exiting with a busy pool", flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert seconds < 5, f"took {seconds:.1f} s to exit"
