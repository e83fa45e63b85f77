"""ipy_parallel._engine directly: the start/wait/collect protocol, live output, CPU clocks, the floor."""

import marshal
import pickle
import time

import pytest

from ipy_parallel import _engine
from ipy_parallel.pool import _RUNTIME_CODE


@pytest.fixture
def engine():
    pool = _engine.Pool(2, _RUNTIME_CODE)
    yield pool
    pool.close()


def run(engine, source, payloads=()):
    engine.start(source, "<test>", list(payloads))
    while not engine.wait(0.1):
        pass
    return engine.collect()


def test_result_tuples(engine):
    (w0, v0, out0, err0, e0, wall0, cpu0, f0), (w1, v1, *_rest) = run(engine, "print('o')\nworker_id")
    assert (w0, w1) == (0, 1) and f0 == 1  # plain data comes back marshalled
    assert marshal.loads(v0) == 0 and marshal.loads(v1) == 1
    _, v, *_, fmt = run(engine, "import fractions\nfractions.Fraction(1, 3)")[0]
    assert fmt == 0 and pickle.loads(v) == __import__("fractions").Fraction(1, 3)
    assert (out0, err0, e0) == ("o\n", "", None)
    assert wall0 > 0 and cpu0 > 0


def test_error_tuple(engine):
    _, value, _, _, error, _, _, _ = run(engine, "1/0")[0]
    assert value is None
    type_name, message, traceback, pickled = error
    assert (type_name, message) == ("ZeroDivisionError", "division by zero")
    assert 'File "<test>", line 1' in traceback
    assert isinstance(pickle.loads(pickled), ZeroDivisionError)


def test_one_payload_per_worker(engine):
    payloads = [marshal.dumps((None, [pickle.dumps({"v": i})])) for i in (10, 20)]
    assert [marshal.loads(r[1]) for r in run(engine, "v", payloads)] == [10, 20]


def test_wrong_number_of_payloads(engine):
    with pytest.raises(ValueError, match="expected 0, 1 or 2 payloads, got 3"):
        engine.start("1", "<test>", [b"", b"", b""])
    assert not engine.busy


def test_protocol_misuse_is_reported(engine):
    with pytest.raises(RuntimeError, match="no run to collect"):
        engine.collect()
    engine.start("import time\ntime.sleep(0.3)", "<test>", [])
    assert engine.busy and not engine.wait(0.01)
    with pytest.raises(RuntimeError, match="still running a task"):
        engine.start("1", "<test>", [])
    with pytest.raises(RuntimeError, match="not finished"):
        engine.collect()
    assert engine.wait(10)
    engine.collect()
    assert not engine.busy and engine.runs == 1


def test_output_streams_while_running(engine):
    engine.set_streaming(True)
    engine.start("import time, sys\nprint('early', worker_id)\ntime.sleep(0.5)\nprint('late', file=sys.stderr)",
                 "<test>", [])
    seen = []
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        seen += engine.drain_output()
        time.sleep(0.01)
    assert engine.busy, "output must arrive while the run is still going"
    assert sorted(seen) == [(0, 1, "early 0\n"), (1, 1, "early 1\n")]
    assert engine.wait(10)
    assert sorted(engine.drain_output()) == [(0, 2, "late\n"), (1, 2, "late\n")]
    assert [r[2] for r in engine.collect()] == ["early 0\n", "early 1\n"]


def test_cpu_clocks_advance_while_busy(engine):
    before = engine.cpu_times()
    run(engine, "t = 0\nfor i in range(300_000):\n    t += i")
    after = engine.cpu_times()
    assert len(before) == len(after) == 2
    assert all(a > b for a, b in zip(after, before))


def test_close_ends_everything(engine):
    engine.close()
    assert engine.closed and engine.cpu_times() == []
    with pytest.raises(RuntimeError, match="closed"):
        engine.start("1", "<test>", [])
    engine.close()


def test_bad_runtime_fails_cleanly():
    with pytest.raises(RuntimeError, match="cannot start the worker runtime: bad marshal data"):
        _engine.Pool(2, b"not marshal data")
    with pytest.raises(RuntimeError, match="not a marshalled code object"):
        _engine.Pool(2, marshal.dumps("a string"))
    with pytest.raises(RuntimeError, match="defines no setup"):
        _engine.Pool(1, marshal.dumps(compile("x = 1", "<x>", "exec")))


def test_zero_workers_rejected():
    with pytest.raises(ValueError, match="at least one worker"):
        _engine.Pool(0, _RUNTIME_CODE)


def test_condvar_floor_measures_round_trips():
    for floor in (_engine.CondvarFloor(2), _engine.CondvarFloor(2, _engine.POOL_SPIN_MICROS)):
        for _ in range(2):
            times = floor.round_trips(50)
            assert len(times) == 50 and all(t > 0 for t in times)
    with pytest.raises(ValueError, match="at least one thread"):
        _engine.CondvarFloor(0)
