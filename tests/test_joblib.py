"""joblib's backend "ipy_parallel": joblib's own Parallel, on real sub-interpreters."""

import math
import threading
import time

import pytest

import helper_tasks
from helpers import bound, ctrl_c_after, execute, interrupt_kernel, python, terminal_ipython, terminal_text

joblib = pytest.importorskip("joblib", reason="joblib is in the [test] extra: pip install -e '.[test]'")
from joblib import Parallel, delayed, parallel_config  # noqa: E402

import ipy_parallel.joblib  # noqa: E402,F401  registers the backend

BACKEND = {"backend": "ipy_parallel", "n_jobs": 2}


def test_results_come_back_in_order_from_two_sub_interpreters_other_than_this_one():
    main = helper_tasks.which_interpreter()
    with parallel_config(**BACKEND):
        squares = Parallel()(delayed(pow)(x, 2) for x in range(1000))
        where = Parallel()(delayed(helper_tasks.which_interpreter)() for _ in range(200))
    assert squares == [x * x for x in range(1000)]
    assert main not in where and 1 <= len(set(where)) <= 2


def test_keyword_arguments_and_a_notebook_function_by_value():
    def scale(x, *, by):  # a local function: it travels by value (cloudpickle), as a notebook's does
        return x * by

    with parallel_config(**BACKEND):
        assert Parallel()(delayed(scale)(x, by=3) for x in range(10)) == [3 * x for x in range(10)]


def test_the_pool_stays_warm_between_parallel_calls():
    with parallel_config(**BACKEND):
        first = Parallel()(delayed(helper_tasks.where_after)(0.2) for _ in range(2))
        second = Parallel()(delayed(helper_tasks.where_after)(0.2) for _ in range(2))
    assert len(set(first)) == 2 and set(second) == set(first), (first, second)  # the same interpreters


def test_trivial_calls_are_batched_automatically_and_as_asked():
    with parallel_config(**BACKEND):
        auto = Parallel()
        assert auto(delayed(abs)(-x) for x in range(20_000)) == list(range(20_000))
        fixed = Parallel(batch_size=7)
        assert fixed(delayed(abs)(-x) for x in range(100)) == list(range(100))
    assert auto.n_dispatched_batches < 2_000, auto.n_dispatched_batches  # not a message per call
    # Batches of 7, then smaller ones at the end of the iterator, which joblib splits to balance the workers.
    assert math.ceil(100 / 7) <= fixed.n_dispatched_batches < 50, fixed.n_dispatched_batches


def test_return_as_generator_yields_before_the_last_call_ends():
    with parallel_config(**BACKEND):
        start = time.monotonic()
        results = Parallel(return_as="generator")(delayed(helper_tasks.spin)(s) for s in (0.1, 0.1, 1.0, 1.0))
        assert next(results) == 0.1
        first = time.monotonic() - start
        assert list(results) == [0.1, 1.0, 1.0]
    assert first < 0.9, first


def test_return_as_generator_unordered_yields_the_first_done_first():
    with parallel_config(**BACKEND):
        results = list(Parallel(return_as="generator_unordered")(delayed(helper_tasks.spin)(s) for s in (1.0, 0.05)))
    assert results == [0.05, 1.0]


def test_a_calls_exception_keeps_its_type_and_stops_the_others_at_once():
    with parallel_config(**BACKEND), pytest.raises(helper_tasks.Custom, match="custom failure"):
        Parallel()(delayed(helper_tasks.fail_custom)() for _ in range(3))
    start = time.monotonic()
    with parallel_config(**BACKEND), pytest.raises(ValueError, match="the first call failed") as raised:
        Parallel()(delayed(helper_tasks.fail_on_first)(i) for i in range(4))
    assert time.monotonic() - start < bound(5), "the 20 s calls beside it were not interrupted"
    assert any("raised in sub-interpreter worker" in note for note in raised.value.__notes__)
    with parallel_config(**BACKEND):  # and the backend goes on
        assert Parallel()(delayed(abs)(-x) for x in range(4)) == [0, 1, 2, 3]


def test_a_module_that_cannot_load_in_a_sub_interpreter_is_named_with_loky_as_the_way_out():
    import numpy

    with parallel_config(**BACKEND), pytest.raises(ImportError) as raised:
        Parallel()(delayed(numpy.sqrt)(x) for x in (1.0, 4.0))
    message = str(raised.value)
    assert message.startswith("numpy cannot be imported in a sub-interpreter: "), message
    assert "numpy._core._multiarray_umath" in message and 'backend="loky"' in message, message
    assert "ProcessPoolExecutor" not in message and raised.value.name == "numpy"
    with parallel_config(backend="loky", n_jobs=2):  # what it says works
        assert Parallel()(delayed(numpy.sqrt)(x) for x in (1.0, 4.0)) == [1.0, 2.0]


