"""ThreadsExecutor: the concurrent.futures contract on a ThreadPool's real threads, and its stop."""

import concurrent.futures
import math
import random
import signal
import threading
import time
import warnings
from concurrent.futures.thread import BrokenThreadPool

import pytest

import helper_tasks
from helpers import bound, ctrl_c_after, soak
from ipy_parallel import ThreadsExecutor


@pytest.fixture
def executor():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "take turns", on a CPython with a GIL
        with ThreadsExecutor(2) as ex:
            yield ex


def test_is_an_executor_and_maps_in_order(executor):
    assert isinstance(executor, concurrent.futures.Executor)
    ns = [30_000, 10_000, 20_000, 5_000, 1]
    assert list(executor.map(helper_tasks.seed, ns)) == [helper_tasks.seed(n) for n in ns]
    assert list(executor.map(math.factorial, range(50))) == [math.factorial(i) for i in range(50)]


def test_calls_run_at_the_same_time_in_two_threads_on_the_callers_objects(executor):
    # Each call waits for the other at a barrier: this can only finish if both run at once.
    barrier, shared = threading.Barrier(2, timeout=bound(10)), []

    def meet(me):
        barrier.wait()
        shared.append(me)
        return threading.get_ident(), shared

    a, b = executor.submit(meet, "a"), executor.submit(meet, "b")
    (thread_a, list_a), (thread_b, list_b) = a.result(timeout=bound(20)), b.result(timeout=bound(20))
    assert len({thread_a, thread_b, threading.get_ident()}) == 3
    assert list_a is list_b is shared and sorted(shared) == ["a", "b"]  # nothing copied, either way


def test_results_and_exceptions_are_the_objects_themselves(executor):
    unpicklable = threading.Lock()
    assert executor.submit(lambda: unpicklable).result(timeout=bound(10)) is unpicklable
    error = ValueError("mine")

    def fail():
        raise error

    with pytest.raises(ValueError) as raised:
        executor.submit(fail).result(timeout=bound(10))
    assert raised.value is error


def test_workers_output_reaches_stdout(capfd):
    with ThreadsExecutor(2) as ex:
        ex.submit(print, "from a worker thread").result(timeout=bound(10))
    assert "from a worker thread" in capfd.readouterr().out


def test_shutdown_cancel_futures_cancels_what_has_not_started():
    ex = ThreadsExecutor(1)
    started, go_on = threading.Event(), threading.Event()
    first = ex.submit(lambda: (started.set(), go_on.wait(bound(10))))
    rest = [ex.submit(math.factorial, 10) for _ in range(20)]
    assert started.wait(bound(10))
    ex.shutdown(wait=False, cancel_futures=True)
    go_on.set()
    ex.shutdown(wait=True)
    assert first.result() == (None, True)
    assert all(f.cancelled() for f in rest)
    assert not concurrent.futures.wait(rest, timeout=bound(5)).not_done  # wait() is told they are cancelled
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(math.factorial, 3)


def test_shutdown_without_wait_then_with_cancel_and_wait_ends():
    ex = ThreadsExecutor(2)
    futures = [ex.submit(time.sleep, 0.01) for _ in range(10)]
    ex.shutdown(wait=False)
    ex.shutdown(wait=True, cancel_futures=True)  # returns (the workers were told to end once)
    assert all(f.done() for f in futures)


def test_a_failed_call_does_not_keep_its_arguments_alive(executor):
    import gc
    import weakref

    class Argument:
        pass

    argument = Argument()
    alive = weakref.ref(argument)

    def fail(value):
        del value  # its own frame, which the traceback keeps, holds nothing: only ours could
        raise ValueError("mine")

    future = executor.submit(fail, argument)
    assert isinstance(future.exception(timeout=bound(10)), ValueError)
    gc.disable()  # freed by reference counting, not by a collection
    try:
        del argument
        assert alive() is None, "the failed call's traceback keeps its argument"
    finally:
        gc.enable()


def test_shutdown_without_wait_finishes_the_calls_in_the_background():
    ex = ThreadsExecutor(2)
    futures = [ex.submit(time.sleep, 0.05) for _ in range(6)]
    ex.shutdown(wait=False)
    concurrent.futures.wait(futures, timeout=bound(10))
    assert all(f.done() and f.exception() is None for f in futures)


def test_a_call_that_raises_keyboard_interrupt_fails_only_its_future(executor):
    def interrupted():
        raise KeyboardInterrupt("mine")

    with pytest.raises(KeyboardInterrupt, match="mine"):
        executor.submit(interrupted).result(timeout=bound(10))
    assert executor.submit(math.factorial, 5).result(timeout=bound(10)) == 120


@pytest.mark.parametrize("call", ["a Python loop", "time.sleep"])
def test_a_ctrl_c_in_its_with_block_stops_the_running_calls_and_cancels_the_rest(call):
    """ThreadPoolExecutor's with block waits for every call it has, after a Ctrl-C too; this one
    stops them within the stop's bound."""

    def loop():
        while True:
            pass

    long_call = loop if call == "a Python loop" else (lambda: time.sleep(600))
    started = threading.Barrier(3, timeout=bound(10))
    futures = []
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with ThreadsExecutor(2) as ex:
            futures = [ex.submit(lambda: (started.wait(), long_call())) for _ in range(2)]
            futures += [ex.submit(math.factorial, 10) for _ in range(10)]
            started.wait()
            ctrl_c_after(0.05)
            time.sleep(bound(10))
    assert time.monotonic() - t0 < bound(5)
    running, pending = futures[:2], futures[2:]
    for future in running:
        assert isinstance(future.exception(timeout=0), KeyboardInterrupt)
    assert all(f.cancelled() for f in pending)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(math.factorial, 3)


