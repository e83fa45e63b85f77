"""The benchmark runners and %native_bench's report: every method computes the seed values; CPU is measured."""

import multiprocessing
import time

import pytest

from ipy_parallel import _engine, bench

NS = [30_000, 20_000]


def expected():
    return [bench.seed_task(n) for n in NS]


def test_seed_task_matches_the_original_formula():
    k = 1
    for i in range(1000, 1, -1):
        k = (k * i) % 1000000007
    assert bench.seed_task(1000) == k
    assert [bench.seed_task(n) for n in (0, 1, 2, 3)] == [1, 1, 2, 6]


@pytest.mark.parametrize("runner", [
    bench.serial, bench.threads, bench.native,
    lambda ns: bench.multiprocessing_pool(ns, "spawn"),
    lambda ns: bench.process_pool_executor(ns, "spawn"),
], ids=["serial", "threads", "native", "mp-spawn", "ppe-spawn"])
def test_runners_agree(runner):
    assert runner(NS) == expected()


def test_pool_and_stdlib_runners_agree():
    with bench.warm_pool(2) as pool:
        assert bench.pool_seed(pool, NS) == expected()
    stdlib = bench.StdlibInterpreters(2)
    try:
        assert stdlib.seed(NS) == expected()
    finally:
        stdlib.close()


def test_native_kernel_limits():
    with pytest.raises(ValueError, match="between 0 and 10000000000"):
        _engine.seed_kernel([5, -1])
    assert _engine.seed_kernel([]) == []


def _spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_process_tree_cpu_counts_running_children():
    before = bench.process_tree_cpu()
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_spin, args=(1.0,))
    child.start()
    time.sleep(0.8)
    during = bench.process_tree_cpu() - before  # the child is still running: read from /proc
    child.join()
    assert during > 0.3, f"only {during:.2f} s of CPU seen while a child spun for 0.8 s"


def test_native_bench_report():
    report = bench.native_bench(2, 20_000, 3)
    names = [r.method for r in report.rows]
    assert names == ["serial", "threads", "multiprocessing fork", "multiprocessing spawn",
                     "sub-interpreters (ipy_parallel)", "C++ kernel, GIL released"]
    assert report.agree and all(r.values == [bench.seed_task(20_000)] * 2 for r in report.rows)
    assert all(len(r.times) == 3 for r in report.rows)
    assert report.speedup("serial") == 1.0
    assert report.efficiency("serial") == pytest.approx(0.5)
    table = report.table()
    assert table.startswith("native_bench: 2 tasks of n=20,000") and "median of 3 rounds, methods interleaved" in table
    assert "every method computed the same values" in table and "free threads: not run" in table
    assert repr(report) == table


def _report(times: dict[str, list[float]], serial_cpu: float = 1.0) -> bench.BenchReport:
    rows = [bench.MethodResult(name, "", t, [serial_cpu * x if name == "serial" else 2 * x for x in t], [1])
            for name, t in times.items()]
    return bench.BenchReport(2, 1000, len(rows[0].times), 2, rows)


def test_a_speedup_above_the_core_ceiling_is_flagged_not_stated():
    report = _report({"serial": [3.0, 2.9, 3.1], "sub-interpreters (ipy_parallel)": [1.0, 1.0, 1.02],
                      "C++ kernel, GIL released": [0.01, 0.01, 0.01]})
    assert report.above_ceiling("sub-interpreters (ipy_parallel)")  # 3x on 2 cores
    assert not report.above_ceiling("C++ kernel, GIL released")  # other code: no ceiling
    table = report.table()
    assert "3.00x!" in table and "above the ceiling of 2x" in table and "Rerun" in table


def test_noisy_rounds_and_a_busy_machine_are_flagged():
    report = _report({"serial": [1.0, 1.0, 1.0], "threads": [1.0, 1.6, 1.0]}, serial_cpu=0.6)
    assert report.noisy("threads") and not report.noisy("serial") and report.busy
    table = report.table()
    assert "~ noisy: the rounds of threads" in table and "serial got only 60% of one core" in table
    clean = _report({"serial": [1.0, 1.01, 1.0], "threads": [1.0, 1.02, 1.01]})
    assert clean.warnings == []


def test_native_bench_leaves_the_pools_of_this_process_alone(pool):
    pool.run("kept = worker_id * 10")
    bench.native_bench(2, 1000, 1)  # its multiprocessing fork row forks elsewhere
    assert [r.value for r in pool.run("kept")] == [0, 10]


def test_disagreement_is_an_error(monkeypatch):
    methods, skipped = bench.bench_methods(2)
    methods["C++ kernel, GIL released"] = (lambda ns: [0] * len(ns), "broken on purpose")
    monkeypatch.setattr(bench, "bench_methods", lambda tasks: (methods, skipped))
    with pytest.raises(bench.BenchmarkError, match="other values than serial: C\\+\\+ kernel"):
        bench.native_bench(2, 1000, 1)


def test_plot_draws_a_bar_per_method():
    import matplotlib

    matplotlib.use("Agg")
    report = bench.native_bench(2, 1000, 1)
    ax = report.plot()
    assert len(ax.patches) == len(report.rows)
