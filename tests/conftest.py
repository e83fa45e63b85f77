"""Shared fixtures and helpers: real pools of every backend (a real ipyparallel cluster too), real child processes and kernels."""

import contextlib
import contextvars
import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
import warnings
import time
import uuid
from pathlib import Path

import pytest

import ipy_parallel
from ipy_parallel import _engine
from ipy_parallel.backends import open_pool

REPO = Path(__file__).resolve().parents[1]

#: Wall-clock bounds in tests are multiplied by this: a loaded or instrumented machine (make
#: sanitize sets 3) is slower, and a bound must fail only when something is really wrong.
TIME_SCALE = float(os.environ.get("IPP_TIME_SCALE", "1"))


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


@pytest.fixture
def pool():
    """A fresh 2-worker sub-interpreter pool, closed after the test."""
    with ipy_parallel.Pool(2) as p:
        yield p


CLUSTER_PROFILE = "ipp_test"


def _ipcluster(*args, env, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "ipyparallel.cluster", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _cluster_processes(security_dir, cluster_id):
    """The controller and engines the launcher recorded, with all their children (schedulers, nannies)."""
    import psutil  # ipyparallel's dependency

    with open(security_dir / f"cluster-{cluster_id}.json") as f:
        state = json.load(f)
    pids = [state["controller"]["state"]["pid"]]
    for engine_set in state["engines"]["sets"].values():
        pids += [e["pid"] for e in engine_set.get("engines", {}).values()]
    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            procs += [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return procs


def _wait_for_engines(profile_dir, cluster_id, n, timeout):
    """Return once n engines have registered with the cluster; else fail with what its logs say."""
    import ipyparallel

    client = ipyparallel.Client(profile_dir=str(profile_dir), cluster_id=cluster_id, timeout=timeout)
    try:
        client.wait_for_engines(n, timeout=timeout, interactive=False)
    except TimeoutError:
        logs = "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in sorted(profile_dir.glob("log/*.log")))
        pytest.fail(f"the test cluster had {len(client.ids)} of {n} engines after {timeout:.0f} s\n{logs}")
    finally:
        client.close()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A 2-engine ipyparallel cluster in a private IPYTHONDIR, found by profile and cluster id like
    any running one; started once for the session, and stopped with no process left behind."""
    import psutil

    ipython_dir = tmp_path_factory.mktemp("ipython")
    cluster_id = f"t{uuid.uuid4().hex[:8]}"
    saved = os.environ.get("IPYTHONDIR")
    os.environ["IPYTHONDIR"] = str(ipython_dir)  # where ClusterPool (through IPython.paths) looks
    env = dict(os.environ)
    profile_dir = ipython_dir / f"profile_{CLUSTER_PROFILE}"
    profile_dir.mkdir()
    # An engine gives up 5 s after asking the controller to register it (ipyparallel's default):
    # on a loaded, sanitizer-preloaded CI machine the controller once answered later than that, and
    # the session had a controller with no engines. The engines' log level stays at warnings, so
    # that a failure here shows why.
    (profile_dir / "ipengine_config.py").write_text(f"c.IPEngine.timeout = {bound(60)}\n")
    started = _ipcluster(
        "start",
        "-n",
        "2",
        "--daemonize",
        f"--profile={CLUSTER_PROFILE}",
        f"--cluster-id={cluster_id}",
        "--log-level=30",
        env=env,
    )
    security = profile_dir / "security"
    procs = []
    try:
        assert started.returncode == 0, started.stderr
        procs = _cluster_processes(security, cluster_id)
        _wait_for_engines(profile_dir, cluster_id, 2, bound(60))
        yield {"profile": CLUSTER_PROFILE, "cluster_id": cluster_id}
    finally:
        if (security / f"cluster-{cluster_id}.json").exists():
            procs = procs or _cluster_processes(security, cluster_id)
        _ipcluster("stop", f"--profile={CLUSTER_PROFILE}", f"--cluster-id={cluster_id}", env=env)
        gone, alive = psutil.wait_procs(procs, timeout=15)
        for proc in alive:  # only the processes of the cluster started above
            proc.kill()
        if saved is None:
            os.environ.pop("IPYTHONDIR", None)
        else:
            os.environ["IPYTHONDIR"] = saved
        assert not alive, f"cluster processes left running after ipcluster stop: {alive}"


BACKENDS = ["subinterpreter", "process", "ipyparallel", "threads"]


def open_backend(backend: str, request):
    """A fresh 2-worker pool of a backend (the ipyparallel one on the session's cluster, reset)."""
    if backend == "ipyparallel":
        where = request.getfixturevalue("cluster")
        pool = ipy_parallel.ClusterPool(profile=where["profile"], cluster_id=where["cluster_id"])
        pool.reset()
        return pool
    return open_pool(backend, 2)


@pytest.fixture(params=BACKENDS)
def any_pool(request):
    """A fresh 2-worker pool of each backend in turn, closed after the test."""
    pool = open_backend(request.param, request)
    pool.backend = request.param
    try:
        yield pool
    finally:
        pool.close()


# -- interrupts -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _sigint_is_python_default():
    """Every test starts with Python's own SIGINT handler, which the Ctrl-C tests rely on. One
    that a test leaves behind is put back and reported as a warning naming it, rather than
    silently turning every later Ctrl-C test into a 300 s timeout."""
    _put_back_sigint("before this test, something")
    yield
    _put_back_sigint("the test")


def _put_back_sigint(who: str) -> None:
    handler = signal.getsignal(signal.SIGINT)
    if handler is not signal.default_int_handler and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        target = getattr(handler, "func", handler)  # a functools.partial (asyncio.Runner's) names its function
        warnings.warn(
            f"{who} left SIGINT handled by {target!r} "
            f"({getattr(getattr(target, '__code__', None), 'co_filename', '?')}); put back",
            pytest.PytestWarning,
            stacklevel=2,
        )


def ctrl_c_after(seconds: float) -> threading.Timer:
    """Send SIGINT to this (the main) thread after `seconds`, as Ctrl-C would."""
    timer = threading.Timer(seconds, signal.pthread_kill, (threading.get_ident(), signal.SIGINT))
    timer.start()
    return timer


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


# -- child processes ----------------------------------------------------------------------------


@pytest.fixture
def run_script(tmp_path):
    """Run Python source as a script (its functions live in __main__) in a child interpreter
    process; returns (completed process, seconds it took)."""

    def run(source: str, timeout: float = 60):
        script = tmp_path / "script.py"
        script.write_text(textwrap.dedent(source), encoding="utf-8")
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=timeout
        )
        return proc, time.perf_counter() - start

    return run


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


@pytest.fixture
def ip():
    """An in-process IPython shell with the extension loaded (and unloaded after)."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "ipy_parallel")
    yield shell
    shell.run_line_magic("unload_ext", "ipy_parallel")
    for name in [
        k for k in shell.user_ns if not k.startswith("_") and k not in ("In", "Out", "exit", "quit", "get_ipython")
    ]:
        del shell.user_ns[name]


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


def start_kernel():
    """A real "Python 3 (ipy_parallel)" kernel from the repository's kernelspec, through jupyter_client;
    returns (manager, client)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    specs = KernelSpecManager(kernel_dirs=[str(REPO / "kernel")])
    km = KernelManager(kernel_name="ipy_parallel", kernel_spec_manager=specs)
    km.start_kernel(cwd=str(REPO / "tests"))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    kc.manager = km  # for interrupt_kernel
    return km, kc


@pytest.fixture(scope="module")
def kernel():
    """A real kernel shared by a module's tests."""
    km, kc = start_kernel()
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=False)


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