def test_a_ctrl_c_as_the_with_block_waits_for_its_calls_stops_them():
    """The usual notebook cell: submit in the block, and its end waits; the stop button then."""
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with ThreadsExecutor(2) as ex:
            # time.sleep looked up in the call: ex.submit(time.sleep, 600) would give the workers
            # the C sleep the first submit found, before the pool replaced it with one it can stop.
            futures = [ex.submit(lambda: time.sleep(600)) for _ in range(6)]
            ctrl_c_after(0.3)
    assert time.monotonic() - t0 < bound(5)
    assert all(f.done() for f in futures)
    assert sum(isinstance(f.exception(timeout=0), KeyboardInterrupt) for f in futures if not f.cancelled()) == 2
    assert sum(f.cancelled() for f in futures) == 4


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped ones, said
def test_ctrl_c_at_random_instants_leaves_no_future_waiting():
    """Whenever the Ctrl-C lands (submitting, starting, calls running or answering, the block's
    end waiting), every Future ends: with its value, cancelled, or with the stop's KeyboardInterrupt."""
    rng = random.Random(7)
    armed = [False]

    def press(signum, frame):  # a SIGINT raises only while a with block is under test, and once
        if armed[0]:
            armed[0] = False
            raise KeyboardInterrupt

    def spin(n):
        total = 0
        for i in range(n):
            total += i
        return total

    stopped, rounds = 0, soak(40)
    previous = signal.signal(signal.SIGINT, press)
    try:
        for _ in range(rounds):
            futures = []
            timer = threading.Timer(rng.uniform(0.0, 0.03), signal.pthread_kill, (threading.get_ident(), signal.SIGINT))
            try:
                armed[0] = True
                timer.start()
                with ThreadsExecutor(2) as ex:
                    # Bounded: CPython drops a KeyboardInterrupt raised inside a weakref callback
                    # (printed as "Exception ignored"), and then nothing stops this loop.
                    for _ in range(5000):
                        futures.append(ex.submit(spin, rng.choice([10, 1_000, 20_000])))
            except KeyboardInterrupt:
                stopped += 1
            finally:
                armed[0] = False  # a Ctrl-C still to come is ignored
                timer.join()
            assert not concurrent.futures.wait(futures, timeout=bound(10)).not_done, "a Future left waiting"
            for future in futures:
                if not future.cancelled() and future.exception() is not None:
                    assert isinstance(future.exception(), KeyboardInterrupt), future.exception()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stopped >= rounds // 2, f"only {stopped} of the {rounds} Ctrl-Cs stopped a with block"


@pytest.mark.filterwarnings("ignore:.*was abandoned while closing:RuntimeWarning")
def test_a_call_that_cannot_be_stopped_is_left_to_end_and_its_future_says_so():
    release = threading.Event()
    started = threading.Event()

    worker = []

    def blocked_in_c():
        worker.append(threading.current_thread())
        started.set()
        release.wait()  # a lock wait in C: KeyboardInterrupt lands only once it returns
        return "ended"

    with pytest.raises(KeyboardInterrupt):
        with ThreadsExecutor(1) as ex:
            future = ex.submit(blocked_in_c)
            assert started.wait(bound(10))
            ctrl_c_after(0.05)
            time.sleep(bound(10))
    with pytest.raises(BrokenThreadPool, match="could not be stopped"):
        future.result(timeout=0)
    with pytest.raises(BrokenThreadPool):
        ex.submit(math.factorial, 3)
    release.set()  # the abandoned worker's call returns: it answers (to nobody), then ends
    deadline = time.monotonic() + bound(10)
    while worker[0].is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not worker[0].is_alive(), "the abandoned worker did not end once its call returned"


def test_shutdown_inside_a_call_never_waits_for_that_call_itself():
    for wait in (True, False):
        ex = ThreadsExecutor(2)
        call = ex.submit(lambda: ex.shutdown(wait=wait))
        if wait:  # it would wait for itself: refused, as ThreadPoolExecutor's join of its own thread is
            with pytest.raises(RuntimeError, match="would wait for that call itself"):
                call.result(timeout=bound(10))
        else:
            assert call.result(timeout=bound(10)) is None
        with pytest.raises(RuntimeError, match="after shutdown"):  # shut down all the same
            ex.submit(math.factorial, 3)
        ex.shutdown(wait=True)


def test_bad_max_workers_and_not_callable():
    with pytest.raises(ValueError, match="between 1 and"):
        ThreadsExecutor(0)
    with pytest.raises(TypeError, match="int number of workers"):
        ThreadsExecutor(2.5)
    with ThreadsExecutor(1) as ex, pytest.raises(TypeError, match="must be callable"):
        ex.submit(42)
