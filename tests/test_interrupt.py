"""How the sub-interpreter engine stops a task (native/worker.cpp): pending calls, its own time.sleep, interrupts again until it ends."""

import time

import pytest

from helpers import bound, interrupt_busy

BUSY = {  # beyond the contract's (a Python loop, time.sleep)
    "an empty loop": "while True:\n    pass",
    "from time import sleep": "from time import sleep\nsleep(1000)",
}


@pytest.mark.parametrize("source", BUSY.values(), ids=BUSY.keys())
def test_interrupt_stops_busy_workers_quickly(pool, source):
    run = pool.submit(source)
    time.sleep(0.2)
    assert interrupt_busy(pool, run, 5, f"interrupt latency ({source.splitlines()[-1].strip()})") < bound(1.0)
    assert [r.value for r in pool.run("worker_id")] == [0, 1]


def test_user_code_that_catches_the_interrupt_keeps_running_until_stopped(pool):
    source = (
        "caught = 0\nwhile True:\n    try:\n        while True:\n            pass\n"
        "    except KeyboardInterrupt:\n        caught += 1\n        if caught == 2:\n            break\ncaught"
    )
    run = pool.submit(source)
    time.sleep(0.1)
    pool.interrupt()
    time.sleep(0.1)
    assert run.busy_workers() == [0, 1]  # caught it, and loops again
    pool.interrupt()
    assert [r.value for r in run.results()] == [2, 2]


def test_an_interrupted_task_sleeps_no_more(pool):
    source = (
        "import time\ntry:\n    time.sleep(1000)\nexcept KeyboardInterrupt:\n    pass\n"
        "start = time.monotonic()\ntry:\n    time.sleep(1000)\nexcept KeyboardInterrupt:\n    pass\n"
        "time.monotonic() - start < 1"
    )
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
