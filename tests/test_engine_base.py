"""ipy_parallel.backends.engine: every backend's engine answers the whole Engine protocol, and EngineBase's guards."""

import inspect

import pytest

from ipy_parallel.backends.engine import Engine, EngineBase

PROTOCOL = [name for name in vars(Engine) if not name.startswith("_")] + list(Engine.__annotations__)


def test_every_engine_answers_the_whole_protocol(any_pool):
    engine = any_pool._engine
    missing = [name for name in PROTOCOL if not hasattr(engine, name)]
    assert missing == [], f"the {any_pool.backend} engine lacks {missing}"
    assert isinstance(engine.resizable, bool) and engine.abandoned == []
    assert engine.size == 2 and engine.runs == any_pool.runs and not engine.closed and not engine.busy
    any_pool.close()
    assert engine.closed


class _Idle(EngineBase):
    """An engine with no workers at all: only the state EngineBase keeps."""

    _kind = "TestPool"
    running = False

    @property
    def busy(self):
        return self.running

    def start(self):
        self._check_startable()
        self._started()
        self.running = True

    def collect(self):
        self._check_collectable(lambda: not self.running)
        return []

    def close(self, timeout):
        return [] if not self._mark_closed() else ["closed now"]


def test_the_guards_say_what_is_wrong_and_what_to_do():
    engine = _Idle(3)
    assert (engine.size, engine.runs, engine.closed, engine.abandoned, engine.resizable) == (3, 0, False, [], False)
    with pytest.raises(RuntimeError, match="no run to collect: call start"):
        engine.collect()
    engine.start()
    assert engine.runs == 1
    with pytest.raises(RuntimeError, match="still running a task: wait for it to finish first"):
        engine.start()
    with pytest.raises(RuntimeError, match="the run is not finished: wait"):
        engine.collect()
    engine.running = False
    assert engine.collect() == []
    with pytest.raises(NotImplementedError, match="a TestPool cannot be resized: close it and make one of 4 workers"):
        engine.resize(4)
    assert engine.close(1.0) == ["closed now"] and engine.close(1.0) == []
    for call in (engine.start, engine.collect):
        with pytest.raises(RuntimeError, match="this TestPool is closed: create a new TestPool to run more work"):
            call()
    assert engine.runs == 1


def test_the_protocol_declares_resize_and_abandoned():
    assert "resize" in vars(Engine) and "abandoned" in vars(Engine) and "resizable" in Engine.__annotations__
    assert list(inspect.signature(EngineBase.resize).parameters) == ["self", "n"]
