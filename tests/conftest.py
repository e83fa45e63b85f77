"""Shared fixtures: real pools of every backend (a real ipyparallel cluster too), shells, kernels (plain helpers: helpers.py)."""

import fcntl
import json
import os
import signal
import subprocess
import textwrap
import threading
import time
import uuid
import warnings

import pytest

import ipy_parallel
from helpers import FORMAT_A_TRACEBACK, bound, open_backend, python, start_kernel

# The magics' tests describe the sub-interpreter backend, which is the default only with a GIL: on
# a free-threaded CPython without it the default is threads. Every shell and kernel of the suite
# (and their children) starts on sub-interpreters; tests of the default itself unset this.
# IPY_PARALLEL_BACKEND=threads make test runs the suite with the threads default instead.
os.environ.setdefault("IPY_PARALLEL_BACKEND", "subinterpreter")


exec(FORMAT_A_TRACEBACK, {})  # before any test: see helpers.FORMAT_A_TRACEBACK


# -- pools ------------------------------------------------------------------------------------


@pytest.fixture
def pool():
    """A fresh 2-worker sub-interpreter pool, closed after the test."""
    with ipy_parallel.Pool(2) as p:
        yield p


CLUSTER_PROFILE = "ipp_test"


#: make sanitize preloads the sanitizer runtimes into every process, for our engine. A cluster's
#: controller, schedulers and engines never load it (backends/ipyparallel/remote.py), and preloaded
#: they start several times slower: CI once saw no engine register within 300 s.
_SANITIZER_VARIABLES = ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")


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


