"""Plain helpers the tests import by name (`from helpers import bound`); conftest.py keeps the fixtures."""

import contextlib
import contextvars
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import ipy_parallel
from ipy_parallel import _engine
from ipy_parallel.backends import open_pool

REPO = Path(__file__).resolve().parents[1]

# -- bounds -----------------------------------------------------------------------------------

#: Wall-clock bounds in tests are multiplied by this: a loaded or instrumented machine (make
#: sanitize sets 3) is slower, and a bound must fail only when something is really wrong. Beside
#: another test (`make test` runs two at once, with pytest-xdist) a test has half the machine: twice.
TIME_SCALE = float(os.environ.get("IPP_TIME_SCALE", "1")) * (
    2 if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1 else 1
)


def bound(seconds: float) -> float:
    """A wall-clock bound for a test, scaled for the machine it runs on."""
    return seconds * TIME_SCALE


#: How much of their full length the soak tests run (thousands of cells or interrupts). 1 unless
#: IPP_SOAK_SCALE says otherwise: CI runs them in full on the preferred CPython and shorter on the
#: others and on the sanitizer build (.ci/run), where a whole run costs minutes more each time.
SOAK_SCALE = float(os.environ.get("IPP_SOAK_SCALE", "1"))


def soak(count: int) -> int:
    """A soak test's count of cells or interrupts, scaled by IPP_SOAK_SCALE (at least 1)."""
    return max(1, round(count * SOAK_SCALE))


# -- pools ------------------------------------------------------------------------------------


def open_backend(backend: str, request):
    """A fresh 2-worker pool of a backend (the ipyparallel one on the session's cluster, reset)."""
    if backend == "ipyparallel":
        where = request.getfixturevalue("cluster")
        pool = ipy_parallel.ClusterPool(profile=where["profile"], cluster_id=where["cluster_id"])
        pool.reset()
        return pool
    return open_pool(backend, 2)


def values(results):
    """The values of a run's results, every one of which must have succeeded."""
    assert [r.error for r in results] == [None] * len(results)
    assert all(r.ok for r in results)
    return [r.value for r in results]