def test_ctrl_c_interrupts_the_running_calls_and_the_next_parallel_runs_at_once():
    timer = ctrl_c_after(0.5)
    start = time.monotonic()
    try:
        with parallel_config(**BACKEND), pytest.raises(KeyboardInterrupt):
            Parallel()(delayed(helper_tasks.spin)(30) for _ in range(4))
    finally:
        timer.cancel()
    assert time.monotonic() - start < bound(5)
    start = time.monotonic()
    with parallel_config(**BACKEND):
        assert Parallel()(delayed(helper_tasks.spin)(0.2) for _ in range(2)) == [0.2, 0.2]
    assert time.monotonic() - start < bound(2), "the interrupted calls were still running"


def test_n_jobs_one_runs_here_minus_one_on_every_core_and_too_many_says_the_limit():
    main = helper_tasks.which_interpreter()
    with parallel_config(backend="ipy_parallel", n_jobs=1):
        assert Parallel()(delayed(helper_tasks.which_interpreter)() for _ in range(2)) == [main, main]
    with parallel_config(backend="ipy_parallel", n_jobs=-1):
        assert Parallel()(delayed(abs)(-x) for x in range(10)) == list(range(10))
    with parallel_config(backend="ipy_parallel", n_jobs=10_000), pytest.raises(ValueError, match="at most"):
        Parallel()(delayed(abs)(-x) for x in range(10))


def test_n_jobs_minus_one_counts_the_cpus_this_process_may_use_as_joblib_does():
    from ipy_parallel.backends.inputs import MAX_WORKERS
    from ipy_parallel.joblib import SubinterpreterBackend

    backend = SubinterpreterBackend()
    assert backend.effective_n_jobs(-1) == min(joblib.cpu_count(), MAX_WORKERS)
    assert backend.effective_n_jobs(-1_000) == 1
    assert backend.effective_n_jobs(-(10**6)) == 1 and backend.effective_n_jobs(None) == 1


def test_a_parallel_that_fails_leaves_another_one_alive_at_the_same_time_running():
    own = {"backend": "ipy_parallel", "n_jobs": 2}  # each Parallel a backend object of its own
    # One call each, so that a pool of 2 shared by both (as it was) would run them at once.
    alive = Parallel(**own, return_as="generator")(delayed(helper_tasks.spin)(0.5) for _ in range(1))
    time.sleep(0.1)  # its call is running
    with pytest.raises(ValueError, match="the first call failed"):  # its abort interrupts its own pool
        Parallel(**own)(delayed(helper_tasks.fail_on_first)(i) for i in range(1))
    assert list(alive) == [0.5]  # not a KeyboardInterrupt nobody pressed, nor a CancelledError


def test_in_one_parallel_config_block_an_abort_that_stops_another_parallel_says_so():
    # One parallel_config block gives every Parallel in it the same backend object: joblib's own
    # design (a loky pool is shared the same way), so an abort stops the pool they share.
    with parallel_config(**BACKEND):
        alive = Parallel(return_as="generator")(delayed(helper_tasks.spin)(0.5) for _ in range(1))
        time.sleep(0.1)  # its call is running, and the pool's other worker is free
        with pytest.raises(ValueError, match="the first call failed"):
            Parallel()(delayed(helper_tasks.fail_on_first)(i) for i in range(1))
        with pytest.raises(RuntimeError, match="another Parallel call in the same parallel_config block"):
            list(alive)
        assert Parallel()(delayed(abs)(-x) for x in range(4)) == [0, 1, 2, 3]  # and the next one runs


def test_a_generator_cell_run_again_drops_the_old_generator_without_stopping_the_new_one():
    import gc

    own = {"backend": "ipy_parallel", "n_jobs": 2, "return_as": "generator"}
    results = Parallel(**own)(delayed(helper_tasks.spin)(0.2) for _ in range(6))
    assert next(results) == 0.2
    results = Parallel(**own)(delayed(helper_tasks.spin)(0.2) for _ in range(6))  # the cell again
    gc.collect()  # the old one is aborted as it goes
    assert list(results) == [0.2] * 6


def test_a_module_on_a_path_added_after_the_pool_started_is_found(tmp_path, monkeypatch):
    with parallel_config(**BACKEND):
        assert Parallel()(delayed(abs)(-x) for x in range(4)) == [0, 1, 2, 3]  # the pool is warm
        (tmp_path / "added_later.py").write_text("def triple(x):\n    return 3 * x\n", encoding="utf-8")
        monkeypatch.syspath_prepend(str(tmp_path))
        from added_later import triple

        assert Parallel()(delayed(triple)(x) for x in range(4)) == [0, 3, 6, 9]