def _engines_missing(profile_dir, cluster_id, n, timeout) -> str:
    """Nothing once n engines have registered with the cluster; else how many did, and its logs."""
    import ipyparallel

    client = None
    try:
        client = ipyparallel.Client(profile_dir=str(profile_dir), cluster_id=cluster_id, timeout=timeout)
        client.wait_for_engines(n, timeout=timeout, interactive=False)
        return ""
    except TimeoutError as exc:  # the hub did not answer, or too few engines registered
        logs = "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in sorted(profile_dir.glob("log/*.log")))
        registered = "no" if client is None else len(client.ids)
        return f"the test cluster had {registered} of {n} engines after {timeout:.0f} s ({exc})\n{logs}"
    finally:
        if client is not None:
            client.close()


def _stop_cluster(profile_dir, cluster_id, procs, env):
    """Stop the cluster as a user would, then kill what is left of it; return what was left."""
    import psutil

    state = profile_dir / "security" / f"cluster-{cluster_id}.json"
    if not procs and state.exists():  # before the stop, which removes that file
        procs = _cluster_processes(profile_dir / "security", cluster_id)
    python("-m", "ipyparallel.cluster", "stop", f"--profile={CLUSTER_PROFILE}", f"--cluster-id={cluster_id}", env=env)
    gone, alive = psutil.wait_procs(procs, timeout=15)
    for proc in alive:  # only the processes of this cluster
        proc.kill()
    return alive


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A 2-engine ipyparallel cluster in a private IPYTHONDIR, found by profile and cluster id like
    any running one; started once for the session, and stopped with no process left behind.

    A cluster whose engines do not all register is stopped and started once more, and the first
    one's logs are shown as a warning: that is ipyparallel's start-up on a loaded machine, not ours;
    a second failure fails the tests that use it, with the logs. Both tries share one deadline,
    within pytest's timeout, so that the failure is ours to explain."""
    ipython_dir = tmp_path_factory.mktemp("ipython")
    saved = os.environ.get("IPYTHONDIR")
    os.environ["IPYTHONDIR"] = str(ipython_dir)  # where ClusterPool (through IPython.paths) looks
    env = {name: value for name, value in os.environ.items() if name not in _SANITIZER_VARIABLES}
    profile_dir = ipython_dir / f"profile_{CLUSTER_PROFILE}"
    profile_dir.mkdir()
    deadline = time.monotonic() + 240  # pytest's timeout is 300 s; stopping a cluster takes up to 75
    # An engine gives up 5 s after asking the controller to register it (ipyparallel's default):
    # on a loaded CI machine the controller once answered later than that, and the session had a
    # controller with no engines. The engines' log level stays at warnings, so that a failure here
    # shows why.
    (profile_dir / "ipengine_config.py").write_text(f"c.IPEngine.timeout = {min(bound(60), 100)}\n")
    cluster_id, procs = None, []
    try:
        for attempt in (1, 2):
            left = deadline - time.monotonic()
            attempt_ends = time.monotonic() + (left / 2 if attempt == 1 else left)  # room for a second try
            cluster_id = f"t{uuid.uuid4().hex[:8]}"
            try:
                started = python(
                    "-m",
                    "ipyparallel.cluster",
                    "start",
                    "-n",
                    "2",
                    "--daemonize",
                    f"--profile={CLUSTER_PROFILE}",
                    f"--cluster-id={cluster_id}",
                    "--log-level=30",
                    env=env,
                    timeout=attempt_ends - time.monotonic(),
                )
                assert started.returncode == 0, started.stderr
                procs = _cluster_processes(profile_dir / "security", cluster_id)
                missing = _engines_missing(profile_dir, cluster_id, 2, max(1.0, attempt_ends - time.monotonic()))
            except subprocess.TimeoutExpired as exc:
                missing = f"ipcluster start did not return within {exc.timeout:.0f} s"
            if not missing:
                break
            if attempt == 2:
                pytest.fail(missing)
            warnings.warn(f"the test cluster is started again: {missing}", stacklevel=1)
            _stop_cluster(profile_dir, cluster_id, procs, env)
            for log in profile_dir.glob("log/*.log"):
                log.unlink()
            procs = []
        yield {"profile": CLUSTER_PROFILE, "cluster_id": cluster_id}
    finally:
        alive = _stop_cluster(profile_dir, cluster_id, procs, env) if cluster_id else []
        if saved is None:
            os.environ.pop("IPYTHONDIR", None)
        else:
            os.environ["IPYTHONDIR"] = saved
        assert not alive, f"cluster processes left running after ipcluster stop: {alive}"


BACKENDS = ["subinterpreter", "process", "ipyparallel", "threads"]


@pytest.fixture(params=BACKENDS)
def any_pool(request):
    """A fresh 2-worker pool of each backend in turn, closed after the test."""
    pool = open_backend(request.param, request)
    pool.backend = request.param
    try:
        yield pool
    finally:
        pool.close()


# -- sharing the machine ------------------------------------------------------------------------

#: The files that take a minute or more, longest first. They start first (make test hands whole
#: files to two pytest-xdist workers in collection order), so that both workers end together.
LONG_FILES = ("test_kernel.py", "test_lifecycle.py", "test_contract.py", "test_packaging.py", "test_background.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable: the others keep their order


@pytest.fixture(autouse=True)
def _machine(request, tmp_path_factory):
    """Under pytest-xdist, a test marked ``alone`` (it measures CPU time or speed, or needs every
    core) runs with no other test beside it: every test holds a lock on one file shared by the
    xdist workers, the others a shared one, it an exclusive one. Taken before the test's own
    fixtures start anything (autouse fixtures come first), but not before the fixtures another
    file's tests share (a module's kernel, the wheel test_packaging builds): a test marked alone
    must still hold when something else takes a core, and only gets the machine quieter."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        yield
        return
    path = tmp_path_factory.getbasetemp().parent / "machine.lock"  # the workers' common parent
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if request.node.get_closest_marker("alone") else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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


# -- child processes ----------------------------------------------------------------------------


@pytest.fixture
def run_script(tmp_path):
    """Run Python source as a script (its functions live in __main__) in a child interpreter
    process; returns (completed process, seconds it took)."""

    def run(source: str, timeout: float = 60):
        script = tmp_path / "script.py"
        script.write_text(textwrap.dedent(source), encoding="utf-8")
        start = time.perf_counter()
        proc = python(str(script), cwd=tmp_path, timeout=timeout)
        return proc, time.perf_counter() - start

    return run


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


@pytest.fixture(scope="module")
def kernel():
    """A real kernel shared by a module's tests."""
    km, kc = start_kernel()
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=False)
