"""ipy_parallel.worker inside real sub-interpreters (and worker threads): rank and size, the barrier of a run, shared queues."""

import threading
import time
import warnings

import pytest

from helpers import values

import ipy_parallel
from ipy_parallel import worker
from ipy_parallel.backends import open_pool

IMPORT = "from ipy_parallel import worker\n"


@pytest.fixture(params=["subinterpreter", "threads"])
def open_workers(request):
    """open_workers(n): a pool of n workers of each backend whose workers share one process (and
    so a barrier), closed after the test."""
    opened = []

    def open_(n):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # threads on a GIL build take turns: said once
            opened.append(open_pool(request.param, n))
        return opened[-1]

    yield open_
    for pool in opened:
        pool.close()


def errors(results):
    return [None if r.error is None else str(r.error) for r in results]


def test_imports_in_a_worker_without_loading_the_pool():
    with ipy_parallel.Pool(2, fresh=True) as pool:  # new interpreters: a kept one has what earlier cells imported
        loaded = values(pool.run(IMPORT + "import sys\nsorted(m for m in sys.modules if m.startswith('ipy_parallel'))"))
    # Not even the engine's C++ module: it loads when a barrier or queue is first used (a worker
    # process or an ipyparallel engine that asks only rank() or progress() never loads it).
    assert loaded[0] == ["ipy_parallel", "ipy_parallel._wire", "ipy_parallel._wire.protocol", "ipy_parallel.worker"]


def test_rank_and_size_are_the_workers():
    with ipy_parallel.Pool(3) as p:
        assert values(p.run(IMPORT + "(worker.rank(), worker.size(), worker.in_worker())")) == [
            (0, 3, True),
            (1, 3, True),
            (2, 3, True),
        ]


def test_outside_a_worker_rank_says_where_to_call_it():
    assert not worker.in_worker()
    with pytest.raises(RuntimeError, match="not an ipy_parallel worker"):
        worker.rank()


def test_barrier_holds_everyone_until_the_last_arrives(open_workers):
    p = open_workers(3)
    # Worker k arrives after k * 0.2 s; all must leave after the last one arrived.
    source = IMPORT + "import time\ntime.sleep(0.2 * worker_id)\nworker.barrier()\ntime.monotonic()"
    start = time.monotonic()
    left = values(p.run(source))
    assert min(left) - start >= 0.39
    assert max(left) - min(left) < 0.1


def test_barrier_can_be_passed_many_times_in_a_run(open_workers):
    pool = open_workers(2)
    source = IMPORT + "seen = []\nfor step in range(50):\n    seen.append(step)\n    worker.barrier()\nlen(seen)"
    assert values(pool.run(source)) == [50, 50]
    assert values(pool.run(source)) == [50, 50]  # and again in the next run


def test_a_worker_that_raises_breaks_the_barrier_for_the_others(open_workers):
    got = errors(open_workers(3).run(IMPORT + "if worker_id == 1:\n    1 / 0\nworker.barrier()"))
    assert got[1] == "ZeroDivisionError: division by zero"
    assert got[0] == got[2] == "threading.BrokenBarrierError: worker 1 raised ZeroDivisionError: division by zero"


def test_a_worker_that_skips_the_barrier_breaks_it(open_workers):
    pool = open_workers(2)
    got = errors(pool.run(IMPORT + "import time\nif worker_id:\n    time.sleep(0.1)\n    worker.barrier()"))
    assert got == [None, "threading.BrokenBarrierError: worker 0 finished its task without reaching the barrier"]
    assert values(pool.run(IMPORT + "worker.barrier()\n'after'")) == ["after", "after"]  # a new run, a new barrier


def test_the_barrier_of_a_run_with_targets_is_the_targets_alone(open_workers):
    p = open_workers(4)
    for _ in range(3):  # the other workers end at once, every run: never a party
        got = p.run(IMPORT + "import time\ntime.sleep(0.05)\nworker.barrier()\nworker_id", targets=[0, 2])
        assert values(got) == [0, 2]
    assert values(p.run(IMPORT + "worker.barrier()\nworker_id")) == [0, 1, 2, 3]  # all four again
    got = errors(p.run(IMPORT + "if worker_id == 2:\n    worker.barrier()", targets=[2, 3]))
    assert got == ["threading.BrokenBarrierError: worker 3 finished its task without reaching the barrier", None]


def test_barrier_timeout_breaks_it(open_workers):
    pool = open_workers(2)
    got = errors(
        pool.run(IMPORT + "import time\nif worker_id:\n    worker.barrier(timeout=0.2)\nelse:\n    time.sleep(2)")
    )
    assert got == [None, "threading.BrokenBarrierError: worker 1 waited 0.2 s at the barrier"]