def test_load_ext_registers_the_backend_when_joblib_is_first_imported_without_importing_it_itself():
    done = python(
        "-c",
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "InteractiveShell.instance().run_line_magic('load_ext', 'ipy_parallel')\n"
        "assert 'joblib' not in sys.modules, 'load_ext imported joblib'\n"
        "from joblib import Parallel, delayed, parallel_config\n"
        "with parallel_config(backend='ipy_parallel', n_jobs=2):\n"
        "    print(Parallel()(delayed(abs)(-x) for x in range(3)))\n"
        "print(type(sys.modules['joblib'].__loader__).__name__)\n",
        timeout=bound(60),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[0, 1, 2]", "SourceFileLoader"], done.stdout


def test_load_ext_after_joblib_was_imported_registers_it_at_once():
    done = python(
        "-c",
        "import joblib\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "InteractiveShell.instance().run_line_magic('load_ext', 'ipy_parallel')\n"
        "from joblib.parallel import BACKENDS\n"
        "print('ipy_parallel' in BACKENDS)\n",
        timeout=bound(60),
    )
    assert done.returncode == 0 and done.stdout.split() == ["True"], done.stderr


def test_in_terminal_ipython_ctrl_c_stops_a_parallel_and_the_next_one_runs():
    """Real terminal IPython in a pty, as a user types it: %load_ext, joblib, Ctrl-C, again."""
    with terminal_ipython() as child:
        child.send("%load_ext ipy_parallel\r")
        child.expect(r"In \[2\]:")
        child.send(  # spin: a function of the session's own (__main__), as a user defines one
            "from joblib import Parallel, delayed, parallel_config; import time; "
            "exec('def spin(s):\\n end = time.monotonic() + s\\n while time.monotonic() < end: pass\\n return s'); "
            "config = parallel_config(backend='ipy_parallel', n_jobs=2)\r"
        )
        child.expect(r"In \[3\]:")
        child.send("with config: print('first', Parallel()(delayed(pow)(x, 2) for x in range(5)))\r")
        child.expect(r"In \[4\]:")
        child.send("with config: Parallel()(delayed(spin)(60) for _ in range(4))\r")
        time.sleep(1.5)
        start = time.monotonic()
        child.sendintr()
        child.expect(r"In \[5\]:")
        stopped = time.monotonic() - start
        child.send("with config: print('again', Parallel()(delayed(spin)(0.1) for _ in range(2)))\r")
        child.expect(r"In \[6\]:")
    text = terminal_text(child)
    assert "first [0, 1, 4, 9, 16]" in text and "KeyboardInterrupt" in text and "again [0.1, 0.1]" in text, text
    assert stopped < bound(10), stopped


def test_in_a_kernel_the_stop_button_stops_a_parallel_and_the_kernel_runs_the_next_at_once(kernel):
    setup = (
        "%load_ext ipy_parallel\n"
        "from joblib import Parallel, delayed, parallel_config\n"
        "def spin(seconds):  # a notebook's own function: it travels by value\n"
        "    import time\n"
        "    end = time.monotonic() + seconds\n"
        "    while time.monotonic() < end: pass\n"
        "    return seconds\n"
        "with parallel_config(backend='ipy_parallel', n_jobs=2):\n"
        "    print('first', Parallel()(delayed(spin)(0.05) for _ in range(4)))"
    )
    reply, messages = execute(kernel, setup)
    assert reply["status"] == "ok", reply
    assert "first [0.05, 0.05, 0.05, 0.05]" in "".join(
        m["content"]["text"] for _, m in messages if m["msg_type"] == "stream"
    )
    timer = threading.Timer(1.0, interrupt_kernel, (kernel,))
    timer.start()
    start = time.monotonic()
    reply, _ = execute(
        kernel,
        "with parallel_config(backend='ipy_parallel', n_jobs=2):\n    Parallel()(delayed(spin)(60) for _ in range(4))",
    )
    timer.join()
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
    assert time.monotonic() - start < bound(10)
    start = time.monotonic()
    reply, messages = execute(
        kernel,
        "with parallel_config(backend='ipy_parallel', n_jobs=2):\n    print('again', Parallel()(delayed(spin)(0.2) for _ in range(2)))",
    )
    assert reply["status"] == "ok", reply
    assert "again [0.2, 0.2]" in "".join(m["content"]["text"] for _, m in messages if m["msg_type"] == "stream")
    assert time.monotonic() - start < bound(3), "the stopped calls were still running"
    # Bad input in the kernel: a clear error, and the kernel goes on.
    reply, _ = execute(
        kernel,
        "with parallel_config(backend='ipy_parallel', n_jobs=10_000):\n    Parallel()(delayed(abs)(1) for _ in range(2))",
    )
    assert reply["status"] == "error" and reply["ename"] == "ValueError" and "at most" in reply["evalue"], reply


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_fork_of_this_process_ends_the_warm_pool_and_the_next_parallel_starts_another():
    import os

    with parallel_config(**BACKEND):
        before = set(Parallel()(delayed(helper_tasks.where_after)(0.1) for _ in range(2)))
    pid = os.fork()  # ends every pool of this process first (a child forked with them alive crashes)
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    with parallel_config(**BACKEND):
        after = set(Parallel()(delayed(helper_tasks.where_after)(0.1) for _ in range(2)))
    assert after and not after & before, (before, after)
