"""The ipyparallel backend (ClusterPool) beyond the contract, on a real local cluster: engines by position, errors, races, connection, the magic."""

import io
import os
import sys
import time

import pytest

from helpers import bound, ctrl_c_after, soak

from ipy_parallel import ClusterError, ClusterPool, ParallelError, ParallelInterrupted
from ipy_parallel.ipython import cell
from ipy_parallel.ipython.display import Monitor, Tracker


@pytest.fixture
def cpool(cluster):
    with ClusterPool(profile=cluster["profile"], cluster_id=cluster["cluster_id"]) as p:
        p.reset()
        yield p


def test_first_engines_by_position(cluster):
    with ClusterPool(1, profile=cluster["profile"], cluster_id=cluster["cluster_id"]) as one:
        assert one.size == 1
        assert [r.value for r in one.run("worker_id, n_workers")] == [(0, 1)]


def test_errors_are_grouped_with_the_cells_traceback(cpool):
    opts = cell.CellOptions(n=2)
    source = "x = 1\ny = 1 / (worker_id - worker_id)\n"
    with pytest.raises(ParallelError) as info:
        cell.run_cell(cpool, source, opts, {}, Monitor(Tracker(2), stdout=io.StringIO()))
    error = info.value
    assert len(error.groups) == 1 and error.groups[0][0] == [0, 1]
    text = error.render()
    assert text.startswith("[workers 0-1] Traceback (most recent call last):")
    assert "line 2, in <module>" in text and "ZeroDivisionError: division by zero" in text
    assert "ipyparallel" not in text and "_ipy_parallel" not in text and "runtime" not in text
    assert isinstance(error.results[0].error.exception, ZeroDivisionError)
    # one worker failing does not stop the other
    results = cpool.run("1 / worker_id")
    assert results[0].error.type_name == "ZeroDivisionError" and results[1].value == 1.0


def test_interrupts_racing_short_runs_land_only_in_the_cell(cpool):
    for i in range(soak(1000)):  # interrupts racing the start and end of short runs: never outside the cell
        run = cpool.submit("sum(range(2000))")
        cpool.interrupt()
        for r in run.results():
            assert r.ok or (r.error.type_name == "KeyboardInterrupt" and "ipy" not in r.error.traceback), (i, r.error)
    assert [r.value for r in cpool.run("import time\ntime.sleep(0.05)\nsum(range(10))")] == [45, 45]


def test_ctrl_c_during_run_cell_stops_the_engines(cpool):
    ctrl_c_after(0.5)
    start = time.perf_counter()
    with pytest.raises(ParallelInterrupted, match="%%parallel was interrupted: stopped workers 0-1") as info:
        cell.run_cell(
            cpool, "while True:\n    pass", cell.CellOptions(n=2), {}, Monitor(Tracker(2), stdout=io.StringIO())
        )
    assert time.perf_counter() - start < 3
    assert [r.error.type_name for r in info.value.results] == ["KeyboardInterrupt"] * 2
    assert [r.value for r in cpool.run("worker_id")] == [0, 1]


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
    with pytest.raises(
        ClusterError,
        match=r"no ipyparallel cluster is running.*"
        r"ipcluster start -n 4 --profile ipp_test --cluster-id nothing",
    ):
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
    got = ip.run_cell_magic(
        "parallel",
        f"--backend ipyparallel {where} --push base",
        "import os\nprint('engine', worker_id)\nbase + worker_id, os.getpid()",
    )
    assert [value for value, _ in got] == [5, 6] and os.getpid() not in {pid for _, pid in got}
    assert sorted(ln for ln in capsys.readouterr().out.splitlines() if "engine" in ln) == [
        "[0] engine 0",
        "[1] engine 1",
    ]
    ip.run_line_magic("parallel_config", f"--backend ipyparallel {where}")
    assert ip.run_cell_magic("parallel", "1", "n_workers") == [1]
    with pytest.raises(ParallelError, match="ZeroDivisionError"):
        ip.run_cell_magic("parallel", "", "1 / 0")


def test_magic_says_how_to_start_a_missing_cluster(cluster, ip):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="ipcluster start"):
        ip.run_cell_magic("parallel", "--backend ipyparallel --cluster-id nosuchcluster", "1")


def test_background_cells_and_targets_on_the_cluster(cluster, ip):
    where = f"--profile {cluster['profile']} --cluster-id {cluster['cluster_id']}"
    job = ip.run_cell_magic(
        "parallel",
        f"2 --backend ipyparallel {where} --bg --pull eid",
        "import time\ntime.sleep(0.5)\neid = worker_id\nworker_id * 3",
    )
    assert not job.done()
    assert ip.run_cell("40 + 2").result == 42  # the kernel is free meanwhile
    assert job.result(bound(30)) == [0, 3] and ip.user_ns["eid"] == [0, 1]
    assert ip.run_cell_magic("parallel", f"2 --backend ipyparallel {where} --targets 1", "worker_id") == [1]
    job = ip.run_cell_magic("parallel", f"2 --backend ipyparallel {where} --bg", "import time\ntime.sleep(60)")
    job.stop()
    assert job.state == "stopped"
    assert ip.run_cell_magic("parallel", f"2 --backend ipyparallel {where}", "worker_id") == [0, 1]
