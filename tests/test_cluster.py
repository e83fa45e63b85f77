"""ClusterPool on a real local ipyparallel cluster (2 engines, started here with ipcluster, stopped at the end)."""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import psutil  # ipyparallel's dependency; both are installed by the Makefile
import pytest

from ipy_parallel import cell
from ipy_parallel.cluster import ClusterError, ClusterPool
from ipy_parallel.display import Monitor, Tracker
from ipy_parallel.errors import ParallelError
from ipy_parallel.pool import ParallelInterrupted, ParallelTimeout

PROFILE = "ipp_test"


def _ipcluster(*args, env, timeout=60):
    return subprocess.run([sys.executable, "-m", "ipyparallel.cluster", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _cluster_processes(security_dir, cluster_id):
    """The controller and engines the launcher recorded, with all their children (schedulers, nannies)."""
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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A 2-engine cluster in a private IPYTHONDIR, found by profile and cluster id like any running one."""
    ipython_dir = tmp_path_factory.mktemp("ipython")
    cluster_id = f"t{uuid.uuid4().hex[:8]}"
    saved = os.environ.get("IPYTHONDIR")
    os.environ["IPYTHONDIR"] = str(ipython_dir)  # where ClusterPool (through IPython.paths) looks
    env = dict(os.environ)
    started = _ipcluster("start", "-n", "2", "--daemonize", f"--profile={PROFILE}", f"--cluster-id={cluster_id}",
                         "--log-level=40", env=env)
    security = ipython_dir / f"profile_{PROFILE}" / "security"
    procs = []
    try:
        assert started.returncode == 0, started.stderr
        procs = _cluster_processes(security, cluster_id)
        yield {"profile": PROFILE, "cluster_id": cluster_id}
    finally:
        if (security / f"cluster-{cluster_id}.json").exists():
            procs = procs or _cluster_processes(security, cluster_id)
        _ipcluster("stop", f"--profile={PROFILE}", f"--cluster-id={cluster_id}", env=env)
        gone, alive = psutil.wait_procs(procs, timeout=15)
        for proc in alive:  # only the processes of the cluster started above
            proc.kill()
        if saved is None:
            os.environ.pop("IPYTHONDIR", None)
        else:
            os.environ["IPYTHONDIR"] = saved
        assert not alive, f"cluster processes left running after ipcluster stop: {alive}"


@pytest.fixture
def cpool(cluster):
    with ClusterPool(profile=cluster["profile"], cluster_id=cluster["cluster_id"]) as p:
        p.reset()
        yield p


def test_basic_run_sees_worker_id_and_n_workers(cpool):
    assert cpool.size == 2 and cpool.state == "idle"
    results = cpool.run("print('hello from', worker_id)\nworker_id * 10, n_workers")
    assert [r.worker_id for r in results] == [0, 1]
    assert [r.value for r in results] == [(0, 2), (10, 2)]
    assert [r.stdout for r in results] == ["hello from 0\n", "hello from 1\n"]
    assert all(r.ok and r.stderr == "" and r.wall_time >= 0 and r.cpu_time >= 0 for r in results)
    assert [r.value for r in cpool.run("x = 1")] == [None, None]
    assert cpool.runs == 2


def test_first_engines_by_position(cluster):
    with ClusterPool(1, profile=cluster["profile"], cluster_id=cluster["cluster_id"]) as one:
        assert one.size == 1
        assert [r.value for r in one.run("worker_id, n_workers")] == [(0, 1)]


def test_variables_persist_and_reset_clears_them(cpool):
    cpool.run("counter = worker_id + 100\nimport math")
    assert [r.value for r in cpool.run("counter * 2")] == [200, 202]
    cpool.reset()
    results = cpool.run("'counter' in globals(), worker_id, n_workers, math.pi > 3")
    assert [r.error.type_name for r in results] == ["NameError", "NameError"]  # math gone, the module stays imported
    assert [r.value for r in cpool.run("'counter' in globals(), worker_id, n_workers")] == [(False, 0, 2),
                                                                                           (False, 1, 2)]


def test_inputs_and_worker_inputs(cpool):
    square = lambda v: v * v  # noqa: E731  (by value: the engines cannot import this test module)
    results = cpool.run("[f(v) for v in data] + [offset]", {"f": square, "offset": 7},
                        worker_inputs=[{"data": [1, 2]}, {"data": [3], "offset": 8}])
    assert [r.value for r in results] == [[1, 4, 7], [9, 8]]
    with pytest.raises(TypeError, match="cannot be pickled"):
        cpool.submit("1", {"lock": __import__("threading").Lock()})
    with pytest.raises(ValueError, match="2 workers"):
        cpool.submit("1", worker_inputs=[{}])


def test_errors_are_grouped_with_the_cells_traceback(cpool):
    opts = cell.CellOptions(n=2)
    source = "x = 1\ny = 1 / (worker_id - worker_id)\n"
    with pytest.raises(ParallelError) as info:
        cell.run_cell(cpool, source, opts, {}, Monitor(Tracker(2), stdout=io.StringIO()))
    error = info.value
    assert len(error.groups) == 1 and error.groups[0][0] == [0, 1]
    text = error.render()
    assert text.startswith("[workers 0-1] Traceback (most recent call last):")
    assert 'line 2, in <module>' in text and "ZeroDivisionError: division by zero" in text
    assert "ipyparallel" not in text and "_ipy_parallel" not in text and "runtime" not in text
    assert isinstance(error.results[0].error.exception, ZeroDivisionError)
    # one worker failing does not stop the other
    results = cpool.run("1 / worker_id")
    assert results[0].error.type_name == "ZeroDivisionError" and results[1].value == 1.0


def test_output_streams_while_the_engines_run(cpool):
    run = cpool.submit("import sys, time\nfor i in range(6):\n    print('step', i, flush=True)\n"
                       "    time.sleep(0.15)\nprint('err', worker_id, file=sys.stderr)", stream=True)
    seen, early = [], False
    while not run.wait(0.05):
        chunk = run.output()
        early = early or any("step" in text for _, _, text in chunk)
        seen += chunk
    seen += run.output()
    assert early, "no output arrived while the engines ran"
    for k in (0, 1):
        out = "".join(t for w, s, t in seen if w == k and s == "stdout")
        assert out == "".join(f"step {i}\n" for i in range(6))
        assert "".join(t for w, s, t in seen if w == k and s == "stderr") == f"err {k}\n"
    assert [r.stderr for r in run.results()] == ["err 0\n", "err 1\n"]


def test_cpu_times_of_a_busy_run(cpool):
    run = cpool.submit("import time\nend = time.perf_counter() + 0.8\nwhile time.perf_counter() < end: pass")
    time.sleep(0.6)
    live = run.cpu_times()
    results = run.results()
    assert all(c > 0.1 for c in live), live
    final = run.cpu_times()
    assert final == [r.cpu_time for r in results] and all(0.3 < c < 5 for c in final)
    assert all(t >= c for t, c in zip(cpool.cpu_times(), final))


@pytest.mark.parametrize("source", ["x = 0\nwhile True:\n    x += 1", "import time\ntime.sleep(1000)"],
                         ids=["loop", "sleep"])
def test_interrupt_stops_the_engines_and_the_cluster_stays_usable(cpool, source):
    run = cpool.submit(source)
    time.sleep(0.5)
    assert run.busy_workers() == [0, 1] and cpool.state == "busy"
    start = time.perf_counter()
    assert cpool.interrupt() == [0, 1]
    assert run.wait(5), "the engines did not stop"
    print(f"interrupt latency: {(time.perf_counter() - start) * 1e3:.1f} ms")
    assert [r.error.type_name for r in run.results()] == ["KeyboardInterrupt"] * 2
    assert [r.value for r in cpool.run("worker_id")] == [0, 1]


def test_timeout_stops_the_late_engine(cpool):
    start = time.perf_counter()
    with pytest.raises(ParallelTimeout, match="stopped worker 1") as info:
        cpool.run("if worker_id == 1:\n    while True: pass\nworker_id", timeout=0.5)
    assert time.perf_counter() - start < 3
    assert info.value.stuck == [] and info.value.results[0].value == 0
    assert info.value.results[1].error.type_name == "KeyboardInterrupt"
    for _ in range(100):  # interrupts racing the start and end of short runs: never outside the cell
        run = cpool.submit("sum(range(2000))")
        cpool.interrupt()
        for r in run.results():
            assert r.ok or (r.error.type_name == "KeyboardInterrupt" and "ipy" not in r.error.traceback), r.error
    assert [r.value for r in cpool.run("import time\ntime.sleep(0.05)\nsum(range(10))")] == [45, 45]


def test_ctrl_c_during_run_cell_stops_the_engines(cpool):
    timer = threading.Timer(0.5, signal.pthread_kill, (threading.get_ident(), signal.SIGINT))
    timer.start()
    start = time.perf_counter()
    with pytest.raises(ParallelInterrupted, match="interrupted: stopped workers 0-1") as info:
        cell.run_cell(cpool, "while True:\n    pass", cell.CellOptions(n=2), {},
                      Monitor(Tracker(2), stdout=io.StringIO()))
    assert time.perf_counter() - start < 3
    assert [r.error.type_name for r in info.value.results] == ["KeyboardInterrupt"] * 2
    assert [r.value for r in cpool.run("worker_id")] == [0, 1]


def test_run_cell_end_to_end_with_a_monitor(cpool):
    out = io.StringIO()
    monitor = Monitor(Tracker(2), stdout=out, stderr=out)
    user_ns = {"data": list(range(10)), "scale": 3}
    opts = cell.CellOptions(n=2, push=["scale"], scatter="data", pull=["part"])
    source = ("import time\npart = [v * scale for v in data]\nprint('chunk', data[0], data[-1])\n"
              "time.sleep(0.5)\nsum(part)")
    values = cell.run_cell(cpool, source, opts, user_ns, monitor)
    assert values == [sum(range(5)) * 3, sum(range(5, 10)) * 3]
    assert user_ns["part"] == [[0, 3, 6, 9, 12], [15, 18, 21, 24, 27]]
    text = out.getvalue()
    assert "[0] chunk 0 4\n" in text and "[1] chunk 5 9\n" in text
    assert "2 workers" in text  # the summary line of a run longer than 0.3 s


def test_close_keeps_the_cluster_and_its_variables(cluster):
    first = ClusterPool(profile=cluster["profile"], cluster_id=cluster["cluster_id"])
    first.run("kept = worker_id * 3")
    first.close()
    first.close()
    assert first.closed and first.state == "closed"
    with pytest.raises(RuntimeError, match="closed"):
        first.run("1")
    with ClusterPool(profile=cluster["profile"], cluster_id=cluster["cluster_id"]) as again:
        assert [r.value for r in again.run("kept")] == [0, 3]


def test_more_workers_than_engines_is_a_clear_error(cluster):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"has 2 engines; ask for at most 2 workers.*ipcluster engines -n 1"):
        ClusterPool(3, profile=cluster["profile"], cluster_id=cluster["cluster_id"])
    assert time.perf_counter() - start < 3  # the launcher said 2: no waiting for a third


def test_no_running_cluster_is_a_clear_error(cluster):
    with pytest.raises(ClusterError, match=r"no ipyparallel cluster is running.*"
                                           r"ipcluster start -n 4 --profile ipp_test --cluster-id nothing"):
        ClusterPool(profile=cluster["profile"], cluster_id="nothing")
    with pytest.raises(ClusterError, match="ipcluster start -n 4 --profile no_such_profile"):
        ClusterPool(profile="no_such_profile")


def test_without_ipyparallel_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipyparallel", None)  # import ipyparallel now raises ImportError
    with pytest.raises(ClusterError, match="pip install ipyparallel"):
        ClusterPool()


def test_magic_runs_cells_on_the_cluster(cluster, ip, capsys):
    """The same %%parallel syntax, by --backend and by %parallel_config, with labelled output."""
    where = f"--profile {cluster['profile']} --cluster-id {cluster['cluster_id']}"
    ip.user_ns["base"] = 5
    got = ip.run_cell_magic("parallel", f"--backend ipyparallel {where} --push base",
                            "import os\nprint('engine', worker_id)\nbase + worker_id, os.getpid()")
    assert [value for value, _ in got] == [5, 6] and os.getpid() not in {pid for _, pid in got}
    assert sorted(l for l in capsys.readouterr().out.splitlines() if "engine" in l) == ["[0] engine 0",
                                                                                        "[1] engine 1"]
    ip.run_line_magic("parallel_config", f"--backend ipyparallel {where}")
    assert ip.run_cell_magic("parallel", "1", "n_workers") == [1]
    with pytest.raises(ParallelError, match="ZeroDivisionError"):
        ip.run_cell_magic("parallel", "", "1 / 0")


def test_magic_says_how_to_start_a_missing_cluster(cluster, ip):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="ipcluster start"):
        ip.run_cell_magic("parallel", "--backend ipyparallel --cluster-id nosuchcluster", "1")