def python(*args: str, timeout: float = 60, **options) -> subprocess.CompletedProcess:
    """Run this Python with these arguments in a child process; its output captured as text."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, **options)


# -- interrupts -------------------------------------------------------------------------------


def ctrl_c_after(seconds: float) -> threading.Timer:
    """Send SIGINT to this (the main) thread after `seconds`, as Ctrl-C would."""
    timer = threading.Timer(seconds, signal.pthread_kill, (threading.get_ident(), signal.SIGINT))
    timer.start()
    return timer


def interrupt_busy(pool, run, wait: float, label: str = "interrupt latency") -> float:
    """Interrupt a run that keeps every worker of the pool busy, check that each worker stopped with
    KeyboardInterrupt within `wait` seconds, and return (and print) how long they took."""
    start = time.perf_counter()
    assert pool.interrupt() == list(range(pool.size))
    assert run.wait(wait), "the workers did not stop"
    latency = time.perf_counter() - start
    print(f"{label}: {latency * 1e3:.2f} ms")
    assert [r.error.type_name for r in run.results()] == ["KeyboardInterrupt"] * pool.size
    return latency


# Where a Ctrl-C would only print "Exception ignored" (CPython's weakref callbacks, run wherever
# the collector happens to free a thread or a set's member) or break pytest's report of that.
_BOOKKEEPING = ("_weakrefset.py", "unraisableexception.py")


def _in_bookkeeping(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.endswith(_BOOKKEEPING):
            return True
        frame = frame.f_back
    return False


class RandomInterrupts:
    """Ctrl-C at random instants, 2-20 ms apart, each landing wherever the main thread is while
    it runs an operation (between any two bytecodes of it, ours included). A SIGINT that arrives
    between operations is ignored, so that the test's own loop is not what it hits."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.inside = False
        self.sent = self.landed = 0
        self._stop = threading.Event()
        self._main = threading.get_ident()

    def _handler(self, signum, frame):
        if self.inside and not _in_bookkeeping(frame):
            self.landed += 1
            raise KeyboardInterrupt

    def _fire(self):
        while not self._stop.wait(self.rng.uniform(0.002, 0.020)):
            signal.pthread_kill(self._main, signal.SIGINT)
            self.sent += 1

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._handler)
        self._thread = threading.Thread(target=self._fire, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        time.sleep(0.05)  # a signal still in flight lands here, outside any operation
        signal.signal(signal.SIGINT, self._previous)

    def call(self, fn):
        """fn(), under fire; returns what it returned, or the KeyboardInterrupt it raised."""
        try:
            self.inside = True
            try:
                return fn()
            finally:
                self.inside = False
        except KeyboardInterrupt as exc:
            return exc


# -- child processes and threads ------------------------------------------------------------------


def gone(pid: int) -> bool:
    """The process has exited (a zombie left to a non-reaping init counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] in (b"Z", b"X")
    except FileNotFoundError:
        return True


def all_gone(pids, seconds: float) -> bool:
    """Whether every one of these processes has ended (or is a zombie) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while not all(gone(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def children() -> set[int]:
    """The live child processes of this process."""
    found = set()
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            found.update(int(p) for p in f.read().split())
    return {pid for pid in found if not gone(pid)}


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


# -- sub-interpreters -----------------------------------------------------------------------------

# CPython's private interpreters module: _interpreters on 3.13, _xxsubinterpreters on 3.12 (whose
# get_current() gives an id object rather than a tuple).
INTERPRETERS = "_interpreters" if sys.version_info >= (3, 13) else "_xxsubinterpreters"
#: Source a worker can end a cell with: the id of its interpreter, as an int.
CURRENT_INTERPRETER = f"import {INTERPRETERS}\n" + (
    "_interpreters.get_current()[0]" if sys.version_info >= (3, 13) else "int(_xxsubinterpreters.get_current())"
)


def interpreters() -> int:
    """Sub-interpreters alive in this process (the main one included)."""
    return len(__import__(INTERPRETERS).list_all())


def outside_reserve() -> int:
    """interpreters(), less those parked in the engine's reserve for the next pool."""
    return interpreters() - _engine.reserve_size()


def main_interpreter() -> int:
    main = __import__(INTERPRETERS).get_main()
    return main[0] if isinstance(main, tuple) else int(main)


# -- IPython ----------------------------------------------------------------------------------


@contextlib.contextmanager
def terminal_ipython():
    """Terminal IPython (prompt_toolkit) in a pseudo-terminal, as a user has it, at its first
    prompt; exited (and closed) at the end. What it showed is terminal_text(child). Lines are
    sent with "\\r", as Enter sends them."""
    import io

    import pexpect

    child = pexpect.spawn(
        sys.executable,
        ["-m", "IPython", "--no-banner", "--colors=NoColor"],
        encoding="utf-8",
        timeout=bound(60),
        dimensions=(40, 200),
    )
    child.logfile_read = io.StringIO()
    try:
        child.expect(r"In \[1\]:")
        yield child
        child.send("exit\r")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def terminal_text(child) -> str:
    return strip_ansi(child.logfile_read.getvalue())


def strip_ansi(text: str) -> str:
    """A terminal's text without its escape sequences and carriage returns."""
    return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]|\x1b\][^\x07]*\x07|\r", "", text)


def cell(ip, line, body):
    """A %%parallel cell in an in-process shell: its value (exceptions raised, as a magic's are)."""
    return ip.run_cell_magic("parallel", line, body)


def magics_of(ip):
    """The extension's magics object of this shell (its pools, its defaults)."""
    from ipy_parallel.ipython.magics import ParallelMagics

    return ip.magics_manager.registry[ParallelMagics.__name__]


# -- kernels ----------------------------------------------------------------------------------


#: Source that formats one traceback with IPython, as it shows one. IPython imports stack_data and
#: pygments' lexers the first time it shows a traceback; a random-interrupt test's Ctrl-C that
#: lands inside those imports leaves them half made for the rest of the process, and every later
#: traceback fails to show ("module 'stack_data' has no attribute 'core'", CI run 10). That is
#: IPython's lazy import, not ours: the test process (conftest.py) and every ipy_parallel kernel
#: the tests start run this first. It leaves no name behind.
FORMAT_A_TRACEBACK = """\
def _format_a_traceback():
    import sys
    from IPython.core.ultratb import VerboseTB
    try:
        raise ValueError("a traceback formatted once, before any test")
    except ValueError:
        VerboseTB().structured_traceback(*sys.exc_info())
_format_a_traceback()
del _format_a_traceback
"""


def start_kernel(name: str = "ipy_parallel", kernel_dirs=(REPO / "kernel",), log=None):
    """A real kernel through jupyter_client, by default "Python 3 (ipy_parallel)" from the
    repository's kernelspec, started in tests/ (its stdout and stderr to `log` if given); returns
    (manager, client)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    specs = KernelSpecManager(kernel_dirs=[str(d) for d in kernel_dirs])
    km = KernelManager(kernel_name=name, kernel_spec_manager=specs)
    km.start_kernel(cwd=str(REPO / "tests"), **({"stdout": log, "stderr": log} if log is not None else {}))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    if name == "ipy_parallel":
        execute(kc, FORMAT_A_TRACEBACK)
    kc.manager = km  # for interrupt_kernel
    return km, kc


_thread_context = threading.local()
_interrupting_contexts: list[contextvars.Context] = []


def interrupt_kernel(client_or_manager) -> None:
    """What the notebook's stop button does, from any thread. jupyter_client's blocking API keeps
    its event loop in a context variable, and on a free-threaded 3.14 a new thread inherits the
    context of the thread that started it (sys.flags.thread_inherit_context), so a timer thread
    would find the main thread's loop, running ("This event loop is already running"). Each
    thread calls it in a context of its own, as a thread gets with a GIL."""
    manager = getattr(client_or_manager, "manager", client_or_manager)
    context = getattr(_thread_context, "context", None)
    if context is None:
        context = _thread_context.context = contextvars.Context()
        # Kept, with the event loop jupyter_client makes in it, for the session: dropped with its
        # thread, a free-threaded build may free it later on the main thread, and the loop's
        # __del__ would then run wherever the main thread is (inside a random-interrupt test).
        _interrupting_contexts.append(context)
    context.run(manager.interrupt_kernel)


def execute(kc, code: str, timeout: float = 60, stop_on_error: bool = True):
    """Run code in the kernel; return (execute_reply content, [(seconds since sent, iopub msg)]).
    With stop_on_error (a notebook's Run All), ipykernel aborts requests that arrive right after
    a failed cell."""
    start = time.monotonic()
    msg_id = kc.execute(code, stop_on_error=stop_on_error)
    messages = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append((time.monotonic() - start, msg))
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    reply = kc.get_shell_msg(timeout=timeout)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=timeout)
    return reply["content"], messages


def assert_output_streams_while_the_cell_runs(kc) -> None:
    """A %%parallel cell's stdout and stderr reach the notebook labelled by worker, while the
    workers still run (a kernel may send a stream message per write: they are joined)."""
    code = (
        "%%parallel 2 --no-monitor\nimport time, sys\nprint('early', worker_id, flush=True)\n"
        "print('warn', worker_id, file=sys.stderr)\ntime.sleep(1.5)\nprint('late', worker_id)"
    )
    reply, messages = execute(kc, code)
    assert reply["status"] == "ok"
    got = [(t, m["content"]["name"], m["content"]["text"]) for t, m in messages if m["msg_type"] == "stream"]
    text = {name: "".join(s for _, n, s in got if n == name) for name in ("stdout", "stderr")}
    assert sorted(text["stdout"].splitlines()) == ["[0] early 0", "[0] late 0", "[1] early 1", "[1] late 1"]
    assert sorted(text["stderr"].splitlines()) == ["[0] warn 0", "[1] warn 1"]
    early = min(t for t, _, s in got if "early" in s)
    late = min(t for t, _, s in got if "late" in s)
    assert late - early > 1.0, "early output must reach the notebook while the workers still run"