def test_interrupt_stops_workers_waiting_at_the_barrier(open_workers):
    pool = open_workers(2)
    run = pool.submit(IMPORT + "if worker_id:\n    worker.barrier()\nelse:\n    while True: pass")
    time.sleep(0.3)
    start = time.monotonic()
    stuck, results = run.stop()
    assert stuck == [] and time.monotonic() - start < 1
    assert [r.error.type_name for r in results] == ["KeyboardInterrupt", "KeyboardInterrupt"]


def test_queue_from_workers_to_main_and_back():
    inbox, outbox = ipy_parallel.Queue("test-inbox"), ipy_parallel.Queue("test-outbox")
    for job in range(6):
        inbox.put(job)
    for _ in range(3):
        inbox.put(None)
    source = IMPORT + (
        "inbox, outbox = worker.Queue('test-inbox'), worker.Queue('test-outbox')\n"
        "while (job := inbox.get()) is not None:\n    outbox.put((job, job * job, worker_id))\n"
    )
    with ipy_parallel.Pool(3) as p:
        values(p.run(source))
    got = sorted(outbox.get(timeout=1) for _ in range(6))
    assert [(job, square) for job, square, _ in got] == [(j, j * j) for j in range(6)]
    assert outbox.qsize() == 0 and inbox.qsize() == 0


def test_queue_between_workers_carries_main_defined_objects(pool):
    source = IMPORT + (
        "q = worker.Queue('test-ring')\n"
        "if worker_id == 0:\n    class Point:\n        def __init__(self, x): self.x = x\n"
        "    q.put(Point(41))\n    result = None\n"
        "else:\n    p = q.get(timeout=5)\n    result = (type(p).__name__, p.x + 1)\nresult"
    )
    assert values(pool.run(source)) == [None, ("Point", 42)]


def test_queue_get_times_out_with_empty():
    q = ipy_parallel.Queue("test-empty")
    start = time.monotonic()
    with pytest.raises(worker.Empty, match="stayed empty"):
        q.get(timeout=0.2)
    assert 0.19 <= time.monotonic() - start < 1


def test_queue_get_in_main_lets_other_threads_run():
    q = ipy_parallel.Queue("test-gil")
    threading.Timer(0.2, q.put, args=("late",)).start()  # needs the GIL while get() waits
    assert q.get(timeout=5) == "late"


def test_queue_clear_and_repr():
    q = ipy_parallel.Queue("test-clear")
    q.put(1)
    q.put(2)
    assert "2 items" in repr(q)
    assert q.clear() == 2 and q.qsize() == 0


def test_queue_name_must_be_text():
    with pytest.raises(TypeError, match="non-empty str"):
        ipy_parallel.Queue("")


def test_on_worker_processes_rank_works_and_shared_memory_says_why():
    from ipy_parallel import ProcessPool

    with ProcessPool(2) as p:
        assert values(p.run(IMPORT + "worker.rank(), worker.size()")) == [(0, 2), (1, 2)]
        for call in ("worker.barrier()", "worker.Queue('q')"):
            got = errors(p.run(IMPORT + call))
            assert all("the process backend's workers are separate processes" in e for e in got), got


# -- progress (the engines' readings of it: test_contract.py) ----------------------------------


def test_progress_outside_a_worker_is_a_plain_iterable():
    items = worker.progress([3, 1, 2])
    assert len(items) == 3 and list(items) == [3, 1, 2] and items.position() == (3, 3)
    generated = worker.progress(x * 2 for x in range(5))
    with pytest.raises(TypeError, match="not known.*total="):
        len(generated)
    assert list(generated) == [0, 2, 4, 6, 8] and generated.position() == (5, None)
    with worker.progress(total=10) as bar:
        bar.update(4)
        bar.update()
    assert bar.position() == (5, 10) and len(bar) == 10 and repr(bar) == "<ipy_parallel progress 5/10>"


def test_progress_over_items_that_know_their_length_costs_nothing_per_item():
    # The loop runs the items' own iterator: the position is read from what it has left.
    for items in ([1, 2, 3, 4], (1, 2, 3, 4), range(4), "abcd", {1: 1, 2: 2, 3: 3, 4: 4}, b"abcd"):
        tracked = worker.progress(items)
        it = iter(tracked)
        assert type(it) is type(iter(items)), items
        next(it)
        assert tracked.position() == (1, 4)
        list(it)
        assert tracked.position() == (4, 4)
    stopped = worker.progress(iter([1, 2, 3]), total=3)  # an iterator has no len: counted
    assert list(stopped) == [1, 2, 3] and stopped.position() == (3, 3)


def test_progress_refuses_what_it_cannot_count():
    with pytest.raises(TypeError, match=r"progress\(items\).*total=n"):
        worker.progress()
    with pytest.raises(TypeError, match="whole number"):
        worker.progress(total="ten")
    with pytest.raises(ValueError, match="negative"):
        worker.progress(total=-1)
