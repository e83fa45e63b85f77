"""ipy_parallel.results beyond the wire: how a run's end is named (Outcome), a Ctrl-C while results are rebuilt."""

import pickle

from ipy_parallel import ParallelInterrupted, ParallelTimeout
from ipy_parallel._wire import protocol
from ipy_parallel.results import Outcome, rebuild_all


def test_an_outcome_says_how_the_run_ended():
    assert Outcome.of(None) is Outcome.OK and Outcome.of(None, failed=True) is Outcome.FAILED
    assert Outcome.of(ValueError("x")) is Outcome.FAILED
    for stopped in (KeyboardInterrupt(), ParallelInterrupted("the run was interrupted"), ParallelTimeout("late")):
        assert Outcome.of(stopped, failed=True) is Outcome.STOPPED, stopped
    assert Outcome.STOPPED == "stopped" and f"{Outcome.FAILED}" == "failed"  # what the displays key on


class _Interrupted:
    def __reduce__(self):
        return (exec, ("raise KeyboardInterrupt",))


def test_a_ctrl_c_while_records_are_rebuilt_is_told_apart_from_a_worker_that_was_interrupted():
    # A worker's own KeyboardInterrupt is its error; one raised here, as a value is unpickled, is
    # the caller's Ctrl-C (the run then raises ParallelInterrupted): both records still rebuild.
    records = [
        protocol.result_record(0, protocol.interrupted_reply(), "", "", 0.0, 0.0),
        protocol.result_record(1, protocol.reply(pickle.dumps(7), None, protocol.PICKLE), "", "", 0.0, 0.0),
    ]
    results, interrupted = rebuild_all(records)
    assert not interrupted and results[0].error.type_name == "KeyboardInterrupt" and results[1].value == 7
    records.append(
        protocol.result_record(2, protocol.reply(pickle.dumps(_Interrupted()), None, protocol.PICKLE), "", "", 0, 0)
    )
    results, interrupted = rebuild_all(records)
    assert interrupted and [r.worker_id for r in results] == [0, 1, 2] and results[1].value == 7
    assert "interrupted (KeyboardInterrupt) while it was rebuilt" in results[2].error.message
